"""Run independent tasks in a few worker processes: the quench's Newton stage on 2+ cores.

The Newton stage of :func:`relunet.quench.quench` is a Python loop over
networks (an eigen-decomposition, a few small NumPy passes and a small
quadratic program per network and iteration): it holds the GIL, so threads do
not help, and the networks are independent, so processes do. :func:`run_tasks`
calls a module-level function on each task in ``workers`` processes, handing
the next task to whichever process is free, and returns the results in task
order. A task's result does not depend on which process ran it or on what ran
beside it: every worker is the same Python with the same libraries, one
thread each (``NUMBA_NUM_THREADS=1`` and single-threaded BLAS, as the
in-process loop runs).

Why not :mod:`multiprocessing`: forking is unsafe once numba's GNU OpenMP
threads have run (a forked pool then hangs or dies), and a *spawned*
multiprocessing child re-imports the caller's ``__main__`` module, so a script
without an ``if __name__ == "__main__":`` guard would run its own top level
again in every worker. A worker here is a fresh ``python -m relunet.procpool``
that imports only what the pickled tasks name; tasks and results travel as
pickles over its stdin and stdout (anything the task prints goes to stderr).

Starting a worker costs about a second (imports and numba's cached kernels),
so callers use it only for work of several seconds per worker.
"""
from __future__ import annotations

import os
import pickle
import queue
import subprocess
import sys
import threading
import traceback

__all__ = ["run_tasks", "usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:                      # not on Linux
        return os.cpu_count() or 1


def _worker_env() -> dict:
    env = dict(os.environ)
    env.update(NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    # the package the caller imported, even when it runs from a source tree
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]]
                                                  if env.get("PYTHONPATH") else []))
    return env


def run_tasks(func, tasks, workers: int, on_done=None) -> list:
    """[func(*task) for task in tasks], computed in ``workers`` processes.

    ``func`` must be a module-level function of an importable module (it is
    pickled by name). ``on_done(i)`` is called (from a driver thread, one call
    at a time) when task i has finished. A task that raises, or a worker that
    dies, raises RuntimeError here naming the task.
    """
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    tasks = list(tasks)
    workers = min(workers, len(tasks))
    if workers == 0:
        return []
    pending = queue.SimpleQueue()
    for i in range(len(tasks)):
        pending.put(i)
    results, errors, lock = [None] * len(tasks), [], threading.Lock()
    env = _worker_env()
    procs = [subprocess.Popen([sys.executable, "-m", "relunet.procpool"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, env=env) for _ in range(workers)]

    def drive(proc):
        while not errors:
            try:
                i = pending.get_nowait()
            except queue.Empty:
                return
            try:
                pickle.dump((func, tasks[i]), proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                proc.stdin.flush()
                ok, res = pickle.load(proc.stdout)
            except (EOFError, OSError, pickle.UnpicklingError) as e:
                ok, res = False, (f"worker process died ({type(e).__name__}; exit code "
                                  f"{proc.poll()})")
            with lock:
                if not ok:
                    errors.append(f"task {i} of {func.__name__}: {res}")
                    return
                results[i] = res
                if on_done is not None:
                    on_done(i)

    threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in procs]
    finished = False
    try:
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        finished = True
    finally:
        for p in procs:
            if not finished:                    # interrupted: stop the workers now
                p.kill()
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if errors:
        raise RuntimeError(errors[0])
    return results


def _serve() -> None:
    """Worker loop: read (func, args) pickles from stdin, write (ok, result) pickles to stdout."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)                               # prints of the tasks go to stderr
    inp = sys.stdin.buffer
    while True:
        try:
            func, args = pickle.load(inp)
        except EOFError:
            return
        try:
            res = (True, func(*args))
        except Exception as e:                  # sent back; the caller raises it
            res = (False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        pickle.dump(res, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


if __name__ == "__main__":
    _serve()
