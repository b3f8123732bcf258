"""The trained students several experiments share: training runs and their summaries.

The main experiment of G&W (Sec. 3.1-3.2) trains students of W_f with momentum
GD and with Adadelta; Figs. 2-4, the Hessian spectra and the geometry of the
minima all read those same runs. A run is stored where ``relunet train`` would
put it (:func:`relunet.run.config.run_dir`: ``<store>/runs/<label>-<key>``)
and trained (or resumed) on first use.
"""
from __future__ import annotations

import numpy as np

from ..kernels import forward
from ..run.config import TrainConfig, run_dir
from ..run.engine import run_training
from ..run.rundata import load_run

__all__ = ["OPTIMIZERS", "train", "main_config", "usable", "fit_summary"]

#: the two optimizers, with Keras 2.0's defaults (TrainConfig fills them in)
OPTIMIZERS = ("momentum", "adadelta")


def train(cfg: TrainConfig, ctx):
    """Train (or resume, or just load) a run; returns its RunData."""
    path = run_dir(ctx.store, cfg)
    run_training(cfg, path, **ctx.engine.kwargs())
    return load_run(path)


def main_config(optimizer: str, n_models: int, steps: int, seed: int,
                record_every: int, dtype: str = "float64", teacher: str = "wf",
                K: int = 5, N: int = 5) -> TrainConfig:
    return TrainConfig(teacher=teacher, K=K, N=N, optimizer=optimizer, n_models=n_models,
                       steps=steps, seed=seed, record_every=min(record_every, steps),
                       dtype=dtype)


def usable(run) -> np.ndarray:
    """Mask of networks that finished with finite loss (diverged ones are excluded
    from every aggregate and counted in the report)."""
    return (run.status == 0) & np.isfinite(run.loss)


def fit_summary(W, arch, xs, batch: int = 4096):
    """Mean and standard deviation of the fitted functions on ``xs`` over networks,
    accumulated in batches (a paper-scale run has 160,000 networks)."""
    n = W.shape[0]
    s1 = np.zeros(xs.size)
    s2 = np.zeros(xs.size)
    for i in range(0, n, batch):
        Y = forward(W[i:i + batch].astype(np.float64), arch, xs)
        s1 += Y.sum(axis=0)
        s2 += (Y * Y).sum(axis=0)
    mean = s1 / max(n, 1)
    var = np.maximum(s2 / max(n, 1) - mean ** 2, 0.0)
    return mean, np.sqrt(var)
