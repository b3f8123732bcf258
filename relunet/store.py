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
nothing corrupt):

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

4. Nothing read back is trusted. The manifest's config must hash to its
   fingerprint (a hand-edited config is refused, naming the fields the chunk
   files disagree with). Every listed chunk is checked whenever it is loaded:
   the SHA-256 of its file (recorded in the manifest), the zip CRCs, its
   embedded fingerprint, chunk number and item range, its row counts, and
   whatever the caller's ``validate`` adds (the engine checks the seeds). A
   damaged or foreign chunk (truncated, bit-flipped, copied from another
   chunk or another run) makes :meth:`RunStore.load` raise
   :class:`DamagedRunError` (one line) or, with ``on_damaged="skip"``, be
   left out and reported; the next writer moves it to ``quarantine/``,
   records why in the manifest's ``"quarantined"`` list, and it is computed
   again.

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
import io
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
           "RunSnapshot", "DamagedRunError", "ManifestError"]

FORMAT = "relunet-run/1"
MANIFEST = "manifest.json"
_META_PREFIX = "__"          # npz keys the store adds for itself (hidden from loads)
QUARANTINE = "quarantine"
MAX_CHUNKS = 100_000         # the manifest is rewritten per chunk: keep it small


class ManifestError(ValueError):
    """manifest.json is unreadable or inconsistent (one-line message with the fix)."""


class DamagedRunError(ValueError):
    """Listed chunks failed verification. ``damaged``: {chunk: reason}."""

    def __init__(self, path, damaged: dict, hint: str = ""):
        self.path, self.damaged = Path(path), dict(damaged)
        what = "; ".join(f"chunk {i} {r}" for i, r in sorted(self.damaged.items()))
        super().__init__(f"run {self.path} has {len(self.damaged)} damaged chunk(s): {what}"
                         + (f". {hint}" if hint else ""))


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

    ``arrays[name]`` has the items of all finished, intact chunks along axis 0;
    ``index`` (n_done,) holds their item numbers (chunks may finish out of
    order). ``damaged`` {chunk: reason} lists listed chunks that failed
    verification (left out; only with ``on_damaged="skip"``).
    """

    def __init__(self, manifest: dict, arrays: dict, index: np.ndarray,
                 damaged: dict | None = None):
        self.manifest = manifest
        self.arrays = arrays
        self.index = index
        self.damaged = dict(damaged or {})
        self.chunks_done = sorted(int(i) for i in manifest["chunks"]
                                  if int(i) not in self.damaged)
        self.n_chunks = manifest["n_chunks"]
        self.n_done = int(index.size)
        self.n_total = manifest["n_items"]

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total


def _manifest_problem(m) -> str | None:
    """Why ``m`` (parsed manifest.json) is not a usable run manifest, or None."""
    if not isinstance(m, dict):
        return f"holds a JSON {type(m).__name__}, not a run manifest (an object)"
    if m.get("format") != FORMAT:
        return f"has format {m.get('format')!r}, expected {FORMAT!r}"
    types = {"config": dict, "fingerprint": str, "n_items": int, "chunk_size": int,
             "n_chunks": int, "chunks": dict}
    for k, t in types.items():
        if not isinstance(m.get(k), t) or isinstance(m.get(k), bool):
            return f"has no valid {k!r} field"
    if m["n_items"] < 1 or m["chunk_size"] < 1 or m["n_chunks"] != -(-m["n_items"]
                                                                    // m["chunk_size"]):
        return "has an inconsistent layout (n_items, chunk_size, n_chunks)"
    for k, c in m["chunks"].items():
        if not (isinstance(k, str) and k.isdigit() and k == str(int(k))
                and isinstance(c, dict)):
            return f"has a malformed chunk entry {k!r}"
    return None


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
        """The parsed manifest, checked: a usable layout and a config that hashes
        to the stored fingerprint (else :class:`ManifestError`, one line)."""
        if self.path.exists() and not self.path.is_dir():
            raise ManifestError(f"{self.path} is a file, not a run directory")
        if not self.exists():
            raise FileNotFoundError(f"{self.path} is not a run directory (no {MANIFEST})")
        try:
            m = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ManifestError(f"{self.manifest_path} is not valid JSON ({e}); it was "
                                f"damaged: restore it from a backup, or train into a new "
                                f"run directory") from None
        problem = _manifest_problem(m)
        if problem:
            raise ManifestError(f"{self.manifest_path} {problem}; restore it from a backup, "
                                f"or train into a new run directory")
        if fingerprint(m["config"]) != m["fingerprint"]:
            raise ManifestError(f"{self.manifest_path}: its config does not match its "
                                f"fingerprint {m['fingerprint'][:16]}, so it was edited"
                                f"{self._edited_fields(m)}. Restore the original config "
                                f"(the chunks were computed with it), or train the new "
                                f"config into a new run directory")
        return m

    def _edited_fields(self, m) -> str:
        """': steps: 60 (chunks) vs 61 (manifest)' from a chunk's embedded config."""
        for c in m["chunks"].values():
            with contextlib.suppress(Exception):
                with np.load(self.path / str(c["file"]), allow_pickle=False) as z:
                    orig = json.loads(str(z["__config__"]))
                if fingerprint(orig) == m["fingerprint"]:
                    diff = config_diff(orig, m["config"])
                    return (" (" + "; ".join(diff).replace("(stored)", "(chunks)")
                            .replace("(new)", "(manifest)") + ")")
        return ""

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

    @staticmethod
    def chunk_range_of(m: dict, i: int) -> tuple[int, int]:
        cs = m["chunk_size"]
        return i * cs, min((i + 1) * cs, m["n_items"])

    def read_chunk(self, m: dict, i: int, validate=None) -> tuple[dict | None, str | None]:
        """Chunk ``i`` of manifest ``m``, verified: ``(arrays, None)`` or
        ``(None, reason)``. ``validate(i, start, stop, arrays) -> reason | None``
        adds the caller's own checks."""
        c = m["chunks"].get(str(i))
        if c is None:
            return None, "is not listed"
        start, stop = self.chunk_range_of(m, i)
        if not 0 <= i < m["n_chunks"] or (c.get("start"), c.get("stop")) != (start, stop):
            return None, (f"is listed with items [{c.get('start')}, {c.get('stop')}) "
                          f"where the layout says [{start}, {stop})")
        path = self.path / self.chunk_file(i)
        if c.get("file") != path.name:
            return None, f"is listed as file {c.get('file')!r}, expected {path.name!r}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, f"is missing (no {path.name})"
        except OSError as e:
            return None, f"cannot be read ({e.strerror or e})"
        if "sha256" in c and hashlib.sha256(data).hexdigest() != c["sha256"]:
            why = "is empty" if not data else "was modified or replaced since it was written"
            reason = f"{why} (SHA-256 differs from the manifest)"
        else:
            reason = None
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}     # reading checks the zip CRCs
        except Exception as e:  # noqa: BLE001 -- any unreadable file is damaged
            return None, reason or f"is unreadable ({type(e).__name__}: {e})"
        fp = str(arrays.get("__fingerprint__", ""))
        if fp != m["fingerprint"]:
            return None, f"belongs to another run (fingerprint {fp[:16] or 'none'})"
        j = int(arrays.get("__chunk__", -1))
        if j != i:
            return None, f"is a copy of chunk {j}"
        if "__start__" in arrays and (int(arrays["__start__"]), int(arrays["__stop__"])) \
                != (start, stop):
            return None, (f"holds items [{int(arrays['__start__'])}, "
                          f"{int(arrays['__stop__'])}), expected [{start}, {stop})")
        if reason:
            return None, reason
        data_arrays = {k: v for k, v in arrays.items() if not k.startswith(_META_PREFIX)}
        for k, v in data_arrays.items():
            if v.ndim == 0 or v.shape[0] != stop - start:
                return None, f"array {k!r} has shape {v.shape}, expected {stop - start} rows"
        if validate is not None:
            reason = validate(i, start, stop, data_arrays)
            if reason:
                return None, reason
        return data_arrays, None

    def verify(self, validate=None) -> dict:
        """{chunk: reason} for every listed chunk that fails verification."""
        m = self.manifest()
        return {i: r for i in sorted(int(k) for k in m["chunks"])
                for r in [self.read_chunk(m, i, validate)[1]] if r}

    def load(self, fields=None, on_damaged: str = "raise", validate=None) -> RunSnapshot:
        """Arrays of every finished chunk (safe while a writer is running), each
        chunk verified (module docstring, rule 4). A damaged chunk raises
        :class:`DamagedRunError` (``on_damaged="raise"``) or is left out and
        named in ``snapshot.damaged`` (``"skip"``)."""
        if on_damaged not in ("raise", "skip"):
            raise ValueError(f"on_damaged must be 'raise' or 'skip', got {on_damaged!r}")
        m = self.manifest()
        parts, index, damaged = [], [], {}
        for i in sorted(int(k) for k in m["chunks"]):
            z, reason = self.read_chunk(m, i, validate)
            if reason:
                damaged[i] = reason
                continue
            parts.append({k: v for k, v in z.items() if fields is None or k in fields})
            index.append(np.arange(*self.chunk_range_of(m, i)))
        if damaged and on_damaged == "raise":
            raise DamagedRunError(self.path, damaged)
        keys = parts[0] if parts else {}
        if any(set(p) != set(keys) for p in parts):
            raise DamagedRunError(self.path, {-1: "chunks hold different array names"})
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in keys}
        idx = np.concatenate(index) if index else np.zeros(0, dtype=np.int64)
        return RunSnapshot(m, arrays, idx, damaged)

    def open_writer(self, config: dict, n_items: int, chunk_size: int | None = None,
                    kind: str = "run", validate=None) -> "RunWriter":
        """Create the run, or resume it if it holds the same ``config``.

        ``chunk_size=None`` keeps the stored layout (256 for a new run); a
        different explicit ``chunk_size`` on an existing run is ignored with a
        warning (the layout is fixed at creation). Listed chunks that fail
        verification (``validate`` as in :meth:`read_chunk`) are moved to
        ``quarantine/`` and unlisted, with a warning, so they are computed
        again. Raises ValueError if the run holds another config or another
        ``n_items``, RuntimeError if another process is writing it.
        """
        return RunWriter(self, config, n_items, chunk_size, kind, validate)


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
                warnings.warn(f"run {self.path} was started with {m['versions']}, resuming "
                              f"with {versions()}: results may differ in the last bits",
                              stacklevel=3)
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
