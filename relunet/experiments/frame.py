"""The frame every experiment shares: scales, presets, where results live, compute once.

An experiment is a module with

* ``NAME``, ``TITLE``;
* ``Config``: a frozen dataclass holding every setting, seeds included, its
  first field ``scale``; ``PRESETS``: {scale: the settings that differ from
  the dataclass defaults} for ``smoke`` (seconds, for the tests),
  ``default`` (every figure, statistically meaningful, minutes on 2 cores
  for all experiments together: README, section Scales, timings and the
  cluster), ``large`` (between: 16 times the default's students, the
  expensive instruments at their default size; about an hour on 2 cores)
  and ``paper`` (the paper's full scale, for a cluster); and
  ``config = preset(Config, PRESETS)``, called ``config(scale, dtype)``: an
  experiment that computes in a precision has a ``dtype`` field (float64 or
  float32, ``run_all.py --dtype``), which the store key includes, so the two
  precisions never share results; one without it computes the same in both
  (:mod:`relunet.experiments.precision`);
* ``RESULT``: the name of its stored arrays;
* ``NEEDS``: the names of the experiments whose stored results its
  ``compute`` reads (through :func:`stored`); ``run_all.py`` runs an
  experiment that needs none and that none needs in its second lane, beside
  the others (:mod:`relunet.run.runner`);
* ``compute(cfg, ctx) -> dict``: the arrays to store (no matplotlib, no
  store writes). :func:`ensure` calls it only when the store does not hold
  them yet, and stores them with the config: no experiment checks or saves
  for itself (``ctx.force`` is true while it is being recomputed on request,
  for an experiment that keeps parts of its work in stores of its own, as
  ext_sensitivity does per variant);
* ``plot(cfg, ctx) -> [files]``: reads the store only and writes figures;
* ``report(cfg, ctx) -> str``: reads the store only and returns a Markdown
  section of figures/REPORT.md, numbers beside the paper's claims
  (:func:`relunet.experiments.tables.claims`);
* optionally ``numbers(cfg, ctx) -> [(name, value)]``: its main numbers, read
  from the store, which the float32 report sets beside float64's
  (:func:`relunet.experiments.precision.comparison`);
* optionally ``assist(cfg, ctx) -> int``: for an experiment of the second lane
  whose work splits into parts claimed one by one (ext_sensitivity's variants),
  compute unclaimed parts while its ``compute`` runs in the other process
  (run_all's main lane, done with its own experiments, calls it).

An experiment that needs another's results asks for them with
:func:`stored` (computed and stored first if missing). Results live under
``<store>/<NAME>/<scale>-<key>/`` (:func:`relunet.run.files.keyed_path`, the
store's one naming rule), so a changed setting never reuses stale results and
an unchanged one is never recomputed.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..run.config import EngineOptions
from ..run.files import keyed_path
from ..run.store import Store

__all__ = ["SCALES", "DTYPES", "check_scale", "check_dtype", "config_dict", "preset", "Context",
           "ensure", "stored", "is_stored", "Timer"]

SCALES = ("smoke", "default", "large", "paper")
DTYPES = ("float64", "float32")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def check_dtype(dtype: str) -> str:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return dtype


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def preset(config_cls, presets: dict | None = None):
    """``config(scale, dtype)`` of an experiment: ``config_cls(scale=scale,
    **presets[scale])`` (a scale missing from ``presets`` keeps the dataclass
    defaults), with ``dtype`` (default float64) when the config has that field;
    a config without one computes nothing whose precision ``dtype`` would set."""
    presets = presets or {}
    has_dtype = "dtype" in {f.name for f in dataclasses.fields(config_cls)}

    def config(scale: str, dtype: str = "float64"):
        check_dtype(dtype)
        extra = {"dtype": dtype} if has_dtype else {}
        return config_cls(scale=check_scale(scale), **presets.get(scale, {}), **extra)
    config.__doc__ = (f"The {config_cls.__module__} config of a scale ({', '.join(SCALES)}) "
                      f"and a precision ({', '.join(DTYPES)}).")
    return config


@dataclass
class Context:
    """Where an experiment run reads and writes, and how it trains.

    store : the store root (training runs in ``runs/``, results per experiment).
    figures : folder for PNG/PDF figures and REPORT.md.
    engine : how training runs are computed (:class:`relunet.run.config.EngineOptions`).
    force : recompute the selected experiments even when stored.
    dtype : the precision the experiments compute in (``run_all.py --dtype``).
    """

    store: Path
    figures: Path
    engine: EngineOptions = field(default_factory=EngineOptions)
    force: bool = False
    dtype: str = "float64"
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.store = Path(self.store)
        self.figures = Path(self.figures)
        check_dtype(self.dtype)

    @property
    def progress(self) -> bool:
        return self.engine.progress

    def results(self, name: str, cfg) -> Store:
        """The array store of experiment ``name`` for config ``cfg``."""
        return Store(keyed_path(self.store, name, cfg.scale, config_dict(cfg)))


def is_stored(mod, cfg, ctx) -> bool:
    """Whether the store holds the results of experiment ``mod`` for ``cfg``."""
    st = ctx.results(mod.NAME, cfg)
    return st.path("config", ".json").is_file() and st.has(mod.RESULT)


def ensure(mod, cfg, ctx, force: bool = False) -> bool:
    """Compute and store experiment ``mod``'s results for ``cfg`` unless stored
    (or ``force``); returns whether it computed."""
    if is_stored(mod, cfg, ctx) and not force:
        return False
    arrays = mod.compute(cfg, dataclasses.replace(ctx, force=force))
    st = ctx.results(mod.NAME, cfg)
    st.save_array(mod.RESULT, **arrays)
    st.save_json("config", config_dict(cfg))        # last: it marks the result complete
    return True


def stored(mod, cfg, ctx) -> dict:
    """The stored arrays of experiment ``mod`` for ``cfg`` (computed first if missing)."""
    ensure(mod, cfg, ctx)
    return ctx.results(mod.NAME, cfg).load_array(mod.RESULT)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
