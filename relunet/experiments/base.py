"""What every experiment shares: scales, the context of a run, config keys.

An experiment is a module with

* ``NAME``, ``TITLE``;
* ``Config``: a frozen dataclass holding every setting, seeds included, and
  ``config(scale)`` giving the preset for ``smoke`` (seconds, for the tests),
  ``default`` (every figure, statistically meaningful, ~20 minutes on 2 cores
  for all experiments together) or ``paper`` (the paper's full scale, for a
  cluster);
* ``compute(cfg, ctx)``: computes what is not yet stored, stores arrays (no
  matplotlib);
* ``plot(cfg, ctx) -> [files]``: reads the store only and writes figures;
* ``report(cfg, ctx) -> str``: reads the store only and returns a Markdown
  section of figures/REPORT.md, numbers beside the paper's claims.

Results live under ``<store>/<NAME>/<scale>-<key>/`` where ``key`` is a short
hash of the config, so a changed setting never reuses stale results and an
unchanged one is never recomputed (open_lth's ``hashname`` idea).
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..store import Store, fingerprint

SCALES = ("smoke", "default", "paper")


def check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    return scale


def config_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def config_key(cfg) -> str:
    return f"{cfg.scale}-{fingerprint(config_dict(cfg))[:10]}"


@dataclass
class Context:
    """Where an experiment run reads and writes, and how it trains.

    store : root of all stored results (runs and arrays).
    figures : folder for PNG/PDF figures and REPORT.md.
    engine : options for :func:`relunet.engine.run_training` (scheduler,
        scheduler_file, local_processes).
    force : recompute even what is stored.
    progress : show progress bars.
    """

    store: Path
    figures: Path
    engine: dict = field(default_factory=dict)
    force: bool = False
    progress: bool = True
    log: Callable[[str], None] = print

    def __post_init__(self):
        self.store = Path(self.store)
        self.figures = Path(self.figures)

    def results(self, name: str, cfg) -> Store:
        """The array store of experiment ``name`` for config ``cfg``."""
        return Store(self.store / name / config_key(cfg))

    def runs_dir(self) -> Path:
        """Training runs are shared between experiments, keyed by their own config."""
        return self.store / "runs"


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0
