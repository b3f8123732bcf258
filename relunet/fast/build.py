"""Writing, importing and memoising the generated training kernels.

``kernel_module(N, n_in, n_out, dtype, bits)`` returns the imported module
that ``codegen.generate`` writes for those sizes and that vector width
(``bits``: 256 or 512; default ``simd.vector_bits()``, the CPU's), with its
numba function ``train_range``. The source is saved in a folder that sits with numba's cache:
under ``numba.config.CACHE_DIR`` (``NUMBA_CACHE_DIR``, or the fallback of a
read-only install) when that is set, else ``relunet/__pycache__/generated``.
A module's name carries the sizes, the width (``_b512``) and a digest of its
source and of the helper modules it calls, so an edit makes a new one; the
stale ones of the same sizes and width, and numba's cache files of them, are
pruned when a new one is written (if older than an hour: another version
sharing the cache may still use them).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import time

import numpy as np

from .codegen import generate
from .simd import vector_bits

__all__ = ["kernel_module"]

PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # relunet/
# the modules the generated code calls: numba's cache does not see changes in
# imported modules, so the file name is keyed on their source as well
DEPENDENCIES = ("fast/simd.py", "optim.py", "net.py", "_numba.py",
                "bfgs.py")     # relunet.bfgs compiles its loop against the module, cached beside it

_LOCK = threading.Lock()
_MODULES: dict = {}


PRUNE_AGE = 3600.0           # seconds: stale generated modules younger than this stay


def _gen_dir() -> str:
    """Folder for the generated sources, with numba's cache (module docstring)."""
    import numba
    user = getattr(os, "getuid", lambda: 0)()
    cache = numba.config.CACHE_DIR
    first = (os.path.join(cache, "relunet-generated") if cache
             else os.path.join(PKG, "__pycache__", "generated"))
    for d in (first, os.path.join(tempfile.gettempdir(), f"relunet-generated-{user}")):
        try:
            os.makedirs(d, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=d, delete=True)
            probe.close()
            return d
        except OSError:
            continue
    raise OSError("no writable folder for the generated kernels")


def _prune(directory: str, prefix: str, keep: str, now: float | None = None) -> list[str]:
    """Delete generated modules ``prefix*.py`` other than ``keep`` (older than
    PRUNE_AGE) and numba's cache files of them; returns the deleted paths."""
    import glob

    import numba
    now = time.time() if now is None else now
    gone = []
    for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.py")):
        stem = os.path.basename(path)[:-3]
        if stem == keep:
            continue
        try:
            if now - os.path.getmtime(path) < PRUNE_AGE:
                continue
        except OSError:
            continue
        caches = [os.path.join(directory, "__pycache__")]
        if numba.config.CACHE_DIR:
            caches += glob.glob(os.path.join(glob.escape(numba.config.CACHE_DIR), "*"))
        victims = [path] + [f for c in caches
                            for f in glob.glob(os.path.join(glob.escape(c),
                                                            glob.escape(stem) + ".*"))]
        for f in victims:
            try:
                os.unlink(f)
                gone.append(f)
            except OSError:
                pass
    return gone


def kernel_module(N: int, n_in: int, n_out: int, dtype, bits=None):
    """The imported kernel module for these sizes and vector width (generated
    on first use); ``bits`` None: ``simd.vector_bits()``."""
    dtype = np.dtype(dtype)
    bits = vector_bits(bits)
    key = (int(N), int(n_in), int(n_out), dtype.name, bits)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is not None:
            return mod
        src = generate(*key)
        h = hashlib.sha256(src.encode())
        for dep in DEPENDENCIES:
            with open(os.path.join(PKG, dep), "rb") as f:
                h.update(f.read())
        digest = h.hexdigest()[:12]
        name = f"relunet_fused_n{N}_i{n_in}_o{n_out}_{dtype.name}_b{bits}_{digest}"
        path = os.path.join(_gen_dir(), name + ".py")
        if not os.path.exists(path):
            # create once and never rewrite: a new mtime would invalidate
            # numba's cache. Hard-linking a complete temporary file is atomic
            # and fails if another process got there first.
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as f:
                f.write(src)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:                  # no hard links on this filesystem
                os.replace(tmp, path)
            if os.path.exists(tmp):
                os.unlink(tmp)
            _prune(os.path.dirname(path), name[:-len(digest)], name)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _MODULES[key] = mod
        return mod
