"""Reading a training run, finished or not (safe while it is being written).

:func:`load_run` verifies every chunk (fingerprint, item range, seeds, file
hash) and returns a :class:`RunData`; :meth:`RunData.loss_summary` is what
``relunet status`` prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import TrainConfig
from .engine import chunk_validator
from .faults import one_line
from .store import DamagedRunError, RunStore

__all__ = ["RunData", "load_run"]


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
    damaged or foreign chunk raises :class:`relunet.run.store.DamagedRunError` naming it
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
                         f"({one_line(e)}): restore it, or train into a new run "
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
