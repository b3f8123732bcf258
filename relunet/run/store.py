"""Crash-safe result store: named arrays, and runs written chunk by chunk (reading).

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

Rules that make this crash-safe (tests/test_cli.py kills a writer mid-run with
SIGKILL and checks that the rerun gives the uninterrupted result):

1. Every file is written atomically (:func:`relunet.run.files.atomic_write`):
   a reader sees the old file or the new one, never half of one.
2. A chunk file is written *before* the manifest lists it, so every chunk the
   manifest lists is complete. Readers read the manifest, then the chunks it
   lists, and may do so while the run is being written.
3. One writer per run, the driver process, enforced with an advisory lock
   (``flock`` on ``.lock``; the kernel drops it when the writer dies, even
   on SIGKILL; :class:`relunet.run.writer.RunWriter`). A chunk file left
   unlisted by a kill between rules 1 and 2 is adopted on the next open if
   its fingerprint matches; temporary files are removed.

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

A run is identified by its config (:func:`relunet.run.files.fingerprint`).
Re-opening a run with the same config resumes it; another config is refused
with a ``ValueError`` naming every differing field. The chunk size is layout,
not config: it is fixed when the run is created.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .files import _load_npz, atomic_save_npz, atomic_write_json, config_diff, fingerprint

__all__ = ["Store", "RunStore", "RunSnapshot", "DamagedRunError", "ManifestError",
           "FORMAT", "MANIFEST", "MAX_CHUNKS"]

if TYPE_CHECKING:
    from .writer import RunWriter

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
        from .writer import RunWriter
        return RunWriter(self, config, n_items, chunk_size, kind, validate)
