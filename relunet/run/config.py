"""The two config types of a training run: what is trained, and how; where it is stored.

:class:`TrainConfig` holds everything that determines a run's results (and so
its fingerprint); :class:`EngineOptions` how it is computed (chunk size,
cluster, threads, retries), which never changes a result. Every field that a
command line sets carries its flag and help (:mod:`relunet.run.flags`): the
``relunet train`` and ``run_all.py`` command lines are built from these two
classes, defaults included.

Store. One root for everything (``--store``, default ``results`` or
``$RELUNET_STORE``): training runs in ``<root>/runs/``, each experiment's
results in ``<root>/<experiment>/``. Directories are named by one rule
(:func:`relunet.run.files.keyed_path`): a training run is
``<root>/runs/<label>-<key>`` (:func:`run_dir`; label e.g.
``wf-adadelta-5x5``, key the first 12 hex digits of the config's
fingerprint), so ``relunet train`` and the experiments find each other's runs.

Seeds. Network ``i`` of a run with base seed ``s`` is initialised
(``net.init_stack``) from the 64-bit integer

    numpy.random.SeedSequence(s).spawn(n)[i].generate_state(1, uint64)[0]

(= ``SeedSequence(s, spawn_key=(i,))``: independent streams, stable across
NumPy versions, and independent of the chunking); the same seed draws its
Glorot start (``init='glorot'``) or its noise (``init='perturb'``, the basin
experiment of G&W Sec. 3.4).
"""
from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..net import Arch, init_stack
from .files import fingerprint, keyed_path
from .flags import count, flag, floats, retry_count, seconds

__all__ = ["TrainConfig", "EngineOptions", "DEFAULT_STORE", "run_dir", "network_seeds",
           "teacher_data", "initial_stack", "HYPER"]

#: the store root of both command lines
DEFAULT_STORE = os.environ.get("RELUNET_STORE", "results")

VARIANTS = ("distinct", "authors350")
DTYPES = ("float64", "float32")
INITS = ("glorot", "perturb")
OPTIMIZERS = ("adadelta", "momentum")
HYPER = ("lr", "momentum", "rho", "eps")      # optimizer flags (relunet.optim's fields)

# Bounds of a config, whatever the machine (sizes are checked against it in
# run_training): beyond them a run could never finish, or counters overflow.
_LIMITS = {"steps": 10**12, "n_models": 10**10, "K": 1000, "N": 1000, "seed": 2**63 - 1}
_LIMIT_WHY = {"steps": "1e12 (a network would train for weeks)",
              "n_models": "1e10 (the paper trained 3.2e5)", "K": "1000", "N": "1000",
              "seed": "2**63 - 1 (seeds are 64-bit)"}


# =============================================================================
# What is trained
# =============================================================================
@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run's results (and nothing else:
    the chunk size and the engine are :class:`EngineOptions`). Defaults are
    filled in (heights, hyper-parameters), so the stored config is explicit.

    ``init='perturb'`` (G&W Sec. 3.4): start from the de-symmetrised teacher
    (symmetry.canonicalize) plus noise of norm r ~ U(init_radius), by
    net.perturbed_stack; the student must have the teacher's architecture.
    """

    teacher: str = flag("wf", "teacher: W_f or the high-frequency one (construct.build_hf)",
                        choices=("wf", "hf"))
    heights: tuple | None = flag(None, "W_f's spline heights at knots -1,-1/3,1/3,1",
                                 default_help="the seed-0 draw", type=floats,
                                 metavar="H0,H1,H2,H3")
    variant: str = flag("distinct", "training set: 341 distinct points or the authors' "
                        "350 rows", choices=VARIANTS)
    K: int = flag(5, "student: hidden layers", type=int)
    N: int = flag(5, "student: units per layer", type=int)
    optimizer: str = flag("adadelta", "optimizer", choices=OPTIMIZERS)
    hyper: tuple = ()              # ((name, value), ...): flags --lr, --momentum, --rho, --eps
    n_models: int = flag(2048, "number of students", name="--models", type=count, metavar="N")
    steps: int = flag(50_000, "full-batch steps per student", type=count)
    seed: int = flag(0, "base seed (relunet.run.config docstring)", type=int)
    record_every: int = flag(1000, "loss history every this many steps", type=count)
    dtype: str = flag("float64", "precision trained in", choices=DTYPES)
    init: str = flag("glorot", "Glorot-uniform starts, or the teacher plus noise",
                     choices=INITS)
    init_radius: tuple | None = flag(None, "--init perturb: noise norm ~ U(LO, HI)",
                                     default_help="0,2", type=floats, metavar="LO,HI")

    def __post_init__(self):
        from ..construct import TEACHERS, default_heights, teacher
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
        for name, allowed in (("variant", VARIANTS), ("dtype", DTYPES), ("init", INITS)):
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
        from ..optim import check_dtype
        check_dtype(opt, self.dtype)       # ... also in the precision trained in
        full = {k: float(v) for k, v in opt.as_dict().items() if k != "name"}
        set_("hyper", tuple(sorted(full.items())))

    # -- derived ---------------------------------------------------------------
    @property
    def arch(self) -> Arch:
        return Arch(self.K, self.N)

    def make_optimizer(self):
        from ..optim import make_optimizer
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

    @property
    def label(self) -> str:
        """What a run directory is named by, before its key (:func:`run_dir`)."""
        return (f"{self.teacher}-{self.optimizer}-{self.K}x{self.N}"
                + ("-perturb" if self.init == "perturb" else ""))

    def describe(self) -> str:
        hyper = ", ".join(f"{k}={v:g}" for k, v in self.hyper)
        start = ("" if self.init == "glorot" else
                 ", from the teacher + noise of norm U({:g}, {:g})".format(*self.init_radius))
        return (f"{self.n_models} {self.K}x{self.N} students of {self.teacher} "
                f"({self.variant}), {self.optimizer}({hyper}), {self.steps} steps, "
                f"seed {self.seed}, {self.dtype}{start}")


def run_dir(root, cfg: TrainConfig) -> Path:
    """Where the run of ``cfg`` lives in the store ``root``: ``root/runs/<label>-<key>``."""
    return keyed_path(root, "runs", cfg.label, cfg.to_dict())


# =============================================================================
# How it is computed
# =============================================================================
@dataclass(frozen=True)
class EngineOptions:
    """How a run is computed; never part of its results (nor of its fingerprint).

    The engines (one of): the default, an embedded in-process cluster (one
    worker thread; the numba kernel inside uses all cores itself);
    ``local_processes=N`` single-threaded worker processes; or an existing
    dask cluster (``scheduler`` address or ``scheduler_file``).
    """

    chunk_size: int | None = flag(None, "networks per task", type=count,
                                  default_help="models/8, 4 to 256, for a new run; a run keeps "
                                               "its own")
    scheduler: str | None = flag(None, "dask scheduler address, e.g. tcp://HOST:8786",
                                 exclusive="cluster", metavar="ADDR")
    scheduler_file: str | None = flag(None, "dask scheduler file", exclusive="cluster",
                                      metavar="FILE")
    local_processes: int | None = flag(None, "N single-threaded local worker processes",
                                       default_help="one in-process worker",
                                       exclusive="cluster", type=int, metavar="N")
    numba_threads: int | None = flag(None, "numba threads per worker", name="--threads",
                                     default_help="all", type=int, metavar="N")
    retries: int = flag(2, "retries of a chunk whose worker died (0..100)", type=retry_count)
    connect_timeout: float = flag(10.0, "wait this long for the scheduler",
                                  type=seconds, metavar="SECONDS")
    progress: bool = flag(True, "no progress bar", name=("--quiet", "--no-progress"),
                          action="store_false")

    def __post_init__(self):
        if sum(v is not None for v in (self.scheduler, self.scheduler_file,
                                       self.local_processes)) > 1:
            raise ValueError("give at most one of scheduler, scheduler_file, local_processes")
        if self.scheduler is not None:
            _check_address(self.scheduler)
        for name in ("chunk_size", "local_processes", "numba_threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(
                    v, (int, np.integer)) or v < 1):
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.local_processes is not None and (self.numba_threads or 1) > 1:
            raise ValueError("local_processes workers run numba single-threaded; "
                             "use numba_threads=None or 1 with them")
        r = self.retries
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= 100:
            raise ValueError(f"retries must be an integer in 0..100, got {r!r}")
        t = self.connect_timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 3600:
            raise ValueError(f"connect_timeout must be a number of seconds in (0, 3600], "
                             f"got {t!r}")

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`relunet.run.engine.run_training`."""
        return asdict(self)

    def flags(self) -> list[str]:
        """The command-line flags that choose this cluster (for a resume command)."""
        out = []
        for name, text in (("scheduler", "--scheduler"), ("scheduler_file", "--scheduler-file"),
                           ("local_processes", "--local-processes"),
                           ("numba_threads", "--threads")):
            v = getattr(self, name)
            if v is not None:
                out += [text, str(v)]
        return out


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


# =============================================================================
# What a config determines: seeds, the teacher's data, the start points
# =============================================================================
def network_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """Seeds (stop-start,) uint64 of networks start..stop-1 (module docstring)."""
    return np.array([np.random.SeedSequence(seed, spawn_key=(i,)).generate_state(1, np.uint64)[0]
                     for i in range(start, stop)], dtype=np.uint64)


def teacher_data(cfg: TrainConfig):
    """(x[S], t[S]) of the config's teacher, in the config's dtype (read-only)."""
    return _training_set(cfg.teacher, cfg.heights, cfg.variant, cfg.dtype)


@functools.lru_cache(maxsize=8)   # a worker builds it once per run, not once per chunk
def _training_set(name, heights, variant, dtype):
    from ..construct import teacher
    from ..data import training_set
    arch, w = teacher(name, None if heights is None else np.array(heights))
    x, t = training_set(w, arch, variant=variant, dtype=dtype)
    x.flags.writeable = t.flags.writeable = False
    return x, t


@functools.lru_cache(maxsize=8)
def _canonical_teacher(name, heights):
    from ..construct import teacher
    from ..symmetry import canonicalize
    arch, w = teacher(name, None if heights is None else np.array(heights))
    return canonicalize(w[None, :], arch)[0]                      # (P,)


def initial_stack(cfg: TrainConfig, start: int, stop: int):
    """Start points of networks start..stop-1: (W0 (m, P), extra arrays to store)."""
    from ..net import perturbed_stack
    seeds = network_seeds(cfg.seed, start, stop)                  # (m,)
    if cfg.init == "glorot":
        return init_stack(cfg.arch, seeds, dtype=cfg.dtype), {}
    W0, radii = perturbed_stack(_canonical_teacher(cfg.teacher, cfg.heights), seeds,
                                cfg.init_radius, dtype=cfg.dtype)
    return W0, {"init_radius": radii}
