"""Files that survive a kill, and the identity of a config.

Every file of a store is written by :func:`atomic_write`: to a temporary name
in the same directory, flushed, fsynced, ``os.replace``'d over its final name,
then the directory is fsynced. A reader sees the old file or the new one,
never half of one (:mod:`relunet.run.store` states the rules built on this).

A config is identified by :func:`fingerprint`: the SHA-256 of its canonical
JSON (sorted keys, no spaces, floats written by ``repr``, so exact). Every
directory of a store is named by the one rule :func:`keyed_path`:
``<root>/<group>/<label>-<first 12 hex digits of the fingerprint>``, so a
changed setting never reuses stale results and an unchanged one is found again
(open_lth's ``hashname`` idea).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["try_lock", "atomic_write", "atomic_save_npz", "atomic_write_json", "canonical_json",
           "fingerprint", "config_diff", "versions", "keyed_path", "KEY_DIGITS"]

KEY_DIGITS = 12          # hex digits of the fingerprint in a directory name


# =============================================================================
# Atomic files
# =============================================================================
def try_lock(path, block: bool = False):
    """An exclusive ``flock`` on the file ``path`` (created, with its folder, if
    missing): the open file, which holds the lock until it is closed or the process
    ends (so a process that dies frees it), or None if another open file holds it
    and ``block`` is false. Without ``fcntl`` (not POSIX) every lock is granted."""
    try:
        import fcntl
    except ImportError:
        return open(os.devnull)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
    except OSError:
        f.close()
        return None
    return f


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:        # platforms without directory fds: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, write) -> Path:
    """Write ``path`` atomically: ``write(fileobj)`` fills a temporary file in the
    same directory, which is flushed, fsynced and renamed over ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_save_npz(path, arrays: dict) -> Path:
    """``np.savez`` (uncompressed: trained weights do not compress) done atomically."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise ValueError(f"array {k!r} has dtype object; only plain arrays are stored")
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write_json(path, obj) -> Path:
    text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False) + "\n"
    return atomic_write(path, lambda f: f.write(text.encode()))


def _load_npz(path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# =============================================================================
# Config identity
# =============================================================================
def canonical_json(config: dict) -> str:
    """Sorted keys, no whitespace; floats by ``repr`` (exact round trip)."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)


def fingerprint(config: dict) -> str:
    """SHA-256 (hex) of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict, new: dict) -> list[str]:
    """``["field: old -> new", ...]`` for every field that differs (nested with dots)."""
    a, b = _flatten(json.loads(canonical_json(old))), _flatten(json.loads(canonical_json(new)))
    missing = "<absent>"
    return [f"{k}: {a.get(k, missing)!r} (stored) vs {b.get(k, missing)!r} (new)"
            for k in sorted(set(a) | set(b)) if a.get(k, missing) != b.get(k, missing)]


def versions() -> dict:
    """Versions that can change results in the last bits (numba builds the kernels),
    and ``vector_bits``: the width of the fused training kernels in this process
    (256 or 512, ``relunet.fast.vector_bits``; the two widths give different last
    bits, the same width the same bits). The width recorded when a run is created
    is the run's: the engine trains every chunk at it, whatever the worker's CPU."""
    from ..fast import vector_bits
    out = {}
    for pkg in ("relunet", "numpy", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    out["vector_bits"] = vector_bits()
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def keyed_path(root, group: str, label: str, config: dict) -> Path:
    """The directory of ``config`` in a store: ``root/group/label-<fingerprint[:12]>``.

    The one naming rule of the store: training runs are
    ``<root>/runs/<TrainConfig.label>-<key>``, an experiment's results
    ``<root>/<experiment>/<scale>-<key>``."""
    return Path(root) / group / f"{label}-{fingerprint(config)[:KEY_DIGITS]}"
