"""Failures as one line with the fix, a self-repairing numba cache, and interrupts within a second.

* :class:`EngineError`, :class:`NumbaCacheError`: what the engine raises when
  the cluster or a chunk fails (one-line messages); :func:`chunk_failure`
  maps a chunk's exception (a killed worker, a lost scheduler, an exception
  in the task) to one of them.
* numba's on-disk cache: a truncated or garbled cache file makes numba raise
  whatever its unpickler raises; :func:`self_repairing` deletes the files
  :func:`numba_cache_files` finds in the traceback and calls again.
* Interrupts: a numba call cannot be interrupted, so a command runs in a worker
  thread while the main thread waits for the signal
  (:func:`run_interruptibly`), then leaves at once (:func:`hard_exit`); the
  store's atomic writes make that safe.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading

__all__ = ["EngineError", "NumbaCacheError", "numba_cache_files", "self_repairing",
           "chunk_failure", "one_line", "hard_exit", "run_interruptibly"]


class EngineError(RuntimeError):
    """The cluster failed, or a chunk could not be trained (one-line message)."""


class NumbaCacheError(RuntimeError):
    """numba's on-disk cache is corrupt and could not be repaired (one line)."""


def one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# =============================================================================
# numba's cache
# =============================================================================
def numba_cache_files(exc: BaseException) -> list[str]:
    """Files of numba's on-disk cache that failed to load in ``exc``'s traceback
    (index ``.nbi`` and data ``.nbc``), or [] if the cache is not involved.

    A truncated or garbled cache file makes numba raise whatever its unpickler
    raises (EOFError, UnpicklingError, ValueError, ...) from
    ``numba/core/caching.py``; deleting the file makes the next call a cache
    miss that compiles and rewrites it.
    """
    files, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename.replace(os.sep, "/").endswith("numba/core/caching.py"):
                loc = tb.tb_frame.f_locals
                obj = loc.get("self")
                path = getattr(obj, "_index_path", None)
                if path and path not in files:
                    files.append(path)
                name = loc.get("name")
                cache_path = getattr(obj, "_cache_path", None)
                if code.co_name == "_load_data" and cache_path and isinstance(name, str):
                    data = os.path.join(cache_path, name)
                    if data not in files:
                        files.append(data)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return files


def _cache_message(files, exc) -> str:
    folder = os.path.dirname(files[0]) if files else "numba's cache folder"
    return (f"numba's cache is corrupt ({type(exc).__name__} reading "
            f"{', '.join(files) or 'a cache file'}) and deleting the file did not help: "
            f"clear the numba cache at {folder} (rm -r it) and run again")


def self_repairing(fn, attempts: int = 8):
    """``(fn(), deleted)``: while numba's cache is corrupt, delete the bad files
    and call again (one file per failure is found, several may be bad);
    NumbaCacheError (one line) if a deleted file fails again or attempts run out."""
    deleted = []
    for _ in range(attempts):
        try:
            return fn(), deleted
        except Exception as e:  # noqa: BLE001 -- filtered just below
            files = numba_cache_files(e)
            if not files:
                raise
            if set(files) <= set(deleted):
                raise NumbaCacheError(_cache_message(files, e)) from None
            for f in files:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f)
            deleted += [f for f in files if f not in deleted]
            last = e
    raise NumbaCacheError(_cache_message(deleted, last)) from None


# =============================================================================
# Failures of a chunk
# =============================================================================
def chunk_failure(e: BaseException, i: int, start: int, stop: int, where: str,
                   retries: int) -> BaseException:
    """The one-line exception that replaces the failure ``e`` of chunk ``i``."""
    from concurrent.futures import CancelledError
    try:
        from distributed.scheduler import KilledWorker
    except ImportError:                                  # pragma: no cover
        KilledWorker = ()
    nets = f"chunk {i} (networks {start}..{stop - 1})"
    if isinstance(e, NumbaCacheError):
        return e
    if KilledWorker and isinstance(e, KilledWorker):
        return EngineError(f"{nets} killed its worker {retries + 1} or more times (out of "
                           f"memory? a crash?): lower --chunk-size, check the workers' logs")
    if isinstance(e, (CancelledError, OSError, TimeoutError)) or \
            type(e).__name__ in ("CommClosedError", "FutureCancelledError"):
        return EngineError(f"lost the dask scheduler at {where} while {nets} ran "
                           f"({type(e).__name__}): restart the scheduler")
    return EngineError(f"{nets} failed: {type(e).__name__}: {one_line(e)}")


# =============================================================================
# Interrupts: a second at most, whatever is running
# =============================================================================
def hard_exit(code: int) -> None:
    """Flush, stop local worker processes, and leave at once (``os._exit``).

    Safe because every file of the store is written atomically and the driver
    is its only writer: what is finished is on disk, a chunk being written is
    either complete or absent (orphans and temporary files are dealt with on
    the next open). A numba call cannot be interrupted, so waiting for one
    could take minutes.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        import psutil
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(Exception):
                child.kill()
    os._exit(code)


def run_interruptibly(fn, on_interrupt):
    """``fn()`` in a worker thread while the main thread waits, so that a signal
    handler raising KeyboardInterrupt (SIGINT, or SIGTERM where installed) is
    seen at once even while ``fn`` sits in a numba kernel. On an interrupt,
    ``on_interrupt()`` (print, record) runs and its return value is the exit
    code of :func:`hard_exit`. Returns ``fn()``'s value or raises its exception.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 -- re-raised in the main thread
            box["error"] = e

    t = threading.Thread(target=target, name="relunet-work", daemon=True)
    try:
        t.start()
        while t.is_alive():
            t.join(0.05)
    except KeyboardInterrupt:
        hard_exit(on_interrupt())
    if "error" in box:
        raise box["error"]
    return box.get("value")
