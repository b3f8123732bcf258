"""numba's on-disk cache must not change a single bit.

A kernel compiled in this process and the same kernel loaded from numba's cache
in the next one must give identical results. This failed once: the fused
Adadelta update was compiled with fast-math (reassociation, contraction), and
the freshly compiled and the cached machine code rounded differently in the last
bit (differences ~1e-15 after 200 steps, ~1e-13 after 2,000). The test runs the
same computation in two fresh interpreters sharing one empty cache folder, with
the fused kernel at every vector width this CPU supports (256 bits, and 512
where it has AVX-512).

The compiled BFGS loop of the quench's descent (compiled against each kernel module,
:func:`relunet.bfgs._rows_kernel`) is cached too and is held to the same rule.

A second test compiles the 512-bit kernels for an AVX2-only CPU (haswell: LLVM
splits every 512-bit vector into two 256-bit halves) and checks that they give
the bits of the native AVX-512 code: the bits depend on the width, not on the
instructions that carry it out.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from relunet import fast

WIDTHS = fast.BITS if fast.native_bits() == 512 else (256,)

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
widths = [int(b) for b in sys.argv[2].split(",")]
for opt in ("adadelta", "momentum"):
    for bits in widths:
        for dtype in sys.argv[4].split(","):
            r = relunet.train_stack(W0, arch, x, t, relunet.make_optimizer(opt), steps=200,
                                    threads=1, kernel="fused", dtype=dtype, vector_bits=bits)
            out[f"{opt}_fused_{bits}_{dtype}"] = r.W
    if sys.argv[3] == "all":
        r = relunet.train_stack(W0, arch, x, t, relunet.make_optimizer(opt), steps=200,
                                threads=1, kernel="generic")
        out[f"{opt}_generic"] = r.W
if sys.argv[3] == "all":
    loss, grad = kernels.loss_and_grad(W0, arch, x, t)
    out["loss"], out["grad"] = loss, grad
    from relunet.quench import descend      # the compiled BFGS loop (relunet.bfgs._rows_kernel)
    out["bfgs"] = descend(W0, arch, x, t, max_iter=300).W
np.savez(sys.argv[1], **out)
"""


def _run(tmp_path, cache, name, widths=WIDTHS, what="all", dtypes="float64,float32",
         **env_extra):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), **env_extra)
    path = tmp_path / f"{name}.npz"
    subprocess.run([sys.executable, "-c", SCRIPT, str(path), ",".join(map(str, widths)), what,
                    dtypes], env=env, check=True, timeout=600)
    return dict(np.load(path))


def test_compiled_and_cached_kernels_agree_bit_for_bit(tmp_path):
    cache = tmp_path / "numba-cache"
    cold = _run(tmp_path, cache, "cold")            # compiles, writes the cache
    assert any(cache.rglob("*.nbc")), "the first run should have filled the cache"
    # the BFGS loop is cached beside its kernel module, not compiled again in every process
    assert any(cache.rglob("*.bfgs_rows-*.nbi")), "the BFGS loop should be cached"
    warm = _run(tmp_path, cache, "warm")            # loads everything from the cache
    assert cold.keys() == warm.keys()
    for k in cold:
        assert np.array_equal(cold[k], warm[k]), f"{k}: cached code differs from fresh"
    if len(WIDTHS) == 2:          # the two widths are different code (see test_train)
        assert not np.array_equal(cold["adadelta_fused_256_float64"],
                                  cold["adadelta_fused_512_float64"])


@pytest.mark.skipif(len(WIDTHS) < 2, reason="this CPU has no AVX-512")
def test_512_bit_kernels_compiled_for_avx2_give_the_avx512_bits(tmp_path):
    args = dict(widths=(512,), what="fused", dtypes="float64")
    native = _run(tmp_path, tmp_path / "cache-native", "native", **args)
    split = _run(tmp_path, tmp_path / "cache-haswell", "haswell", **args,
                 NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="")
    assert native.keys() == split.keys() and len(native) == 2
    for k in native:
        assert np.array_equal(native[k], split[k]), f"{k}: AVX2 code differs from AVX-512"
