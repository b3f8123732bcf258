"""A 10x10 student fits f (G&W Sec. 3.5).

"Fitting a 10x10 network to f with Adadelta quickly finds a fit very close to
the global minimum. This is because f is a far less complex function from the
perspective of a 10x10 network." Students with 10 hidden layers of 10 units
(1,021 parameters) are trained on W_f's 341 points with Adadelta and compared
with the 5x5 Adadelta students of the main experiment.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH, build_wf
from ..kernels import forward
from ..net import Arch
from ..run.config import TrainConfig
from . import fig2_fits
from .frame import preset
from .students import train, usable
from .tables import claims, fmt, quantile_table, table

NAME = "wide_10x10"
TITLE = "Sec. 3.5: a 10x10 network fitted to f with Adadelta"
NEEDS = ("fig2_fits",)   # experiments whose stored results compute() reads
RESULT = "wide"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_models: int = 48
    steps: int = 20_000
    seed: int = 3
    record_every: int = 500
    dtype: str = "float64"
    n_plot: int = 2001


PRESETS = {
    "smoke": dict(n_models=2, steps=300, record_every=100),
    "default": dict(n_models=48, steps=20_000),
    "large": dict(n_models=128, steps=20_000),
    "paper": dict(n_models=1024, steps=50_000),
}


config = preset(Config, PRESETS)


def train_config(cfg: Config) -> TrainConfig:
    return TrainConfig(teacher="wf", K=10, N=10, optimizer="adadelta", n_models=cfg.n_models,
                       steps=cfg.steps, seed=cfg.seed,
                       record_every=min(cfg.record_every, cfg.steps), dtype=cfg.dtype)


def compute(cfg: Config, ctx) -> dict:
    run = train(train_config(cfg), ctx)
    main = fig2_fits.main_runs(fig2_fits.config(cfg.scale, cfg.dtype), ctx)["adadelta"]
    arch = Arch(10, 10)
    xs = np.linspace(-1, 1, cfg.n_plot)
    ok, ok5 = usable(run), usable(main)
    loss, loss5 = run.loss[ok].astype(np.float64), main.loss[ok5].astype(np.float64)
    b, b5 = int(np.argmin(loss)), int(np.argmin(loss5))
    med = int(np.argsort(loss)[len(loss) // 2])
    return dict(xs=xs, f=forward(build_wf(), WF_ARCH, xs)[0],
                loss=run.loss.astype(np.float64), status=run.status, loss5=loss5,
                best_fit=forward(run.W[ok][b], arch, xs)[0],
                typical_fit=forward(run.W[ok][med], arch, xs)[0],
                best5_fit=forward(main.W[ok5][b5], WF_ARCH, xs)[0],
                history_median=np.nanmedian(run.history[ok], axis=0),
                history5_median=np.nanmedian(main.history[ok5], axis=0),
                record_every=np.array([min(cfg.record_every, cfg.steps)]),
                record_every5=np.array([main.config.record_every]))


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import F_COLOR, FIT_COLOR, OPT_COLORS, figure, log_axis, savefig
    d = ctx.results(NAME, cfg).load_array(RESULT)
    ok = d["status"] == 0
    fig, (a0, a1) = figure(2, 1, width=3.8, height=2.9)
    a0.plot(d["xs"], d["f"], color=F_COLOR, lw=2.2, alpha=0.5, label="f")
    a0.plot(d["xs"], d["best_fit"], color=FIT_COLOR,
            label=f"best 10x10 (MSE {fmt(d['loss'][ok].min())})")
    a0.plot(d["xs"], d["typical_fit"], color=FIT_COLOR, ls=":",
            label=f"median 10x10 (MSE {fmt(np.median(d['loss'][ok]))})")
    a0.plot(d["xs"], d["best5_fit"], color=OPT_COLORS["adadelta"], lw=0.9,
            label=f"best 5x5 (MSE {fmt(d['loss5'].min())})")
    a0.set_xlabel("x")
    a0.set_ylabel("output")
    a0.set_title("Adadelta fits of f")
    a0.set_ylim(-0.4, 2.7)                        # room for the legend above f
    a0.legend(fontsize=7, loc="upper left", ncol=2)
    s10 = np.arange(1, d["history_median"].size + 1) * int(d["record_every"][0])
    s5 = np.arange(1, d["history5_median"].size + 1) * int(d["record_every5"][0])
    a1.plot(s10, d["history_median"], color=FIT_COLOR, label="10x10 median")
    a1.plot(s5, d["history5_median"], color=OPT_COLORS["adadelta"], label="5x5 median")
    a1.set_xscale("log")
    log_axis(a1, "y")
    a1.set_xlabel("step")
    a1.set_ylabel("MSE")
    a1.set_title("learning curves (Adadelta)")
    a1.legend(fontsize=7)
    return savefig(fig, "ext_wide_10x10", ctx.figures)


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    ok = d["status"] == 0
    q, q5 = quantile_table(d["loss"][ok]), quantile_table(d["loss5"])
    better = q[0.5] < q5[0.0]
    return "\n".join([
        f"## {TITLE}", "", "![wide](ext_wide_10x10.png)", "",
        f"{int(ok.sum())} 10x10 students (1,021 parameters), Adadelta, {cfg.steps:,} steps, "
        f"{cfg.dtype}, "
        f"against the 5x5 Adadelta students of Figs. 2-3.", "",
        *table(("students", "min MSE", "median MSE", "max MSE"),
               [(name, fmt(v[0.0]), fmt(v[0.5]), fmt(v[1.0]))
                for name, v in (("10x10", q), ("5x5", q5))]), "",
        *claims(("a 10x10 network fitted with Adadelta quickly gets very close to the "
                 "global minimum",
                 f"median 10x10 MSE {fmt(q[0.5])} vs best 5x5 MSE {fmt(q5[0.0])}",
                 ("reproduced (the typical 10x10 fit beats the best 5x5 fit)" if better else
                  "differs: the typical 10x10 fit is not better than the best 5x5 fit")
                 + "; the paper gives no numbers"))])


def numbers(cfg: Config, ctx) -> list:
    """Best and median MSE of the 10x10 students (the float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    loss = d["loss"][d["status"] == 0]
    nan = float("nan")
    return [("10x10: best MSE", float(loss.min()) if loss.size else nan),
            ("10x10: median MSE", float(np.median(loss)) if loss.size else nan)]
