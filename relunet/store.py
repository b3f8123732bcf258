"""Crash-safe result store: named arrays, and runs written chunk by chunk.

The paper trained 320,000 networks for 50,000 steps each (Gamst & Walker 2017,
Sec. 3): days of computing on one machine. Results must therefore survive a
kill at any moment, and finished work must never be recomputed.

Two kinds of things are stored under a directory:

* **Named arrays** (:class:`Store`): ``<root>/<name>.npz`` (and ``<name>.json``
  for small metadata), for the experiments' own results.
* **Chunked runs** (:class:`RunStore`): a directory holding ``manifest.json``
  and one ``chunk-00000.npz`` per chunk of items (networks)::

      manifest.json  {"format", "kind", "config", "fingerprint", "n_items",
                      "chunk_size", "n_chunks", "chunks": {"0": {"start",
                      "stop", "file", "finished", ...}}, "versions", "created",
                      "updated"}

Rules that make this crash-safe (measured: 37 random SIGKILLs of a writer left
nothing corrupt, see shared/notes/numba-dask-store.md):

1. Every file is written to a temporary name in the same directory, flushed,
   fsynced and ``os.replace``'d over its final name; then the directory is
   fsynced. A reader sees the old file or the new one, never half of one.
2. A chunk file is written *before* the manifest lists it, so every chunk the
   manifest lists is complete. Readers read the manifest, then the chunks it
   lists, and may do so while the run is being written.
3. One writer per run, the driver process, enforced with an advisory lock
   (``flock`` on ``.lock``; the kernel drops it when the writer dies, even
   on SIGKILL). A chunk file left unlisted by a kill between rules 1 and 2 is
   adopted on the next open if its fingerprint matches; temporary files are
   removed.

A run is identified by its config: ``fingerprint(config)`` is the SHA-256 of
the canonical JSON (sorted keys, no spaces, floats written by ``repr``).
Re-opening a run with the same config resumes it; another config is refused
with a ``ValueError`` naming every differing field. The chunk size is layout,
not config: it is fixed when the run is created.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
import warnings
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "atomic_save_npz", "atomic_write_json", "canonical_json",
           "fingerprint", "config_diff", "versions", "Store", "RunStore", "RunWriter",
           "RunSnapshot"]

FORMAT = "relunet-run/1"
MANIFEST = "manifest.json"
_META_PREFIX = "__"          # npz keys the store adds for itself (hidden from loads)


# =============================================================================
# Atomic files
# =============================================================================
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
    """Versions that can change results in the last bits (numba builds the kernels)."""
    out = {}
    for pkg in ("relunet", "numpy", "numba"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# =============================================================================
# Named arrays
# =============================================================================
_NAME = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


class Store:
    """Named arrays under one root directory, each written atomically.

    ``Store(root).save_array("fig3/losses", loss=l, x=x)`` writes
    ``root/fig3/losses.npz``; names are '/'-separated words of [A-Za-z0-9_.-].
    """

    def __init__(self, root):
        self.root = Path(root)

    def path(self, name: str, suffix: str = ".npz") -> Path:
        if not isinstance(name, str) or not _NAME.match(name) or ".." in name.split("/"):
            raise ValueError(f"name must be '/'-separated words of [A-Za-z0-9_.-] "
                             f"(no '..'), got {name!r}")
        return self.root / f"{name}{suffix}"

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def save_array(self, name: str, **arrays) -> Path:
        if not arrays:
            raise ValueError("save_array needs at least one array (name=array)")
        p = self.path(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_save_npz(p, arrays)

    def load_array(self, name: str) -> dict:
        p = self.path(name)
        if not p.is_file():
            raise FileNotFoundError(f"no stored arrays named {name!r} (looked for {p})")
        return _load_npz(p)

    def save_json(self, name: str, obj) -> Path:
        p = self.path(name, ".json")
        p.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_json(p, obj)

    def load_json(self, name: str):
        return json.loads(self.path(name, ".json").read_text())

    def run(self, name: str) -> "RunStore":
        """The chunked run stored in directory ``root/name``."""
        return RunStore(self.path(name, ""))


# =============================================================================
# Chunked runs
# =============================================================================
class RunSnapshot:
    """What a reader sees: the finished chunks' arrays, concatenated in chunk order.

    ``arrays[name]`` has the items of all finished chunks along axis 0;
    ``index`` (n_done,) holds their item numbers (chunks may finish out of order).
    """

    def __init__(self, manifest: dict, arrays: dict, index: np.ndarray):
        self.manifest = manifest
        self.arrays = arrays
        self.index = index
        self.chunks_done = sorted(int(i) for i in manifest["chunks"])
        self.n_chunks = manifest["n_chunks"]
        self.n_done = int(index.size)
        self.n_total = manifest["n_items"]

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total


class RunStore:
    """A run directory (see the module docstring). Reading needs no lock."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict:
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no {MANIFEST})")
        m = json.loads(self.manifest_path.read_text())
        if m.get("format") != FORMAT:
            raise ValueError(f"{self.manifest_path} has format {m.get('format')!r}, "
                             f"expected {FORMAT!r}")
        return m

    def check_config(self, config: dict) -> dict:
        """The manifest, if the run holds ``config``; else ValueError naming the
        differing fields."""
        m = self.manifest()
        if m["fingerprint"] != fingerprint(config):
            diff = config_diff(m["config"], config)
            raise ValueError(f"run directory {self.path} holds a different config: "
                             + "; ".join(diff or ["(same fields, different values)"])
                             + ". Use another directory or the stored config.")
        return m

    @staticmethod
    def chunk_file(i: int) -> str:
        return f"chunk-{i:05d}.npz"

    def load(self, fields=None) -> RunSnapshot:
        """Arrays of every finished chunk (safe while a writer is running)."""
        m = self.manifest()
        done = sorted(int(i) for i in m["chunks"])
        parts, index = [], []
        for i in done:
            c = m["chunks"][str(i)]
            z = _load_npz(self.path / c["file"])
            parts.append({k: v for k, v in z.items() if not k.startswith(_META_PREFIX)
                          and (fields is None or k in fields)})
            index.append(np.arange(c["start"], c["stop"]))
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in (parts[0] if parts else {})}
        idx = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
        return RunSnapshot(m, arrays, idx)

    def open_writer(self, config: dict, n_items: int, chunk_size: int | None = None,
                    kind: str = "run") -> "RunWriter":
        """Create the run, or resume it if it holds the same ``config``.

        ``chunk_size=None`` keeps the stored layout (256 for a new run); a
        different explicit ``chunk_size`` on an existing run is ignored with a
        warning (the layout is fixed at creation). Raises ValueError if the run
        holds another config or another ``n_items``, RuntimeError if another
        process is writing it.
        """
        return RunWriter(self, config, n_items, chunk_size, kind)


class RunWriter:
    """The single writer of a run: holds the lock, writes chunks, updates the manifest.

    Use as a context manager (releases the lock on exit).
    """

    def __init__(self, run: RunStore, config: dict, n_items: int, chunk_size, kind: str):
        if not isinstance(n_items, (int, np.integer)) or n_items < 1:
            raise ValueError(f"n_items must be an integer >= 1, got {n_items!r}")
        if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.run = run
        self.path = run.path
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise RuntimeError(f"another process is writing run {self.path}") from None
        try:
            self._open(config, int(n_items), chunk_size, kind)
        except BaseException:
            self.close()
            raise

    def _open(self, config, n_items, chunk_size, kind):
        for tmp in self.path.glob(".*.tmp"):    # left by a killed writer; we hold the lock
            tmp.unlink(missing_ok=True)
        if self.run.exists():
            m = self.run.check_config(config)
            if m["n_items"] != n_items:
                raise ValueError(f"run {self.path} has n_items={m['n_items']}, got {n_items}")
            if chunk_size is not None and chunk_size != m["chunk_size"]:
                warnings.warn(f"run {self.path} was created with chunk_size="
                              f"{m['chunk_size']}; keeping it (results do not depend on "
                              f"the chunk size)", stacklevel=3)
            if m["versions"] != versions():
                warnings.warn(f"run {self.path} was started with {m['versions']}, resuming "
                              f"with {versions()}: results may differ in the last bits",
                              stacklevel=3)
                m.setdefault("resumed_with", []).append(versions())
            self.manifest = m
            self._adopt_orphans()
        else:
            cs = 256 if chunk_size is None else int(chunk_size)
            self.manifest = {"format": FORMAT, "kind": kind, "config": config,
                             "fingerprint": fingerprint(config), "n_items": n_items,
                             "chunk_size": cs, "n_chunks": -(-n_items // cs), "chunks": {},
                             "versions": versions(), "created": _now(), "updated": _now()}
            self._write_manifest()

    # -- layout ---------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def chunk_size(self) -> int:
        return self.manifest["chunk_size"]

    @property
    def n_chunks(self) -> int:
        return self.manifest["n_chunks"]

    def chunk_range(self, i: int) -> tuple[int, int]:
        """Items [start, stop) of chunk ``i``."""
        if not 0 <= i < self.n_chunks:
            raise ValueError(f"chunk index must be in [0, {self.n_chunks}), got {i}")
        cs = self.chunk_size
        return i * cs, min((i + 1) * cs, self.manifest["n_items"])

    def done(self) -> list[int]:
        return sorted(int(i) for i in self.manifest["chunks"])

    def todo(self) -> list[int]:
        d = set(self.done())
        return [i for i in range(self.n_chunks) if i not in d]

    # -- writing --------------------------------------------------------------
    def write_chunk(self, i: int, arrays: dict, info: dict | None = None) -> None:
        """Store chunk ``i`` (every array has the chunk's items along axis 0)."""
        start, stop = self.chunk_range(i)
        for k, v in arrays.items():
            if k.startswith(_META_PREFIX):
                raise ValueError(f"array names starting with {_META_PREFIX!r} are reserved")
            if np.ndim(v) == 0 or np.shape(v)[0] != stop - start:
                raise ValueError(f"chunk {i} array {k!r} must have {stop - start} rows "
                                 f"(items {start}..{stop - 1}), got shape {np.shape(v)}")
        name = RunStore.chunk_file(i)
        atomic_save_npz(self.path / name, {**arrays, "__fingerprint__": self.fingerprint,
                                           "__chunk__": i})
        self._record(i, name, info or {})

    def _record(self, i, name, info):
        start, stop = self.chunk_range(i)
        self.manifest["chunks"][str(i)] = {**info, "start": start, "stop": stop,
                                           "file": name, "finished": _now()}
        self.manifest["updated"] = _now()
        self._write_manifest()

    def _write_manifest(self):
        atomic_write_json(self.run.manifest_path, self.manifest)

    def _adopt_orphans(self):
        """Chunk files written but not listed (writer killed in between)."""
        for i in self.todo():
            p = self.path / RunStore.chunk_file(i)
            if not p.is_file():
                continue
            try:
                z = _load_npz(p)
                ok = (str(z["__fingerprint__"]) == self.fingerprint
                      and int(z["__chunk__"]) == i)
            except Exception:  # noqa: BLE001 -- any unreadable file is just recomputed
                ok = False
            if ok:
                self._record(i, p.name, {"adopted": True})
            else:
                p.unlink()

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
