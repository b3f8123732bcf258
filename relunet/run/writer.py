"""The single writer of a run: the lock, chunk files, the manifest, quarantine.

The rules it keeps are those of :mod:`relunet.run.store` (module docstring):
a chunk file is written (atomically) before the manifest lists it; one writer
per run, by an advisory ``flock`` the kernel drops when the writer dies; on
open, temporary files of a killed writer are removed, chunk files written but
not listed are adopted if they verify, and listed chunks that fail
verification are moved to ``quarantine/`` and computed again.
"""
from __future__ import annotations

import fcntl
import os
import warnings
from datetime import datetime, timezone

import numpy as np

from .files import (
    _now,
    _sha256_file,
    atomic_save_npz,
    atomic_write_json,
    canonical_json,
    fingerprint,
    versions,
)
from .store import _META_PREFIX, FORMAT, MAX_CHUNKS, QUARANTINE, ManifestError, RunStore

__all__ = ["RunWriter"]


class RunWriter:
    """The single writer of a run: holds the lock, writes chunks, updates the manifest.

    Use as a context manager (releases the lock on exit).
    """

    def __init__(self, run: RunStore, config: dict, n_items: int, chunk_size, kind: str,
                 validate=None):
        if not isinstance(n_items, (int, np.integer)) or n_items < 1:
            raise ValueError(f"n_items must be an integer >= 1, got {n_items!r}")
        if chunk_size is not None and (not isinstance(chunk_size, (int, np.integer))
                                       or chunk_size < 1):
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.run = run
        self.path = run.path
        self.validate = validate
        self.quarantined: dict = {}         # {chunk: reason} moved aside by this open
        if self.path.exists() and not self.path.is_dir():
            raise ManifestError(f"{self.path} is a file, not a run directory")
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
                # the vector width is the run's own (the engine trains every chunk at the
                # width in the manifest), so a process of another default width changes
                # no bit; other versions may
                def pkgs(v):
                    return {k: x for k, x in v.items() if k != "vector_bits"}
                if pkgs(m["versions"]) != pkgs(versions()):
                    warnings.warn(f"run {self.path} was started with {m['versions']}, "
                                  f"resuming with {versions()}: results may differ in the "
                                  f"last bits", stacklevel=3)
                m.setdefault("resumed_with", []).append(versions())
            self.manifest = m
            self._quarantine_damaged()
            self._adopt_orphans()
        else:
            cs = 256 if chunk_size is None else int(chunk_size)
            n_chunks = -(-n_items // cs)
            if n_chunks > MAX_CHUNKS:
                raise ValueError(f"{n_items} items in chunks of {cs} make {n_chunks} chunks, "
                                 f"more than {MAX_CHUNKS}: use chunks of at least "
                                 f"{-(-n_items // MAX_CHUNKS)}")
            self.manifest = {"format": FORMAT, "kind": kind, "config": config,
                             "fingerprint": fingerprint(config), "n_items": n_items,
                             "chunk_size": cs, "n_chunks": n_chunks, "chunks": {},
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
        return RunStore.chunk_range_of(self.manifest, i)

    def done(self) -> list[int]:
        return sorted(int(i) for i in self.manifest["chunks"])

    def todo(self) -> list[int]:
        d = set(self.done())
        return [i for i in range(self.n_chunks) if i not in d]

    # -- writing --------------------------------------------------------------
    def write_chunk(self, i: int, arrays: dict, info: dict | None = None) -> None:
        """Store chunk ``i`` (every array has the chunk's items along axis 0).

        ``validate`` (given to ``open_writer``) is applied first: a chunk that
        fails it is refused with a ValueError and nothing is written."""
        start, stop = self.chunk_range(i)
        for k, v in arrays.items():
            if k.startswith(_META_PREFIX):
                raise ValueError(f"array names starting with {_META_PREFIX!r} are reserved")
            if np.ndim(v) == 0 or np.shape(v)[0] != stop - start:
                raise ValueError(f"chunk {i} array {k!r} must have {stop - start} rows "
                                 f"(items {start}..{stop - 1}), got shape {np.shape(v)}")
        if self.validate is not None:
            reason = self.validate(i, start, stop, {k: np.asarray(v) for k, v in arrays.items()})
            if reason:
                raise ValueError(f"refusing to store chunk {i} of run {self.path}: it {reason}")
        name = RunStore.chunk_file(i)
        atomic_save_npz(self.path / name, {
            **arrays, "__fingerprint__": self.fingerprint, "__chunk__": i,
            "__start__": start, "__stop__": stop,
            "__config__": canonical_json(self.manifest["config"])})
        self._record(i, name, info or {})

    def _record(self, i, name, info):
        start, stop = self.chunk_range(i)
        self.manifest["chunks"][str(i)] = {**info, "start": start, "stop": stop,
                                           "file": name, "finished": _now(),
                                           "sha256": _sha256_file(self.path / name)}
        self.manifest["updated"] = _now()
        self._write_manifest()

    def _write_manifest(self):
        atomic_write_json(self.run.manifest_path, self.manifest)

    def _quarantine_damaged(self):
        """Unlist listed chunks that fail verification; move their files aside."""
        damaged = {}
        for i in self.done():
            reason = self.run.read_chunk(self.manifest, i, self.validate)[1]
            if reason:
                damaged[i] = reason
        if not damaged:
            return
        qdir = self.path / QUARANTINE
        qdir.mkdir(exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        log = self.manifest.setdefault("quarantined", [])
        for i, reason in damaged.items():
            src = self.path / RunStore.chunk_file(i)
            entry = {"chunk": i, "reason": reason, "when": _now(), "file": None}
            if src.is_file():
                dst = qdir / f"{src.name}.{stamp}"
                os.replace(src, dst)
                entry["file"] = f"{QUARANTINE}/{dst.name}"
            log.append(entry)
            del self.manifest["chunks"][str(i)]
        self.manifest["updated"] = _now()
        self._write_manifest()
        self.quarantined = damaged
        what = "; ".join(f"chunk {i} {r}" for i, r in damaged.items())
        warnings.warn(f"run {self.path}: {len(damaged)} damaged chunk(s) moved to "
                      f"{qdir} and computed again: {what}", stacklevel=4)

    def _adopt_orphans(self):
        """Chunk files written but not listed (writer killed in between)."""
        for i in self.todo():
            p = self.path / RunStore.chunk_file(i)
            if not p.is_file():
                continue
            start, stop = self.chunk_range(i)
            probe = {**self.manifest, "chunks": {str(i): {"start": start, "stop": stop,
                                                          "file": p.name}}}
            if self.run.read_chunk(probe, i, self.validate)[1] is None:
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
