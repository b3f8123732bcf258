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
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .net import Arch, init_stack
from .store import RunStore, fingerprint

__all__ = ["TrainConfig", "RunData", "EngineError", "network_seeds", "teacher_data",
           "initial_stack", "run_training", "load_run"]

_UNSET = object()


class EngineError(RuntimeError):
    """The cluster could not be reached or started (one-line message)."""


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
def _train_chunk(config: dict, start: int, stop: int, numba_threads: int | None = None):
    """Train networks start..stop-1; returns (arrays, info). Pure: no file I/O."""
    import numba

    from .train import train_stack
    cfg = TrainConfig.from_dict(config)
    if numba_threads is not None:
        numba.set_num_threads(numba_threads)   # thread-local: this worker thread only
    x, t = teacher_data(cfg)
    W0, extra = initial_stack(cfg, start, stop)                   # (m, P)
    t0 = time.perf_counter()
    r = train_stack(W0, cfg.arch, x, t, cfg.make_optimizer(), cfg.steps,
                    record_every=cfg.record_every, dtype=cfg.dtype)
    arrays = {"W": r.W, "seeds": network_seeds(cfg.seed, start, stop), "loss": r.loss,
              "history": r.history, "status": r.status, "steps_done": r.steps_done, **extra}
    info = {"seconds": round(time.perf_counter() - t0, 3),
            "numba_threads": int(numba.get_num_threads()),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}
    return arrays, info


# Looked up at submit time, so that tests can count the tasks a run submits.
_chunk_task = _train_chunk


# =============================================================================
# Engines
# =============================================================================
@contextlib.contextmanager
def _quiet_logs():
    loggers = [logging.getLogger(n) for n in ("distributed", "tornado", "asyncio")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, lev in zip(loggers, levels):
            lg.setLevel(lev)


@contextlib.contextmanager
def connect(scheduler=None, scheduler_file=None, local_processes=None,
            connect_timeout: float = 10.0):
    """A dask ``Client`` for the chosen engine (module docstring); closed on exit."""
    import dask
    from distributed import Client, LocalCluster
    if sum(v is not None for v in (scheduler, scheduler_file, local_processes)) > 1:
        raise ValueError("give at most one of scheduler, scheduler_file, local_processes")
    local = dict(dashboard_address="127.0.0.1:0", worker_dashboard_address="127.0.0.1:0",
                 threads_per_worker=1, silence_logs=logging.ERROR)
    cluster = client = None
    saved_env = os.environ.get("NUMBA_NUM_THREADS", _UNSET)
    try:
        if scheduler is not None or scheduler_file is not None:
            where = scheduler if scheduler is not None else f"scheduler file {scheduler_file}"
            if scheduler_file is not None and not Path(scheduler_file).is_file():
                raise EngineError(f"scheduler file {scheduler_file} does not exist")
            try:
                with _quiet_logs():
                    client = Client(address=scheduler, scheduler_file=scheduler_file,
                                    timeout=connect_timeout)
            except (OSError, TimeoutError) as e:
                raise EngineError(f"cannot reach the dask scheduler at {where} "
                                  f"(waited {connect_timeout:g} s): {e}") from None
        else:
            if local_processes is not None:
                if not isinstance(local_processes, int) or local_processes < 1:
                    raise ValueError(f"local_processes must be an integer >= 1, "
                                     f"got {local_processes!r}")
                # numba reads NUMBA_NUM_THREADS at import, which in a spawned worker
                # happens before the Nanny's `env` is applied: it must be in the
                # environment at spawn time (dask then sets it in ours; restored below)
                with dask.config.set({
                        "distributed.worker.multiprocessing-method": "spawn",
                        "distributed.nanny.pre-spawn-environ.NUMBA_NUM_THREADS": "1"}):
                    cluster = LocalCluster(n_workers=local_processes, processes=True,
                                           host="127.0.0.1", **local)
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
                    with contextlib.suppress(Exception):
                        obj.close(timeout=timeout)
        if saved_env is _UNSET:
            os.environ.pop("NUMBA_NUM_THREADS", None)
        else:
            os.environ["NUMBA_NUM_THREADS"] = saved_env


def run_training(config: TrainConfig, store_dir, *, chunk_size: int | None = None,
                 scheduler: str | None = None, scheduler_file=None,
                 local_processes: int | None = None, numba_threads: int | None = None,
                 retries: int = 2, connect_timeout: float = 10.0,
                 progress: bool = True) -> Path:
    """Train (or finish training) the run ``config`` in ``store_dir``; return its path.

    ``chunk_size`` networks per task (default 256 for a new run; an existing
    run keeps its own). ``numba_threads``: threads of the kernel on each
    worker (default: all). ``retries``: resubmissions of a chunk whose worker
    died. On KeyboardInterrupt every finished chunk is already stored;
    in-flight chunks are abandoned, and the exception propagates.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config must be a TrainConfig, got {type(config).__name__}")
    if numba_threads is not None and (not isinstance(numba_threads, int) or numba_threads < 1):
        raise ValueError(f"numba_threads must be an integer >= 1, got {numba_threads!r}")
    if local_processes is not None and (numba_threads or 1) > 1:
        raise ValueError("local_processes workers run numba single-threaded; "
                         "use numba_threads=None or 1 with them")
    cfg_dict = config.to_dict()
    with RunStore(store_dir).open_writer(cfg_dict, config.n_models, chunk_size,
                                         kind="train") as writer:
        todo = writer.todo()
        if not todo:
            return writer.path
        sizes = {i: writer.chunk_range(i)[1] - writer.chunk_range(i)[0] for i in todo}
        n_done = config.n_models - sum(sizes.values())
        with connect(scheduler, scheduler_file, local_processes, connect_timeout) as client:
            futures = {}
            for i in todo:
                start, stop = writer.chunk_range(i)
                f = client.submit(_chunk_task, cfg_dict, start, stop, numba_threads,
                                  key=f"relunet-train-{writer.fingerprint[:16]}-chunk-{i}",
                                  retries=retries, pure=False)
                futures[f] = i
            bar = tqdm(total=config.n_models, initial=n_done, unit="net", file=sys.stderr,
                       disable=not progress, desc=f"{config.optimizer} {config.arch}",
                       dynamic_ncols=True)
            t0, trained = time.perf_counter(), 0
            try:
                for f in as_completed(list(futures)):
                    arrays, info = f.result()
                    writer.write_chunk(futures[f], arrays, info)
                    trained += sizes[futures[f]]
                    rate = trained * config.steps / max(time.perf_counter() - t0, 1e-9)
                    bar.set_postfix({"model-steps/s": f"{rate:.3g}"}, refresh=False)
                    bar.update(sizes[futures[f]])
            except BaseException:
                with _quiet_logs(), contextlib.suppress(Exception):
                    client.cancel(list(futures), force=True)
                raise
            finally:
                bar.close()
    return Path(store_dir)


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

    @property
    def complete(self) -> bool:
        return self.n_done == self.n_total

    def loss_summary(self, quantiles=(0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)) -> dict:
        """Quantiles and mean of the final loss over networks that did NOT diverge.

        Returns {"n_done", "n_total", "n_used", "n_diverged" (excluded),
        "mean", "quantiles": {q: value}} (values NaN when no network is usable).
        """
        ok = (self.status == 0) & np.isfinite(self.loss)
        used = self.loss[ok]
        qs = np.quantile(used, quantiles) if used.size else np.full(len(quantiles), np.nan)
        return {"n_done": self.n_done, "n_total": self.n_total, "n_used": int(ok.sum()),
                "n_diverged": int((~ok).sum()),
                "mean": float(used.mean()) if used.size else float("nan"),
                "quantiles": {float(q): float(v) for q, v in zip(quantiles, qs)}}


def load_run(store_dir) -> RunData:
    """Read a training run, finished or not (see :class:`RunData`)."""
    snap = RunStore(store_dir).load()
    m = snap.manifest
    if m.get("kind") != "train":
        raise ValueError(f"{store_dir} holds a {m.get('kind')!r} run, not a training run")
    cfg = TrainConfig.from_dict(m["config"])
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
                   snap.n_total, snap.chunks_done, snap.n_chunks, a.get("init_radius"))
