"""numba settings shared by every kernel module.

* ``cache=True`` needs a writable cache folder. On a read-only install numba
  fails at import with "no locator available"; we then point
  ``numba.config.CACHE_DIR`` at a private temporary folder (see
  shared/notes/numba-dask-store.md).
* ``FASTMATH``: reassociation and contraction only. They let LLVM vectorise
  the sums over training points (the heart of every weight gradient) and use
  FMA; we keep IEEE semantics for NaN/Inf ('nnan'/'ninf' are NOT set) so that a
  diverging network is still detected. Results are deterministic for a given
  build and independent of the thread count, but differ in the last bits from
  the strict-order NumPy references: tests compare with tolerances there.
"""
from __future__ import annotations

import os
import tempfile

import numba

FASTMATH = {"reassoc", "contract"}


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
