"""Train many students of a teacher, chunk by chunk, on dask, into a run directory.

The paper's main experiment (Gamst & Walker 2017, Sec. 3) trains 320,000
students of W_f for 50,000 full-batch steps each. Here a run of ``n_models``
students is cut into chunks of networks; each chunk is one task
``_train_chunk(config_dict, start, stop)`` (a plain function of the installed
package, never a numba dispatcher) on a dask cluster
(:mod:`relunet.run.cluster`), and the driver, the only writer, stores each
chunk as its future completes (:mod:`relunet.run.store`). Re-running the same
config resumes; finished chunks are never recomputed.

Determinism. Each network has its own seed (:mod:`relunet.run.config`), and
the training kernel trains one network per ``prange`` iteration, so a
network's weights depend only on its seed: the same config gives
bit-identical weights whatever the chunk size, thread count, resume history or
engine -- on one CPU type (numba compiles for the host CPU, so a heterogeneous
cluster may differ in the last bits). The chunk size is therefore not part of
a run's config (nor of its fingerprint): it is fixed when the run directory is
created, and a resume keeps the stored layout whatever chunk size it is given.

Faults. A task's key names the run's fingerprint, a token unique to this
call, and the networks of the chunk (``relunet-train-<fp16>-<token>-nets-
<start>-<stop>``): dask merges tasks by key, so two clients of one cluster
never share (or cancel) each other's tasks. Chunks are submitted as earlier
ones finish, at most ``2 x (worker threads)`` in flight. Every chunk is
verified before it is stored and whenever it is read (fingerprint, item
range, seeds; ``RunStore.read_chunk``): a damaged or foreign chunk is
quarantined and trained again. The sizes of a run (worker memory per chunk,
disk) are checked before anything is created. Failures of the cluster or of
a chunk raise :class:`relunet.run.faults.EngineError` with a one-line message
(:mod:`relunet.run.faults`).
"""
from __future__ import annotations

import collections
import contextlib
import os
import shutil
import socket
import sys
import time
import uuid
from pathlib import Path

import numpy as np

from .cluster import connect, quiet_logs
from .config import EngineOptions, TrainConfig, initial_stack, network_seeds, teacher_data
from .faults import chunk_failure, self_repairing
from .store import MAX_CHUNKS, RunStore

__all__ = ["run_training", "default_chunk_size", "chunk_validator", "run_estimate",
           "MAX_CHUNK_BYTES"]

MAX_CHUNK_BYTES = 2 << 30      # worker memory of one chunk (weights, state, history)


def default_chunk_size(n_models: int) -> int:
    """Networks per chunk of a new run: about 8 chunks (a useful progress bar), 4 to
    256 networks each (enough to amortise a task)."""
    return int(min(256, max(4, n_models // 8)))


def run_training(config: TrainConfig, store_dir, *, chunk_size: int | None = None,
                 scheduler: str | None = None, scheduler_file=None,
                 local_processes: int | None = None, numba_threads: int | None = None,
                 retries: int = 2, connect_timeout: float = 10.0,
                 progress: bool = True, max_in_flight: int | None = None) -> Path:
    """Train (or finish training) the run ``config`` in ``store_dir``; return its path.

    The engine arguments are the fields of :class:`relunet.run.config.EngineOptions`
    (``EngineOptions.kwargs()``): ``chunk_size`` networks per task (default for a
    new run: :func:`default_chunk_size`; an existing run keeps its own),
    ``numba_threads`` threads of the kernel on each worker (default: all),
    ``retries`` resubmissions of a chunk whose worker died. ``max_in_flight``:
    chunks submitted at a time (default: twice the cluster's worker threads, at
    least 2). Everything is checked (arguments,
    config against a stored run, sizes, a writable place) before the run
    directory is created; a failed call leaves no new directory behind.
    A complete, intact run returns at once, without a cluster (also when its
    directory is read-only). On KeyboardInterrupt every finished chunk is
    already stored; in-flight chunks are abandoned, and the exception
    propagates. Failures of the cluster or of a chunk raise
    :class:`EngineError` (one line).
    """
    from distributed import as_completed
    from tqdm.auto import tqdm
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    EngineOptions(chunk_size=chunk_size, scheduler=scheduler, scheduler_file=scheduler_file,
                  local_processes=local_processes, numba_threads=numba_threads,
                  retries=retries, connect_timeout=connect_timeout,
                  progress=progress)          # checks them (one-line ValueErrors)
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
        raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
    cfg_dict = config.to_dict()
    validate = chunk_validator(config)
    run = RunStore(store_dir)
    if run.path.exists() and not run.path.is_dir():
        raise ValueError(f"{run.path} is a file, not a run directory: give --run a directory")
    created = not run.path.exists()
    layout, done_items = chunk_size or default_chunk_size(config.n_models), 0
    if run.exists():
        m = run.check_config(cfg_dict)
        if m["n_items"] != config.n_models:
            raise ValueError(f"run {run.path} has n_items={m['n_items']}, "
                             f"got {config.n_models}")
        snap_bad = run.verify(validate) if len(m["chunks"]) == m["n_chunks"] else None
        if snap_bad == {}:
            return run.path                   # complete and intact: nothing to do
        layout = m["chunk_size"]
        done_items = sum(c["stop"] - c["start"] for c in m["chunks"].values())
    _check_sizes(config, layout, run.path, done_items)
    _check_writable(run.path)
    where = scheduler or (f"scheduler file {scheduler_file}" if scheduler_file else "local")
    # the cluster first: if it cannot be reached, no directory was made
    with connect(scheduler, scheduler_file, local_processes, connect_timeout) as client, \
            run.open_writer(cfg_dict, config.n_models, chunk_size if run.exists() else layout,
                            kind="train", validate=validate) as writer:
        try:
            _train_todo(writer, client, config, cfg_dict, numba_threads, retries, progress,
                        max_in_flight, where, as_completed, tqdm)
        except BaseException:
            if created and not writer.done() and not any(run.path.glob("chunk-*")):
                # we made it and nothing was trained: leave no trace (still locked)
                shutil.rmtree(run.path, ignore_errors=True)
            raise
    return run.path


def _train_todo(writer, client, config, cfg_dict, numba_threads, retries, progress,
                max_in_flight, where, as_completed, tqdm):
    todo = collections.deque(writer.todo())
    if not todo:
        return
    sizes = {i: writer.chunk_range(i)[1] - writer.chunk_range(i)[0] for i in todo}
    n_done = config.n_models - sum(sizes.values())
    token = uuid.uuid4().hex[:8]            # this call's own keys (module docstring)
    pending, ac = {}, as_completed()
    # every chunk at the width the run was created with (its manifest), whatever the
    # CPU of the worker that trains it: a 512-bit kernel compiled for an AVX2-only CPU
    # gives the same bits (tests/test_train.py), so a cluster of mixed CPUs, or a resume
    # on another machine, cannot mix widths within one run
    bits = writer.manifest.get("versions", {}).get("vector_bits")

    def limit():
        if max_in_flight is not None:
            return max_in_flight
        with contextlib.suppress(Exception):
            return max(2, 2 * sum(client.nthreads().values()))
        return 2

    def submit_more():
        n = limit()
        while todo and len(pending) < n:
            i = todo.popleft()
            start, stop = writer.chunk_range(i)
            f = client.submit(_chunk_task, cfg_dict, start, stop, numba_threads, bits,
                              key=f"relunet-train-{writer.fingerprint[:16]}-{token}"
                                  f"-nets-{start}-{stop}",
                              retries=retries, pure=False)
            pending[f] = i
            ac.add(f)

    bar = tqdm(total=config.n_models, initial=n_done, unit="net", file=sys.stderr,
               disable=not progress, desc=f"{config.optimizer} {config.arch}",
               dynamic_ncols=True)
    t0, trained = time.perf_counter(), 0
    try:
        with quiet_logs():
            submit_more()
            for f in ac:
                i = pending.pop(f)
                try:
                    arrays, info = f.result()
                except Exception as e:  # noqa: BLE001 -- mapped to one line
                    raise chunk_failure(e, i, *writer.chunk_range(i), where,
                                         retries) from None
                writer.write_chunk(i, arrays, info)
                trained += sizes[i]
                rate = trained * config.steps / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({"model-steps/s": f"{rate:.3g}"}, refresh=False)
                bar.update(sizes[i])
                submit_more()
    except BaseException:
        # release only this call's futures (their keys are ours alone)
        with quiet_logs(), contextlib.suppress(BaseException):
            client.cancel(list(pending))
        raise
    finally:
        bar.close()


# =============================================================================
# One task: train one chunk of networks (runs on a dask worker)
# =============================================================================
def _train_chunk(config: dict, start: int, stop: int, numba_threads: int | None = None,
                 vector_bits: int | None = None):
    """Train networks start..stop-1 at ``vector_bits`` (the run's width; None: this
    CPU's default); returns (arrays, info). Pure: no file I/O (except deleting a
    corrupt numba cache file, then compiling again)."""
    import numba

    from ..fast import vector_bits as vector_bits_of
    from ..train import train_stack
    cfg = TrainConfig.from_dict(config)
    if numba_threads is not None:
        numba.set_num_threads(numba_threads)   # thread-local: this worker thread only
    t0 = time.perf_counter()

    def body():       # every numba call of the chunk (the teacher's data use kernels too)
        x, t = teacher_data(cfg)
        W0, extra = initial_stack(cfg, start, stop)               # (m, P)
        return train_stack(W0, cfg.arch, x, t, cfg.make_optimizer(), cfg.steps,
                           record_every=cfg.record_every, dtype=cfg.dtype,
                           vector_bits=vector_bits), extra

    (r, extra), repaired = self_repairing(body)
    arrays = {"W": r.W, "seeds": network_seeds(cfg.seed, start, stop), "loss": r.loss,
              "history": r.history, "status": r.status, "steps_done": r.steps_done, **extra}
    info = {"seconds": round(time.perf_counter() - t0, 3),
            "numba_threads": int(numba.get_num_threads()),
            "vector_bits": vector_bits_of(vector_bits),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}
    if repaired:
        info["repaired_numba_cache"] = repaired
    return arrays, info


# Looked up at submit time, so that tests can count the tasks a run submits.
_chunk_task = _train_chunk


def chunk_validator(cfg: "TrainConfig"):
    """``validate(i, start, stop, arrays) -> reason | None`` for the store: a
    chunk of this run holds the networks' own seeds and weights of the right
    shape and dtype (what the fingerprint alone cannot tell)."""
    P = cfg.arch.P

    def validate(i, start, stop, arrays):
        for name in ("W", "seeds", "loss", "history", "status", "steps_done"):
            if name not in arrays:
                return f"has no {name!r} array"
        W = arrays["W"]
        if W.ndim != 2 or W.shape[1] != P or W.dtype != np.dtype(cfg.dtype):
            return (f"holds weights of shape {W.shape} {W.dtype}, expected "
                    f"({stop - start}, {P}) {cfg.dtype}")
        if not np.array_equal(arrays["seeds"], network_seeds(cfg.seed, start, stop)):
            return f"holds seeds that are not those of networks {start}..{stop - 1}"
        return None
    return validate


# =============================================================================
# Sizes, checked before anything is created
# =============================================================================
def run_estimate(cfg: "TrainConfig", chunk_size: int) -> dict:
    """Bytes of one chunk in a worker and of the whole run on disk.

    Per network: weights, up to two optimizer states and a start copy (4 P),
    the loss history ceil(steps / record_every), a few scalars.
    """
    item = np.dtype(cfg.dtype).itemsize
    P, H = cfg.arch.P, -(-cfg.steps // cfg.record_every)
    per_net_worker = item * (4 * P + H + 4) + 32
    per_net_disk = item * (P + H + 1) + 8 + 1 + 8 + (8 if cfg.init == "perturb" else 0)
    m = min(chunk_size, cfg.n_models)
    return {"history": H, "chunk_bytes": m * per_net_worker,
            "disk_bytes": cfg.n_models * per_net_disk + 4096 * -(-cfg.n_models // chunk_size)}


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024


def _check_sizes(cfg: "TrainConfig", chunk_size: int, run_dir: Path, done_items: int):
    """ValueError (one line, with the fix) if the run cannot fit."""
    n_chunks = -(-cfg.n_models // chunk_size)
    if n_chunks > MAX_CHUNKS:
        raise ValueError(f"--models {cfg.n_models} in chunks of {chunk_size} makes {n_chunks} "
                         f"chunks, more than {MAX_CHUNKS}: use --chunk-size "
                         f"{-(-cfg.n_models // MAX_CHUNKS)} or more")
    est = run_estimate(cfg, chunk_size)
    if est["chunk_bytes"] > MAX_CHUNK_BYTES:
        per_net = est["chunk_bytes"] / min(chunk_size, cfg.n_models)
        fit = int(MAX_CHUNK_BYTES // per_net)
        fix = (f"lower --chunk-size to {fit}" if fit >= 1 else
               f"raise --record-every (now {cfg.record_every}; --steps {cfg.steps} records "
               f"{est['history']} losses per network)")
        raise ValueError(f"a chunk of {min(chunk_size, cfg.n_models)} networks would need "
                         f"{_size(est['chunk_bytes'])} of worker memory (limit "
                         f"{_size(MAX_CHUNK_BYTES)}): {fix}")
    need = est["disk_bytes"] * (1 - done_items / cfg.n_models)
    where = run_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise ValueError(f"the run needs about {_size(need)} on disk, only {_size(free)} "
                         f"free at {where}: free space, store the run elsewhere (--run/"
                         f"--store), or raise --record-every")


def _check_writable(run_dir: Path) -> None:
    where = run_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    if where.exists() and not where.is_dir():
        raise ValueError(f"{where} is a file, not a run directory: give --run a directory")
    if not os.access(where, os.W_OK | os.X_OK):
        what = "the run directory" if where == run_dir else "the folder"
        raise PermissionError(13, f"{what} {where} is read-only: make it writable "
                                  f"(chmod u+w) or copy the run elsewhere", str(where))
