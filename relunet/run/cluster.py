"""The dask side of a run: a client for the chosen engine, and quiet logs.

Engines (one of, :class:`relunet.run.config.EngineOptions`):

* default: an embedded in-process cluster (one worker thread, no server
  reachable from outside); the numba kernel inside uses all cores itself;
* ``local_processes=N``: N single-threaded worker processes, started with
  *spawn* (GNU OpenMP is not fork-safe) and ``NUMBA_NUM_THREADS=1``;
* ``scheduler=ADDRESS`` or ``scheduler_file=FILE``: an existing dask cluster.

Failing to reach or start a cluster raises :class:`relunet.run.faults.EngineError`
(one line).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

from .config import EngineOptions
from .faults import EngineError, one_line

__all__ = ["connect", "quiet_logs", "silence_logs", "dask_setup"]

_UNSET = object()


def _dask_loggers():
    prefixes = ("distributed", "tornado", "asyncio")
    names = set(prefixes) | {n for n in list(logging.root.manager.loggerDict)
                             if n.startswith(tuple(p + "." for p in prefixes))}
    return [logging.getLogger(n) for n in sorted(names)]


def silence_logs() -> None:
    """Silence dask's loggers for the rest of the process. An interrupted run is
    exiting: a future its torn-down cluster left behind would otherwise print
    "Future exception was never retrieved" and a traceback at shutdown (asyncio
    logs it when the future is collected, after quiet_logs has restored the
    levels), under the one-line message that says how to resume."""
    for lg in _dask_loggers():
        lg.setLevel(logging.CRITICAL + 1)


class _OrphanedFutures(logging.Filter):
    """Drops asyncio's "Future exception was never retrieved" records. In a relunet
    process only dask's event loop makes futures, and when a Ctrl-C tears its cluster
    down, futures it abandoned (a TimeoutError of a comm) are collected and logged from
    the loop's thread, sometimes before the main thread has printed the one-line
    "interrupted ... resume with" message (seen in the Ctrl-C test about 1 run in 10
    under CPU load). Nothing the user can act on; every other asyncio record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Future exception was never retrieved")


def mute_orphaned_futures() -> None:
    """Install :class:`_OrphanedFutures` on the asyncio logger, once per process."""
    lg = logging.getLogger("asyncio")
    if not any(isinstance(f, _OrphanedFutures) for f in lg.filters):
        lg.addFilter(_OrphanedFutures())


@contextlib.contextmanager
def quiet_logs():
    """Silence dask's loggers (its children have levels of their own): the
    failures they would print as tracebacks become our one-line errors."""
    loggers = _dask_loggers()
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lev in zip(loggers, levels):
            lg.setLevel(lev)


def dask_setup(worker=None):
    """Preload of local worker processes (``distributed.worker.preload``): they
    share the terminal's process group, so a Ctrl-C reaches them too; the driver
    handles it and stops them, so they ignore SIGINT (no tracebacks)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def connect(scheduler=None, scheduler_file=None, local_processes=None,
            connect_timeout: float = 10.0):
    """A dask ``Client`` for the chosen engine (module docstring); closed on exit."""
    mute_orphaned_futures()
    import dask
    from distributed import Client, LocalCluster
    EngineOptions(scheduler=scheduler, scheduler_file=scheduler_file,
                  local_processes=local_processes, connect_timeout=connect_timeout)
    local = dict(dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                 threads_per_worker=1, silence_logs=logging.CRITICAL)
    cluster = client = None
    saved_env = os.environ.get("NUMBA_NUM_THREADS", _UNSET)
    try:
        if scheduler is not None or scheduler_file is not None:
            where = scheduler if scheduler is not None else f"scheduler file {scheduler_file}"
            if scheduler_file is not None:
                _check_scheduler_file(scheduler_file)
            try:
                with quiet_logs():
                    client = Client(address=scheduler, scheduler_file=scheduler_file,
                                    timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError) as e:
                raise EngineError(f"cannot reach the dask scheduler at {where} "
                                  f"(waited {connect_timeout:g} s): {one_line(e)}") from None
        else:
            if local_processes is not None:
                # numba reads NUMBA_NUM_THREADS at import, which in a spawned worker
                # happens before the Nanny's `env` is applied: it must be in the
                # environment at spawn time (dask then sets it in ours; restored below)
                try:
                    with dask.config.set({
                            "distributed.worker.multiprocessing-method": "spawn",
                            "distributed.worker.preload": ["relunet.run.cluster"],
                            "distributed.nanny.pre-spawn-environ.NUMBA_NUM_THREADS": "1"
                            }), quiet_logs():
                        cluster = LocalCluster(n_workers=local_processes, processes=True,
                                               host="127.0.0.1", **local)
                except (RuntimeError, OSError, TimeoutError) as e:
                    raise EngineError(f"could not start {local_processes} local worker "
                                      f"process(es): {one_line(e)} (spawned workers "
                                      f"re-import the main script: run from a file, "
                                      f"under `if __name__ == '__main__':`)") from None
            else:
                cluster = LocalCluster(processes=False, n_workers=1, **local)
            client = Client(cluster)
        yield client
        timeout = 5
    except BaseException:
        timeout = 1         # interrupted: do not wait long for abandoned tasks
        raise
    finally:
        with quiet_logs():
            for obj in (client, cluster):
                if obj is not None:
                    with contextlib.suppress(BaseException):
                        obj.close(timeout=timeout)
        if saved_env is _UNSET:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved_env


def _check_scheduler_file(path) -> None:
    p = Path(path)
    if not p.is_file():
        raise EngineError(f"scheduler file {p} does not exist")
    try:
        info = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise EngineError(f"scheduler file {p} is not a dask scheduler file (not JSON: "
                          f"{one_line(e)}); point --scheduler-file at the file the "
                          f"scheduler wrote (dask scheduler --scheduler-file FILE)") from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str):
        raise EngineError(f"scheduler file {p} has no scheduler 'address'; point "
                          f"--scheduler-file at the file the scheduler wrote")
