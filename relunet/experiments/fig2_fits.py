"""Figs. 2 and 3: what thousands of trained students of W_f learn (G&W Sec. 3.2).

Students of W_f's architecture are trained on its 341 points with momentum GD
and with Adadelta from Glorot-uniform starts (the same seeds for both
optimizers, so each start is trained both ways). Fig. 2 shows f with a typical
fit and the mean fit +- 1 standard deviation per optimizer; Fig. 3 the best
(lowest-MSE) fits; a third figure the distribution of final losses, with the
threshold below which a student counts as having found the global minimum.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH, WF_KNOTS, build_wf, default_heights
from ..kernels import forward
from .frame import preset
from .students import OPTIMIZERS, fit_summary, main_config, train, usable
from .tables import claims, fmt, quantile_table, table

NAME = "fig2_fits"
TITLE = "Figs. 2-3: mean, typical and best fits of trained 5x5 students"
NEEDS = ()   # experiments whose stored results compute() reads
RESULT = "summary"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_models: int = 1024          # students per optimizer (paper: 160,000)
    steps: int = 50_000           # full-batch steps (paper: 50K)
    seed: int = 1                 # base seed of the students' initialisation
    record_every: int = 1000
    dtype: str = "float64"
    global_threshold: float = 1e-4  # final MSE below this = found the global minimum
    n_best: int = 3               # best fits drawn per optimizer
    n_plot: int = 2001            # grid on [-1, 1] for drawing functions


PRESETS = {
    "smoke": dict(n_models=8, steps=300, record_every=100),
    "default": dict(n_models=1024, steps=50_000),
    "large": dict(n_models=16_384, steps=50_000),
    "paper": dict(n_models=160_000, steps=50_000),
}


config = preset(Config, PRESETS)


def train_configs(cfg: Config) -> dict:
    return {opt: main_config(opt, cfg.n_models, cfg.steps, cfg.seed, cfg.record_every,
                             cfg.dtype) for opt in OPTIMIZERS}


def main_runs(cfg: Config, ctx) -> dict:
    """The main training runs (trained or resumed on first use)."""
    return {opt: train(tc, ctx) for opt, tc in train_configs(cfg).items()}


def compute(cfg: Config, ctx) -> dict:
    runs = main_runs(cfg, ctx)             # resumes; a no-op when complete
    xs = np.linspace(-1, 1, cfg.n_plot)
    out = {"xs": xs, "f": forward(build_wf(), WF_ARCH, xs)[0]}
    for opt, run in runs.items():
        ok = usable(run)
        W = run.W[ok]
        loss = run.loss[ok].astype(np.float64)
        mean, sd = fit_summary(W, WF_ARCH, xs)
        order = np.argsort(loss, kind="stable")
        best = order[:cfg.n_best]
        typical = order[len(order) // 2]              # the median-loss student
        out.update({
            f"{opt}_loss": run.loss.astype(np.float64), f"{opt}_status": run.status,
            f"{opt}_mean": mean, f"{opt}_sd": sd,
            f"{opt}_best_loss": loss[best], f"{opt}_best_fit": forward(W[best], WF_ARCH, xs),
            f"{opt}_typical_loss": loss[typical:typical + 1],
            f"{opt}_typical_fit": forward(W[typical], WF_ARCH, xs)[0],
            f"{opt}_history_q": np.nanquantile(run.history[ok], [0.1, 0.5, 0.9], axis=0)
            if ok.any() else np.zeros((3, 0)),
        })
    return out


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import (
        F_COLOR,
        FIT_COLOR,
        MEAN_COLOR,
        OPT_COLORS,
        OPT_LABELS,
        figure,
        log_axis,
        mean_band,
        savefig,
    )
    d = ctx.results(NAME, cfg).load_array(RESULT)
    xs, f = d["xs"], d["f"]
    files = []
    # Fig. 2: typical fit | mean +- sd (momentum) | mean +- sd (Adadelta)
    fig, axes = figure(3, 1, width=3.4, height=2.7, sharey=True)
    axes[0].plot(xs, f, color=F_COLOR, label="f")
    axes[0].plot(xs, d["adadelta_typical_fit"], color=FIT_COLOR,
                 label=f"typical fit (median MSE {fmt(d['adadelta_typical_loss'][0])})")
    axes[0].set_title("f and a typical fit (Adadelta)")
    for ax, opt in zip(axes[1:], OPTIMIZERS):
        ax.plot(xs, f, color=F_COLOR, lw=0.8, label="f")
        mean_band(xs, d[f"{opt}_mean"], d[f"{opt}_sd"], ax=ax)
        n_ok = int(np.sum(d[f"{opt}_status"] == 0))
        ax.set_title(f"{OPT_LABELS[opt]}: mean of {n_ok:,} fits")
    for ax in axes:
        ax.set_xlabel("x")
        ax.legend(loc="upper left", fontsize=7)
    axes[0].set_ylabel("output")
    axes[0].set_ylim(-0.4, 2.5)                   # room for the legends above f
    files += savefig(fig, "fig2_mean_fit", ctx.figures)
    # Fig. 3: the best fits
    fig, axes = figure(2, 1, width=3.6, height=2.7, sharey=True)
    for ax, opt in zip(axes, OPTIMIZERS):
        ax.plot(xs, f, color=F_COLOR, label="f")
        for k, (y, mse) in enumerate(zip(d[f"{opt}_best_fit"], d[f"{opt}_best_loss"])):
            ax.plot(xs, y, color=OPT_COLORS[opt], alpha=1.0 - 0.3 * k, lw=1.0,
                    label=f"#{k + 1}: MSE {fmt(mse)}")
        ax.set_title(f"best {OPT_LABELS[opt]} fits")
        ax.set_xlabel("x")
        ax.legend(loc="upper left", fontsize=7)
    axes[0].set_ylabel("output")
    axes[0].set_ylim(-0.4, 2.6)
    files += savefig(fig, "fig3_best_fits", ctx.figures)
    # loss distributions and learning curves
    fig, (a0, a1) = figure(2, 1, width=3.6, height=2.7)
    for opt in OPTIMIZERS:
        loss = d[f"{opt}_loss"][d[f"{opt}_status"] == 0]
        loss = np.maximum(loss, 1e-12)
        bins = np.logspace(np.log10(min(loss.min(), cfg.global_threshold) / 2),
                           np.log10(loss.max() * 2), 50)
        a0.hist(loss, bins=bins, color=OPT_COLORS[opt], alpha=0.6, label=OPT_LABELS[opt])
        q = d[f"{opt}_history_q"]
        if q.size:
            steps = np.arange(1, q.shape[1] + 1) * min(cfg.record_every, cfg.steps)
            a1.fill_between(steps, q[0], q[2], color=OPT_COLORS[opt], alpha=0.25, lw=0)
            a1.plot(steps, q[1], color=OPT_COLORS[opt], label=f"{OPT_LABELS[opt]} median")
    a0.axvline(cfg.global_threshold, color=MEAN_COLOR, ls="--",
               label=f"global-minimum threshold {cfg.global_threshold:g}")
    a0.set_xscale("log")
    a0.set_xlabel("final MSE")
    a0.set_ylabel("students")
    a0.set_title("final losses")
    a0.legend(fontsize=7)
    a1.set_xscale("log")
    log_axis(a1, "y")
    a1.set_xlabel("step")
    a1.set_ylabel("MSE (median, 10-90% band)")
    a1.set_title("learning curves")
    a1.legend(fontsize=7)
    files += savefig(fig, "fig2c_loss_distribution", ctx.figures)
    return files


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    lines = [f"## {TITLE}", "",
             "![fig2](fig2_mean_fit.png)", "", "![fig3](fig3_best_fits.png)", "",
             "![loss distribution](fig2c_loss_distribution.png)", "",
             f"{cfg.n_models:,} students per optimizer (paper: 160,000), {cfg.steps:,} "
             f"full-batch steps, {cfg.dtype}; a student has found the global minimum when its "
             f"final MSE is below {cfg.global_threshold:g}.", ""]
    best = {}
    share = {}
    rows = []
    for opt in OPTIMIZERS:
        st = d[f"{opt}_status"]
        loss = d[f"{opt}_loss"][st == 0]
        q = quantile_table(loss)
        share[opt] = float(np.mean(loss < cfg.global_threshold)) if loss.size else float("nan")
        best[opt] = q[0.0]
        rows.append((opt, f"{loss.size:,} ({int(np.sum(st != 0))})", f"{share[opt]:.4f}",
                     *(fmt(q[k]) for k in (0.0, 0.01, 0.05, 0.5, 0.95, 1.0))))
    lines += table(("optimizer", "students used (diverged)", "share at global min", "min MSE",
                    "1%", "5%", "median", "95%", "max"), rows)
    # Does the mean fit follow the tooth-free part of f (spline + the sawtooth's mean
    # 1.4 / 2) rather than f? RMS distances on the plotting grid.
    xs = d["xs"]
    smooth = np.interp(xs, WF_KNOTS, default_heights()) + 0.7
    rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    to_smooth = {o: rms(d[f"{o}_mean"], smooth) for o in OPTIMIZERS}
    to_f = {o: rms(d[f"{o}_mean"], d["f"]) for o in OPTIMIZERS}
    follows = all(to_smooth[o] < 0.5 * to_f[o] for o in OPTIMIZERS)
    never = all(share[o] == 0 for o in OPTIMIZERS)
    ada_better = best["adadelta"] < best["momentum"]
    lines += ["", *claims(
        ("no student finds the high-frequency part (global minimum)",
         f"shares {share['momentum']:.4f} (GD), {share['adadelta']:.4f} (Adadelta)",
         "reproduced" if never else "differs: some students reach the global minimum"),
        ("the mean fit follows the low-frequency spline (Fig. 2)",
         "RMS distance of the mean fit to spline + 0.7 (the tooth-free part of f) vs to f: "
         + ", ".join(f"{fmt(to_smooth[o])} vs {fmt(to_f[o])} ({o})" for o in OPTIMIZERS),
         "reproduced: the mean fits are far closer to the tooth-free curve" if follows else
         "differs: a mean fit is not much closer to the tooth-free curve than to f"),
        ("best fits: Adadelta better than GD, but not optimal",
         f"best MSE {fmt(best['adadelta'])} (Adadelta) vs {fmt(best['momentum'])} (GD)",
         "reproduced" if ada_better and never else "differs"),
        ("MSE values of the fits", "the paper prints none", "unknown in the paper"))]
    return "\n".join(lines)


def numbers(cfg: Config, ctx) -> list:
    """Share at the global minimum, best and median final MSE, diverged students,
    per optimizer (the float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    out = []
    for opt in OPTIMIZERS:
        st = d[f"{opt}_status"]
        loss = d[f"{opt}_loss"][st == 0]
        out += [(f"{opt}: share at the global minimum",
                 float(np.mean(loss < cfg.global_threshold)) if loss.size else float("nan")),
                (f"{opt}: best MSE", float(loss.min()) if loss.size else float("nan")),
                (f"{opt}: median MSE", float(np.median(loss)) if loss.size else float("nan")),
                (f"{opt}: diverged", int(np.sum(st != 0)))]
    return out
