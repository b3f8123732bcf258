"""Train many students of a teacher, chunk by chunk, on dask, into a run store.

The paper's main experiment (Gamst & Walker 2017, Sec. 3) trains 320,000
students of W_f for 50,000 full-batch steps each. Here a run of ``n_models``
students is cut into chunks of networks; each chunk is one task
``_train_chunk(config_dict, start, stop)`` (a plain function of the installed
package, never a numba dispatcher) on a dask cluster, and the driver, the only
writer, stores each chunk as its future completes (``store.RunStore``).
Re-running the same config resumes; finished chunks are never recomputed.

Engines (one of):

* default: an embedded in-process cluster (one worker thread, no server
  reachable from outside); the numba kernel inside uses all cores itself;
* ``local_processes=N``: N single-threaded worker processes, started with
  *spawn* (GNU OpenMP is not fork-safe) and ``NUMBA_NUM_THREADS=1``;
* ``scheduler=ADDRESS`` or ``scheduler_file=FILE``: an existing dask cluster.

Seeds and determinism. Network ``i`` of a run with base seed ``s`` is
initialised (``net.init_stack``) from the 64-bit integer

    numpy.random.SeedSequence(s).spawn(n)[i].generate_state(1, uint64)[0]

(= ``SeedSequence(s, spawn_key=(i,))``: independent streams, stable across
NumPy versions, and independent of the chunking); the same seed draws its
Glorot start (``init='glorot'``) or its noise (``init='perturb'``, the basin
experiment of Sec. 3.4). The training kernel trains one network per
``prange`` iteration, so a network's weights depend only on its seed: the same
config gives bit-identical weights whatever the chunk size, thread count,
resume history or engine -- on one CPU type (numba compiles for the host CPU,
so a heterogeneous cluster may differ in the last bits).

The chunk size is therefore not part of a run's config (nor of its
fingerprint): it is fixed when the run directory is created, and a resume
keeps the stored layout whatever chunk size it is given.

Faults. A task's key names the run's fingerprint, a token unique to this
call, and the networks of the chunk (``relunet-train-<fp16>-<token>-nets-
<start>-<stop>``): dask merges tasks by key, so two clients of one cluster
never share (or cancel) each other's tasks. Chunks are submitted as earlier
ones finish, at most ``2 x (worker threads)`` in flight. Every chunk is
verified before it is stored and whenever it is read (fingerprint, item
range, seeds; ``store.RunStore.read_chunk``): a damaged or foreign chunk is
quarantined and trained again. The sizes of a run (worker memory per chunk,
disk) are checked before anything is created. Failures of the cluster or of
a chunk raise :class:`EngineError` with a one-line message.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .net import Arch, init_stack
from .store import MAX_CHUNKS, DamagedRunError, RunStore, fingerprint

__all__ = ["TrainConfig", "RunData", "EngineError", "NumbaCacheError", "network_seeds",
           "teacher_data", "initial_stack", "run_training", "load_run", "run_estimate",
           "numba_cache_files", "run_interruptibly"]

_UNSET = object()
MAX_CHUNK_BYTES = 2 << 30      # worker memory of one chunk (weights, state, history)
DEFAULT_CHUNK = 256


# Bounds of a config, whatever the machine (sizes are checked against it in
# run_training): beyond them a run could never finish, or counters overflow.
_LIMITS = {"steps": 10**12, "n_models": 10**10, "K": 1000, "N": 1000, "seed": 2**63 - 1}
_LIMIT_WHY = {"steps": "1e12 (a network would train for weeks)",
              "n_models": "1e10 (the paper trained 3.2e5)", "K": "1000", "N": "1000",
              "seed": "2**63 - 1 (seeds are 64-bit)"}


class EngineError(RuntimeError):
    """The cluster failed, or a chunk could not be trained (one-line message)."""


class NumbaCacheError(RuntimeError):
    """numba's on-disk cache is corrupt and could not be repaired (one line)."""


# =============================================================================
# The config of a training run
# =============================================================================
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's results (and nothing else:
    the chunk size and the engine are not part of it). Defaults are filled in
    (heights, hyper-parameters), so the stored config is explicit."""

    teacher: str = "wf"            # 'wf' (G&W's W_f) | 'hf' (construct.build_hf)
    heights: tuple | None = None   # W_f's spline heights at its 4 knots (None: default)
    variant: str = "distinct"      # training set: 'distinct' (341 points) | 'authors350'
    K: int = 5                     # student: hidden layers
    N: int = 5                     # student: units per layer
    optimizer: str = "adadelta"    # 'adadelta' | 'momentum'
    hyper: tuple = ()              # optimizer hyper-parameters ((name, value), ...)
    n_models: int = 2048           # number of students
    steps: int = 50_000            # full-batch steps per student
    seed: int = 0                  # base seed (see module docstring)
    record_every: int = 1000       # loss history every this many steps
    dtype: str = "float64"         # 'float64' | 'float32'
    init: str = "glorot"           # 'glorot' (net.init_stack) | 'perturb' (see below)
    init_radius: tuple | None = None  # 'perturb': noise norm ~ U(lo, hi), default (0, 2)

    # init='perturb' (G&W Sec. 3.4): start from the de-symmetrised teacher
    # (symmetry.canonicalize) plus noise of norm r ~ U(init_radius), by
    # net.perturbed_stack; the student must have the teacher's architecture.

    def __post_init__(self):
        from .construct import TEACHERS, default_heights, teacher
        set_ = functools.partial(object.__setattr__, self)
        if self.teacher not in TEACHERS:
            raise ValueError(f"teacher must be one of {sorted(TEACHERS)}, got {self.teacher!r}")
        for name in ("K", "N", "n_models", "steps", "record_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (name != "seed"):
                raise ValueError(f"{name} must be an integer >= {int(name != 'seed')}, "
                                 f"got {v!r}")
            set_(name, int(v))
        for name, most in _LIMITS.items():
            if getattr(self, name) > most:
                raise ValueError(f"{name} must be at most {_LIMIT_WHY[name]}, got "
                                 f"{getattr(self, name)}")
        for name, allowed in (("variant", ("distinct", "authors350")),
                              ("dtype", ("float64", "float32")),
                              ("init", ("glorot", "perturb"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.teacher == "wf":
            h = default_heights() if self.heights is None else self.heights
            h = tuple(float(v) for v in np.asarray(h, dtype=np.float64).ravel())
            if len(h) != 4 or not np.all(np.isfinite(h)):
                raise ValueError(f"heights must be 4 finite numbers (W_f's spline at its "
                                 f"knots -1, -1/3, 1/3, 1), got {self.heights!r}")
            set_("heights", h)
        elif self.heights is not None:
            raise ValueError(f"heights apply to teacher 'wf' only, not {self.teacher!r}")
        if self.init == "perturb":
            r = (0.0, 2.0) if self.init_radius is None else self.init_radius
            r = tuple(float(v) for v in np.asarray(r, dtype=np.float64).ravel())
            if len(r) != 2 or not 0.0 <= r[0] <= r[1] < np.inf:
                raise ValueError(f"init_radius must be (lo, hi) with 0 <= lo <= hi, "
                                 f"got {self.init_radius!r}")
            if teacher(self.teacher)[0] != self.arch:
                raise ValueError(f"init='perturb' needs the teacher's architecture "
                                 f"{teacher(self.teacher)[0]}, got K={self.K}, N={self.N}")
            set_("init_radius", r)
        elif self.init_radius is not None:
            raise ValueError("init_radius applies to init='perturb' only")
        opt = self.make_optimizer()        # validates name and hyper-parameters
        from .optim import check_dtype
        check_dtype(opt, self.dtype)       # ... also in the precision trained in
        full = {k: float(v) for k, v in opt.as_dict().items() if k != "name"}
        set_("hyper", tuple(sorted(full.items())))

    # -- derived ---------------------------------------------------------------
    @property
    def arch(self) -> Arch:
        return Arch(self.K, self.N)

    def make_optimizer(self):
        from .optim import make_optimizer
        return make_optimizer(self.optimizer, **dict(self.hyper))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hyper"] = dict(self.hyper)
        for name in ("heights", "init_radius"):
            d[name] = None if d[name] is None else list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f for f in cls.__dataclass_fields__}
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d = dict(d)
        for name in ("heights", "init_radius"):
            d[name] = None if d.get(name) is None else tuple(d[name])
        d["hyper"] = tuple(dict(d.get("hyper", {})).items())
        return cls(**d)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())

    def describe(self) -> str:
        hyper = ", ".join(f"{k}={v:g}" for k, v in self.hyper)
        start = ("" if self.init == "glorot" else
                 ", from the teacher + noise of norm U({:g}, {:g})".format(*self.init_radius))
        return (f"{self.n_models} {self.K}x{self.N} students of {self.teacher} "
                f"({self.variant}), {self.optimizer}({hyper}), {self.steps} steps, "
                f"seed {self.seed}, {self.dtype}{start}")


def network_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """Seeds (stop-start,) uint64 of networks start..stop-1 (module docstring)."""
    return np.array([np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1, np.uint64)[0]
                     for i in range(start, stop)], dtype=np.uint64)


def teacher_data(cfg: TrainConfig):
    """(x[S], t[S]) of the config's teacher, in the config's dtype (read-only)."""
    return _training_set(cfg.teacher, cfg.heights, cfg.variant, cfg.dtype)


@functools.lru_cache(maxsize=8)   # a worker builds it once per run, not once per chunk
def _training_set(name, heights, variant, dtype):
    from .construct import teacher
    from .data import training_set
    arch, w = teacher(name, None if heights is None else np.array(heights))
    x, t = training_set(w, arch, variant=variant, dtype=dtype)
    x.flags.writeable = t.flags.writeable = False
    return x, t


@functools.lru_cache(maxsize=8)
def _canonical_teacher(name, heights):
    from .construct import teacher
    from .symmetry import canonicalize
    arch, w = teacher(name, None if heights is None else np.array(heights))
    return canonicalize(w[None, :], arch)[0]                      # (P,)


def initial_stack(cfg: TrainConfig, start: int, stop: int):
    """Start points of networks start..stop-1: (W0 (m, P), extra arrays to store)."""
    from .net import perturbed_stack
    seeds = network_seeds(cfg.seed, start, stop)                  # (m,)
    if cfg.init == "glorot":
        return init_stack(cfg.arch, seeds, dtype=cfg.dtype), {}
    W0, radii = perturbed_stack(_canonical_teacher(cfg.teacher, cfg.heights), seeds,
                                cfg.init_radius, dtype=cfg.dtype)
    return W0, {"init_radius": radii}


# =============================================================================
# One task: train one chunk of networks (runs on a dask worker)
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


def _self_repairing(fn, attempts: int = 8):
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


def _train_chunk(config: dict, start: int, stop: int, numba_threads: int | None = None):
    """Train networks start..stop-1; returns (arrays, info). Pure: no file I/O
    (except deleting a corrupt numba cache file, then compiling again)."""
    import numba

    from .train import train_stack
    cfg = TrainConfig.from_dict(config)
    if numba_threads is not None:
        numba.set_num_threads(numba_threads)   # thread-local: this worker thread only
    t0 = time.perf_counter()

    def body():       # every numba call of the chunk (the teacher's data use kernels too)
        x, t = teacher_data(cfg)
        W0, extra = initial_stack(cfg, start, stop)               # (m, P)
        return train_stack(W0, cfg.arch, x, t, cfg.make_optimizer(), cfg.steps,
                           record_every=cfg.record_every, dtype=cfg.dtype), extra

    (r, extra), repaired = _self_repairing(body)
    arrays = {"W": r.W, "seeds": network_seeds(cfg.seed, start, stop), "loss": r.loss,
              "history": r.history, "status": r.status, "steps_done": r.steps_done, **extra}
    info = {"seconds": round(time.perf_counter() - t0, 3),
            "numba_threads": int(numba.get_num_threads()),
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


# =============================================================================
# Engines
# =============================================================================
@contextlib.contextmanager
def _quiet_logs():
    """Silence dask's loggers (its children have levels of their own): the
    failures they would print as tracebacks become our one-line errors."""
    prefixes = ("distributed", "tornado", "asyncio")
    names = set(prefixes) | {n for n in list(logging.root.manager.loggerDict)
                             if n.startswith(tuple(p + "." for p in prefixes))}
    loggers = [logging.getLogger(n) for n in sorted(names)]
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


def _check_address(scheduler: str) -> None:
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"scheduler must be an address such as tcp://HOST:8786, "
                         f"got {scheduler!r}")
    tail = scheduler.rsplit("://", 1)[-1]
    if ":" in tail:
        port = tail.rsplit(":", 1)[1]
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"scheduler {scheduler!r} has port {port!r}: give a port in "
                             f"1..65535, e.g. tcp://HOST:8786")


def _check_engine_args(scheduler, scheduler_file, local_processes, numba_threads,
                       retries, connect_timeout):
    if sum(v is not None for v in (scheduler, scheduler_file, local_processes)) > 1:
        raise ValueError("give at most one of scheduler, scheduler_file, local_processes")
    if scheduler is not None:
        _check_address(scheduler)
    if local_processes is not None and (isinstance(local_processes, bool) or not isinstance(
            local_processes, int) or local_processes < 1):
        raise ValueError(f"local_processes must be an integer >= 1, got {local_processes!r}")
    if numba_threads is not None and (isinstance(numba_threads, bool) or not isinstance(
            numba_threads, int) or numba_threads < 1):
        raise ValueError(f"numba_threads must be an integer >= 1, got {numba_threads!r}")
    if local_processes is not None and (numba_threads or 1) > 1:
        raise ValueError("local_processes workers run numba single-threaded; "
                         "use numba_threads=None or 1 with them")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise ValueError(f"retries must be an integer in 0..100, got {retries!r}")
    if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, (int, float)) \
            or not 0 < connect_timeout <= 3600:
        raise ValueError(f"connect_timeout must be a number of seconds in (0, 3600], "
                         f"got {connect_timeout!r}")




@contextlib.contextmanager
def connect(scheduler=None, scheduler_file=None, local_processes=None,
            connect_timeout: float = 10.0):
    """A dask ``Client`` for the chosen engine (module docstring); closed on exit."""
    import dask
    from distributed import Client, LocalCluster
    _check_engine_args(scheduler, scheduler_file, local_processes, None, 0, connect_timeout)
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
                with _quiet_logs():
                    client = Client(address=scheduler, scheduler_file=scheduler_file,
                                    timeout=connect_timeout)
            except (OSError, TimeoutError, ValueError) as e:
                raise EngineError(f"cannot reach the dask scheduler at {where} "
                                  f"(waited {connect_timeout:g} s): {_one_line(e)}") from None
        else:
            if local_processes is not None:
                # numba reads NUMBA_NUM_THREADS at import, which in a spawned worker
                # happens before the Nanny's `env` is applied: it must be in the
                # environment at spawn time (dask then sets it in ours; restored below)
                try:
                    with dask.config.set({
                            "distributed.worker.multiprocessing-method": "spawn",
                            "distributed.worker.preload": ["relunet.engine"],
                            "distributed.nanny.pre-spawn-environ.NUMBA_NUM_THREADS": "1"
                            }), _quiet_logs():
                        cluster = LocalCluster(n_workers=local_processes, processes=True,
                                               host="127.0.0.1", **local)
                except (RuntimeError, OSError, TimeoutError) as e:
                    raise EngineError(f"could not start {local_processes} local worker "
                                      f"process(es): {_one_line(e)} (spawned workers "
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
        with _quiet_logs():
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
                          f"{_one_line(e)}); point --scheduler-file at the file the "
                          f"scheduler wrote (dask scheduler --scheduler-file FILE)") from None
    if not isinstance(info, dict) or not isinstance(info.get("address"), str):
        raise EngineError(f"scheduler file {p} has no scheduler 'address'; point "
                          f"--scheduler-file at the file the scheduler wrote")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _chunk_failure(e: BaseException, i: int, start: int, stop: int, where: str,
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
    return EngineError(f"{nets} failed: {type(e).__name__}: {_one_line(e)}")


def run_training(config: TrainConfig, store_dir, *, chunk_size: int | None = None,
                 scheduler: str | None = None, scheduler_file=None,
                 local_processes: int | None = None, numba_threads: int | None = None,
                 retries: int = 2, connect_timeout: float = 10.0,
                 progress: bool = True, max_in_flight: int | None = None) -> Path:
    """Train (or finish training) the run ``config`` in ``store_dir``; return its path.

    ``chunk_size`` networks per task (default 256 for a new run; an existing
    run keeps its own). ``numba_threads``: threads of the kernel on each
    worker (default: all). ``retries``: resubmissions of a chunk whose worker
    died. ``max_in_flight``: chunks submitted at a time (default: twice the
    cluster's worker threads, at least 2). Everything is checked (arguments,
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
    _check_engine_args(scheduler, scheduler_file, local_processes, numba_threads, retries,
                       connect_timeout)
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(
            chunk_size, (int, np.integer)) or chunk_size < 1):
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
        raise ValueError(f"max_in_flight must be an integer >= 1, got {max_in_flight!r}")
    cfg_dict = config.to_dict()
    validate = chunk_validator(config)
    run = RunStore(store_dir)
    if run.path.exists() and not run.path.is_dir():
        raise ValueError(f"{run.path} is a file, not a run directory: give --run a directory")
    created = not run.path.exists()
    layout, done_items = chunk_size or DEFAULT_CHUNK, 0
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
            run.open_writer(cfg_dict, config.n_models, chunk_size, kind="train",
                            validate=validate) as writer:
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
            f = client.submit(_chunk_task, cfg_dict, start, stop, numba_threads,
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
        with _quiet_logs():
            submit_more()
            for f in ac:
                i = pending.pop(f)
                try:
                    arrays, info = f.result()
                except Exception as e:  # noqa: BLE001 -- mapped to one line
                    raise _chunk_failure(e, i, *writer.chunk_range(i), where,
                                         retries) from None
                writer.write_chunk(i, arrays, info)
                trained += sizes[i]
                rate = trained * config.steps / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix({"model-steps/s": f"{rate:.3g}"}, refresh=False)
                bar.update(sizes[i])
                submit_more()
    except BaseException:
        # release only this call's futures (their keys are ours alone)
        with _quiet_logs(), contextlib.suppress(BaseException):
            client.cancel(list(pending))
        raise
    finally:
        bar.close()


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


# =============================================================================
# Reading runs (safe while they are being written)
# =============================================================================
@dataclass(frozen=True)
class RunData:
    """The finished networks of a run (all of them once ``complete``).

    n = n_done networks, in chunk order; ``index`` says which they are.
    """

    path: Path
    config: TrainConfig
    fingerprint: str
    index: np.ndarray        # (n,) network numbers i (seed: network_seeds(seed, i, i+1))
    seeds: np.ndarray        # (n,) uint64
    W: np.ndarray            # (n, P) final weights
    loss: np.ndarray         # (n,) final loss
    history: np.ndarray      # (n, H) loss every record_every steps (NaN after divergence)
    status: np.ndarray       # (n,) int8: 0 ok, 1 diverged
    steps_done: np.ndarray   # (n,)
    n_done: int
    n_total: int
    chunks_done: list = field(default_factory=list)
    n_chunks: int = 0
    init_radius: np.ndarray | None = None   # (n,) noise norms of init='perturb' runs
    damaged: dict = field(default_factory=dict)   # {chunk: reason}, left out (skip)

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total

    def loss_summary(self, quantiles=(0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict:
        """Quantiles and mean of the final loss over networks that did NOT diverge.

        Diverged (excluded): ``status`` 1 (a non-finite loss or weight stopped
        the network), a non-finite final loss, or a final loss above the
        network's starting loss (``history[:, 0]``): a full-batch descent that
        ends higher than it began did not converge, even if every number stayed
        finite (a loss grown 10^10-fold used to count as "0 diverged").
        Returns {"n_done", "n_total", "n_used", "n_diverged", "n_grew" (of
        them, finite but above the start), "mean", "quantiles": {q: value}}
        (values NaN when no network is usable).
        """
        finite = (self.status == 0) & np.isfinite(self.loss)
        grew = np.zeros_like(finite)
        if self.history is not None and np.ndim(self.history) == 2 and self.history.shape[1]:
            start = self.history[:, 0]
            with np.errstate(invalid="ignore"):
                grew = finite & np.isfinite(start) & (self.loss > start)
        ok = finite & ~grew
        used = self.loss[ok]
        qs = np.quantile(used, quantiles) if used.size else np.full(len(quantiles), np.nan)
        return {"n_done": self.n_done, "n_total": self.n_total, "n_used": int(ok.sum()),
                "n_diverged": int((~ok).sum()), "n_grew": int(grew.sum()),
                "mean": float(used.mean()) if used.size else float("nan"),
                "quantiles": {float(q): float(v) for q, v in zip(quantiles, qs)}}


def load_run(store_dir, on_damaged: str = "raise") -> RunData:
    """Read a training run, finished or not (see :class:`RunData`).

    Every chunk is verified (fingerprint, item range, seeds, file hash). A
    damaged or foreign chunk raises :class:`store.DamagedRunError` naming it
    and the fix (``on_damaged="raise"``), or is left out and listed in
    ``RunData.damaged`` (``"skip"``).
    """
    run = RunStore(store_dir)
    m = run.manifest()
    if m.get("kind") != "train":
        raise ValueError(f"{store_dir} holds a {m.get('kind')!r} run, not a training run")
    try:
        cfg = TrainConfig.from_dict(m["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{run.manifest_path} holds an invalid training config "
                         f"({_one_line(e)}): restore it, or train into a new run "
                         f"directory") from None
    try:
        snap = run.load(on_damaged=on_damaged, validate=chunk_validator(cfg))
    except DamagedRunError as e:
        raise DamagedRunError(e.path, e.damaged, f"`relunet train --run {e.path}` moves "
                              f"them to {e.path / 'quarantine'} and trains them again"
                              ) from None
    a = snap.arrays
    if not a:   # nothing finished yet: empty arrays of the right shapes
        H = -(-cfg.steps // cfg.record_every)              # as train_stack records
        a = {"seeds": np.zeros(0, np.uint64), "W": np.zeros((0, cfg.arch.P), cfg.dtype),
             "loss": np.zeros(0, cfg.dtype), "history": np.zeros((0, H), cfg.dtype),
             "status": np.zeros(0, np.int8), "steps_done": np.zeros(0, np.int64)}
    if cfg.init == "perturb" and "init_radius" not in a:
        a["init_radius"] = np.zeros(0)
    return RunData(Path(store_dir), cfg, m["fingerprint"], snap.index, a["seeds"], a["W"],
                   a["loss"], a["history"], a["status"], a["steps_done"], snap.n_done,
                   snap.n_total, snap.chunks_done, snap.n_chunks, a.get("init_radius"),
                   snap.damaged)
