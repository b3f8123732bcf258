"""numba's on-disk cache must not change a single bit.

A kernel compiled in this process and the same kernel loaded from numba's cache
in the next one must give identical results. This failed once: the fused
Adadelta update was compiled with fast-math (reassociation, contraction), and
the freshly compiled and the cached machine code rounded differently in the last
bit (differences ~1e-15 after 200 steps, ~1e-13 after 2,000). The test runs the
same computation in two fresh interpreters sharing one empty cache folder.
"""
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import sys
import numpy as np
import relunet
from relunet import kernels
from relunet.net import Arch
from relunet.data import wf_training_set

arch = Arch(2, 3)
x, t = wf_training_set()
W0 = relunet.init_stack(arch, seeds=range(6))
out = {}
for opt in ("adadelta", "momentum"):
    for kernel in ("fused", "generic"):
        r = relunet.train_stack(W0, arch, x, t, relunet.make_optimizer(opt), steps=200,
                                threads=1, kernel=kernel)
        out[f"{opt}_{kernel}"] = r.W
loss, grad = kernels.loss_and_grad(W0, arch, x, t)
out["loss"], out["grad"] = loss, grad
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, cache, name):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    path = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, check=True,
                   timeout=600)
    return dict(np.load(path))


def test_compiled_and_cached_kernels_agree_bit_for_bit(tmp_path):
    cache = tmp_path / "numba-cache"
    cold = _run(tmp_path, cache, "cold")            # compiles, writes the cache
    assert any(cache.rglob("*.nbc")), "the first run should have filled the cache"
    warm = _run(tmp_path, cache, "warm")            # loads everything from the cache
    assert cold.keys() == warm.keys()
    for k in cold:
        assert np.array_equal(cold[k], warm[k]), f"{k}: cached code differs from fresh"
