"""numba settings shared by every kernel module.

* ``cache=True`` needs a writable cache folder. On a read-only install numba
  fails at import with "no locator available"; we then point
  ``numba.config.CACHE_DIR`` at a private temporary folder.
* ``STRICT`` (fastmath off): every kernel adds in the order the source
  states, with no reassociation and no FMA contraction, so the same machine
  code results whichever CPU of one vector width compiled it, and a kernel
  loaded from numba's cache rounds exactly like a freshly compiled one.
  Reassociation (the earlier setting) let LLVM vectorise the sums over
  training points, and rounding then depended on how the compiler split them;
  the NEB bands changed in their last bits on another CPU. The price: the
  sums over points no longer vectorise, so the plain kernels run slower
  (``benchmarks/bench_hessian.py`` times them). The fused training kernels
  (``relunet/fast/``) vectorise by hand and were strict already.
  Results still differ in the last bits from the NumPy references (another
  order of summation): tests compare with tolerances there.
"""
from __future__ import annotations

import os
import tempfile

import numba

STRICT = False          #: fastmath flags of every kernel: none (see the docstring)


def _ensure_writable_cache() -> None:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    pkg = os.path.dirname(os.path.abspath(__file__))
    pycache = os.path.join(pkg, "__pycache__")
    try:
        os.makedirs(pycache, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=pycache, delete=True)
        probe.close()
    except OSError:
        fallback = os.path.join(tempfile.gettempdir(), f"relunet-numba-cache-{os.getuid()}")
        os.makedirs(fallback, exist_ok=True)
        numba.config.CACHE_DIR = fallback


_ensure_writable_cache()
