"""Beyond the paper: how each claim depends on the details the paper does not state.

G&W give no spline heights, no learning rate or momentum for their gradient
descent, and no precision beyond Keras' float32 default; their data script made
350 rows where the text describes 341 points. The project chose documented
defaults for each (the *baseline* below). This experiment trains students
again with one of those choices changed at a time and reruns the claims on
each variant, so a reader can tell a difference that comes from the paper from
one that comes from a default or from chance.

The variants (one factor at a time around the baseline)
-------------------------------------------------------
* **Baseline**: the project defaults: heights of seed 0, momentum GD with lr
  1e-3 and momentum 0.9, float64, the 341 distinct points.
* **Spline heights.** The paper's recipe is heights [0, z1 - z0, z2 - z0, 0]
  at the knots -1, -1/3, 1/3, 1 with z ~ N(0, 1)^3, and no seed: the heights
  of the paper are lost. ``heights: seed s`` (s = 1..8) are further independent
  draws of the same recipe (``construct.default_heights(s)``). Their scale
  varies a lot: each inner height is a difference of two standard normals, of
  variance 2, so a *typical* draw swings by about sqrt(2) = 1.4, as much as the
  teeth (height 1.4); our default draw (seed 0: [0, -0.26, 0.51, 0], RMS of the
  inner heights 0.41) is a flat one, about 0.3 of that. The paper's Fig. 1
  shows f as a sawtooth *and* a low-frequency spline, two components a reader
  sees side by side. We do not have the figure's image, only the paper's text,
  so its heights cannot be read off it; what the text and the recipe suggest is
  a spline of the recipe's typical size. The variant ``heights x3.47 (typical
  scale)`` keeps the default's shape and scales it to that size (RMS of the
  inner heights sqrt(2): [0, -0.89, 1.79, 0]).
* **Step size and momentum.** Keras' SGD of the time defaults to lr 0.01
  without momentum; the paper says "gradient descent with momentum" and gives
  neither. A step can settle at a point (on the quadratic model of the loss
  there) only if lr * lambda_max < 2 (1 + mu) for heavy-ball momentum mu (2 for
  plain GD; :func:`stable_lr`), lambda_max the largest Hessian eigenvalue
  there. We take it at canonical W_f, where the basin restarts start, computed
  with :mod:`relunet.hessian` for every variant's teacher and data (the report
  gives lambda_max and lr / bound per variant). Other rescalings of W_f (the
  same function) have other curvatures (the raw, un-rescaled W_f is much
  stiffer), so the bound is that of canonical W_f, not a
  theorem about the whole family; the basin restarts test it. The learning
  rates bracket these bounds, and plain GD also runs at Keras' default 0.01,
  far beyond them.
* **Precision**: float32 (the authors' Keras default) against float64.
* **Data**: the authors' 350-row set (``data.wf_training_set(variant=
  "authors350")``) against the 341 distinct points.
* **Adadelta** (Keras 2.0 defaults) at the baseline and with the typical-scale
  heights, float32 and the 350-row data: fewer variants, it has no step size
  to choose.

What is measured per variant
----------------------------
``n_students`` students from Glorot starts (the same seeds as the main runs,
so the baseline's students are the first of Figs. 2-3's, trained for fewer
steps): the share at the global minimum (final MSE below 1e-4), the best and
the median final MSE; the distance from the variant's own canonical W_f of all
students (canonical, as trained) and of the first ``n_quench`` of them after
``quench_descent`` BFGS steps and ``quench_iter`` Newton iterations of
:func:`relunet.quench.quench` (as in quench_minima; in float64
on the variant's data; the quench is the expensive part, so only a few are
quenched and the report says how many were certified); the share of both
inside the paper's shell 9.5-10.5. For the gradient-descent variants also the
basin of Fig. 5 at reduced size: ``n_restarts`` restarts from canonical W_f
plus noise of norm ~ U(0, 2), the share that returns (final MSE below 1e-4)
and the noise norm of 50% return from a logistic fit, with its delta-method
standard error (:func:`x_half_se`).

Cost at the default scale: 23 variants, 19 of them with basin restarts: about
42 million model-steps of training (1.3 million per variant, 0.64 million per
basin) and 5,520 quench iterations; the time each variant took is in the
report, the training throughput in the README (section Performance).

Every training run is its own run in the store (its TrainConfig's
fingerprint), every variant's measurements their own entry
(``<store>/ext_sensitivity/variants/<key>-<hash>``, the hash of everything that
determines them), so a rerun recomputes nothing and a changed variant
recomputes only itself. The sections of the distance shell and of the basin
(``minima_geometry``, ``fig5_basin``) cite the results through
:func:`shell_note` and :func:`basin_note`. Nothing here changes a default.

One experiment, past 300 lines because each of its 23 variants is defined,
measured and reported here, with the statistics (stability bound, standard
error of the 50% point) that its verdicts rest on.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..construct import WF_ARCH, build_wf, default_heights
from ..data import wf_training_set
from ..run.config import TrainConfig
from ..run.files import keyed_path, try_lock
from ..run.store import Store
from .frame import preset
from .students import train, usable
from .tables import claims, fmt
from .tables import table as markdown_table

NAME = "ext_sensitivity"
RESULT = "variants"
TITLE = "Beyond the paper: how the claims depend on what the paper leaves open"
NEEDS = ()   # experiments whose stored results compute() reads
#: first in run_all's second lane: long, with single-threaded stretches (the quench) that
#: fit beside the main lane's; the main lane, once done, takes the shorter ones left there
LANE_FIRST = True

#: the paper's numbers, as the figure marks them
PAPER_SHELL = (9.5, 10.5)      # "the shell of radius 9.5 to 10.5 which contains most minima"
PAPER_BASIN_RADIUS = 2.0       # the basin radius read off the NEB profiles (Fig. 4)
GROUPS = ("baseline", "heights", "step", "precision", "data")


@dataclass(frozen=True)
class Variant:
    """One set of the choices the paper leaves open."""

    key: str                       # short name: store directories and run labels
    label: str                     # for the figure and the report
    group: str                     # which unknown it varies (GROUPS)
    optimizer: str = "momentum"    # 'momentum' (lr, momentum below) | 'adadelta' (Keras 2.0)
    lr: float = 1e-3
    momentum: float = 0.9
    heights: tuple | None = None   # None: the project's default heights (seed 0)
    dtype: str = "float64"
    data: str = "distinct"         # 'distinct' (341 points) | 'authors350'

    @property
    def hyper(self) -> tuple:
        if self.optimizer == "adadelta":
            return ()
        return (("lr", float(self.lr)), ("momentum", float(self.momentum)))

    @property
    def is_gd(self) -> bool:
        return self.optimizer == "momentum"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_students: int = 128           # Glorot students per variant (main runs: 1,024)
    steps: int = 10_000             # full-batch steps (main runs: 50,000)
    n_restarts: int = 64            # basin restarts per gradient-descent variant (Fig. 5: 512)
    basin_steps: int = 10_000       # (Fig. 5: 20,000; the baseline's outcomes are the same)
    radius_lo: float = 0.0
    radius_hi: float = 2.0
    n_quench: int = 8               # students quenched per variant
    quench_descent: int = 2000      # BFGS steps per quenched student (stage 1)
    quench_iter: int = 10           # Newton iterations per quenched student (stage 2; the
    #                                 quenched distances are the descent stage's)
    seed: int = 1                   # the main runs' seed: the same Glorot starts
    basin_seed: int = 2             # Fig. 5's seed: the same noise draws
    record_every: int = 1000
    global_threshold: float = 1e-4  # final MSE below this: global minimum / returned
    shell_lo: float = PAPER_SHELL[0]
    shell_hi: float = PAPER_SHELL[1]
    height_seeds: tuple = (1, 2, 3, 4, 5, 6, 7, 8)
    typical_rms: float = math.sqrt(2.0)   # RMS of the inner heights of a typical draw
    momentum_lrs: tuple = (2.5e-4, 2e-3, 3e-3)      # with momentum 0.9, besides 1e-3
    gd_lrs: tuple = (5e-4, 1e-3, 1.5e-3, 1e-2)      # plain GD; 1e-2: Keras' SGD default
    adadelta: tuple = ("baseline", "heights-typical", "float32", "authors350")


PRESETS = {
    "smoke": dict(n_students=4, steps=200, n_restarts=6, basin_steps=200, record_every=100,
                  n_quench=2, quench_descent=50, quench_iter=2),
    "default": dict(),
    "paper": dict(n_students=1024, steps=50_000, n_restarts=512, basin_steps=20_000,
                  n_quench=64, quench_descent=20_000, quench_iter=100),
}


config = preset(Config, PRESETS)


# =============================================================================
# Small pieces, each checked against an independent computation in the tests
# =============================================================================
def stable_lr(lmax: float, momentum: float = 0.0) -> float:
    """Largest step at which heavy-ball momentum ``mu`` is stable on a quadratic of
    curvature ``lmax``: lr * lmax < 2 (1 + mu) (plain GD: mu = 0, lr < 2 / lmax).

    The iteration v <- mu v - lr g, w <- w + v on f = lmax w^2 / 2 is linear
    with characteristic polynomial z^2 - (1 + mu - lr lmax) z + mu; both roots
    lie inside the unit circle iff 0 < lr lmax < 2 (1 + mu) (for 0 <= mu < 1).
    """
    if not (np.isfinite(lmax) and lmax > 0):
        raise ValueError(f"lmax must be a finite number > 0, got {lmax!r}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must satisfy 0 <= momentum < 1, got {momentum!r}")
    return 2.0 * (1.0 + momentum) / float(lmax)


def typical_heights(rms: float = math.sqrt(2.0)) -> tuple:
    """The default heights' shape scaled so that the RMS of the two inner heights is
    ``rms`` (sqrt 2: a typical draw of the recipe, whose inner heights have variance 2)."""
    if not (np.isfinite(rms) and rms > 0):
        raise ValueError(f"rms must be a finite number > 0, got {rms!r}")
    h = default_heights(0)
    return tuple(float(v) for v in h * (rms / np.sqrt(np.mean(h[1:3] ** 2))))


def loss_numbers(loss, status, threshold: float) -> dict:
    """Share at the global minimum (final MSE < threshold), best and median MSE over
    the networks that did not diverge (status 0 and a finite loss), and the counts."""
    loss = np.asarray(loss, dtype=np.float64)
    ok = (np.asarray(status) == 0) & np.isfinite(loss)
    used = loss[ok]
    if not used.size:
        return dict(n_used=0, n_diverged=int(loss.size), share=np.nan, best=np.nan,
                    median=np.nan)
    return dict(n_used=int(used.size), n_diverged=int(loss.size - used.size),
                share=float(np.mean(used < threshold)), best=float(used.min()),
                median=float(np.median(used)))


def shell_share(dist, lo: float = PAPER_SHELL[0], hi: float = PAPER_SHELL[1]) -> float:
    """Share of the distances inside [lo, hi] (NaN for none)."""
    d = np.asarray(dist, dtype=np.float64)
    return float(np.mean((d >= lo) & (d <= hi))) if d.size else float("nan")


def x_half_se(x, fit) -> float:
    """Delta-method standard error of a logistic fit's 50% point x_half = -b0 / b1.

    Cov(b) = (X' W X)^-1 with W = diag(p (1 - p)) at the fit, X = [1, x];
    grad x_half = (-1 / b1, b0 / b1^2). NaN unless the fit's status is 'ok'.
    """
    if fit.status != "ok" or fit.coef[1] == 0:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    b0, b1 = (float(v) for v in fit.coef)
    p = 0.5 * (1.0 + np.tanh(0.5 * (b0 + b1 * x)))
    X = np.column_stack([np.ones_like(x), x])
    cov = np.linalg.inv(X.T @ (X * (p * (1.0 - p))[:, None]))
    g = np.array([-1.0 / b1, b0 / b1 ** 2])
    return float(np.sqrt(g @ cov @ g))


# =============================================================================
# Variants and their configs
# =============================================================================
def variants(cfg: Config) -> list[Variant]:
    """Every variant, the baseline first, then one factor at a time."""
    typ = typical_heights(cfg.typical_rms)
    scale = typ[2] / float(default_heights(0)[2])
    vs = [Variant("baseline", "baseline (project defaults)", "baseline")]
    vs += [Variant(f"heights-seed{s}", f"heights: seed {s}", "heights",
                   heights=tuple(float(v) for v in default_heights(s)))
           for s in cfg.height_seeds]
    vs.append(Variant("heights-typical", f"heights x{scale:.2f} (typical scale)", "heights",
                      heights=typ))
    vs += [Variant(f"momentum-lr{lr:g}", f"momentum 0.9, lr {lr:g}", "step", lr=float(lr))
           for lr in cfg.momentum_lrs]
    vs += [Variant(f"gd-lr{lr:g}", f"plain GD, lr {lr:g}"
                   + (" (Keras SGD default)" if lr == 1e-2 else ""), "step", lr=float(lr),
                   momentum=0.0) for lr in cfg.gd_lrs]
    vs.append(Variant("float32", "float32", "precision", dtype="float32"))
    vs.append(Variant("authors350", "350-row data", "data", data="authors350"))
    gd = {v.key: v for v in vs}
    for key in cfg.adadelta:
        if key not in gd:
            raise ValueError(f"adadelta variant {key!r} is not a variant; choose from "
                             f"{sorted(gd)}")
        v = gd[key]
        vs.append(Variant(f"adadelta-{key}", f"Adadelta, {v.label}", v.group,
                          optimizer="adadelta", heights=v.heights, dtype=v.dtype, data=v.data))
    keys = [v.key for v in vs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"variants must be distinct, got {keys}")
    return vs


def train_config(cfg: Config, v: Variant) -> TrainConfig:
    return TrainConfig(teacher="wf", heights=v.heights, variant=v.data,
                       optimizer=v.optimizer, hyper=v.hyper, n_models=cfg.n_students,
                       steps=cfg.steps, seed=cfg.seed,
                       record_every=min(cfg.record_every, cfg.steps), dtype=v.dtype)


def basin_config(cfg: Config, v: Variant) -> TrainConfig | None:
    """The Fig. 5 restarts of a gradient-descent variant (None for Adadelta)."""
    if not v.is_gd:
        return None
    return TrainConfig(teacher="wf", heights=v.heights, variant=v.data,
                       optimizer=v.optimizer, hyper=v.hyper, n_models=cfg.n_restarts,
                       steps=cfg.basin_steps, seed=cfg.basin_seed,
                       record_every=min(cfg.record_every, cfg.basin_steps), dtype=v.dtype,
                       init="perturb", init_radius=(cfg.radius_lo, cfg.radius_hi))


def variant_spec(cfg: Config, v: Variant) -> dict:
    """Everything that determines a variant's stored measurements."""
    b = basin_config(cfg, v)
    return {"variant": asdict(v), "train": train_config(cfg, v).to_dict(),
            "basin": None if b is None else b.to_dict(),
            "n_quench": cfg.n_quench, "quench_iter": cfg.quench_iter,
            "quench_descent": cfg.quench_descent,
            "global_threshold": cfg.global_threshold}


def variant_store(ctx, cfg: Config, v: Variant) -> Store:
    """Each variant's measurements under their own key, so that a changed variant
    recomputes only itself (a cache inside the experiment's result)."""
    return Store(keyed_path(ctx.store / NAME, "variants", v.key, variant_spec(cfg, v)))


# =============================================================================
# Compute
# =============================================================================
def compute_variant(cfg: Config, v: Variant, ctx) -> dict:
    """Train, quench and measure one variant (arrays to store)."""
    from ..hessian import eigen
    from ..quench import quench
    from ..stats import logistic_fit
    from ..symmetry import canonicalize
    t0 = time.perf_counter()
    tc = train_config(cfg, v)
    run = train(tc, ctx)
    t_train = time.perf_counter() - t0
    heights = np.array(tc.heights)
    x, t = wf_training_set(heights, variant=v.data)                    # float64
    wf_c = canonicalize(build_wf(heights)[None, :], WF_ARCH)[0]
    lmax = float(eigen(wf_c[None, :], WF_ARCH, x, t)[0, -1])
    ok = usable(run)
    W = run.W[ok].astype(np.float64)
    raw_dist = np.linalg.norm(canonicalize(W, WF_ARCH) - wf_c, axis=1)
    t1 = time.perf_counter()
    q = quench(W[:cfg.n_quench], WF_ARCH, x, t, max_iter=cfg.quench_iter,
               descent_iter=cfg.quench_descent)
    t_quench = time.perf_counter() - t1
    out = dict(loss=run.loss.astype(np.float64), status=run.status, raw_dist=raw_dist,
               q_loss0=q.loss0, q_loss=q.loss, q_moved=q.moved, q_certified=q.certified,
               q_kind=q.kind, q_dist=np.linalg.norm(canonicalize(q.W, WF_ARCH) - wf_c, axis=1),
               lmax=np.array([lmax]), heights=heights, wf_norm=np.array([np.linalg.norm(wf_c)]))
    bc = basin_config(cfg, v)
    t2 = time.perf_counter()
    if bc is not None:
        b = train(bc, ctx)
        okb = usable(b)
        r = b.init_radius[okb].astype(np.float64)
        back = (b.loss[okb] < cfg.global_threshold).astype(np.float64)
        fit = logistic_fit(r, back) if r.size >= 3 else None
        out.update(basin_radius=b.init_radius, basin_loss=b.loss.astype(np.float64),
                   basin_status=b.status,
                   basin_share=np.array([back.mean() if back.size else np.nan]),
                   basin_x_half=np.array([fit.x_half if fit else np.nan]),
                   basin_x_half_se=np.array([x_half_se(r, fit) if fit else np.nan]),
                   basin_fit_status=np.array(fit.status if fit else "no data"))
    out["seconds"] = np.array([t_train, t_quench, time.perf_counter() - t2])
    return out


def _variant_claim(ctx, cfg: Config, v: Variant, block: bool):
    """An exclusive flock on computing variant ``v`` in this store (None if another
    process holds it and ``block`` is false; without fcntl, always granted). Held
    while the variant is computed and saved, then released: whoever takes it next
    finds the summary stored."""
    return try_lock(ctx.store / NAME / "claims" / f"{cfg.scale}-{v.key}.lock", block=block)


def _compute_and_save(cfg: Config, v: Variant, ctx) -> None:
    vst = variant_store(ctx, cfg, v)
    vst.save_array("summary", **compute_variant(cfg, v, ctx))
    vst.save_json("spec", variant_spec(cfg, v))


def compute(cfg: Config, ctx) -> dict:
    """Every variant not stored yet (all with ``ctx.force``), each claimed first:
    run_all's main lane, once done with its own experiments, computes unclaimed
    variants beside this (:func:`assist`); the ones it holds are waited for here at
    the end, and computed here after all if it stopped before storing them."""
    others = []
    for v in variants(cfg):
        if variant_store(ctx, cfg, v).has("summary") and not ctx.force:
            continue
        c = _variant_claim(ctx, cfg, v, block=False)
        if c is None:
            others.append(v)
            continue
        with c:
            _compute_and_save(cfg, v, ctx)
    for v in others:
        with _variant_claim(ctx, cfg, v, block=True):
            if not variant_store(ctx, cfg, v).has("summary"):
                _compute_and_save(cfg, v, ctx)
    return {"keys": np.array([v.key for v in variants(cfg)]),
            "stores": np.array([variant_store(ctx, cfg, v).root.name for v in variants(cfg)])}


def assist(cfg: Config, ctx) -> int:
    """Compute the variants that are neither stored nor claimed, from the last, while
    :func:`compute` runs in another process (run_all's main lane helping its second);
    returns how many. Not with ``ctx.force``: a stored summary is then no sign that
    this run computed it."""
    if ctx.force:
        return 0
    n = 0
    for v in reversed(variants(cfg)):
        if variant_store(ctx, cfg, v).has("summary"):
            continue
        c = _variant_claim(ctx, cfg, v, block=False)
        if c is None:
            continue
        with c:
            if not variant_store(ctx, cfg, v).has("summary"):
                _compute_and_save(cfg, v, ctx)
                n += 1
    return n


# =============================================================================
# The table every output reads
# =============================================================================
def table(cfg: Config, ctx) -> list[dict]:
    """One row per variant: its numbers for every claim (reads the store only;
    FileNotFoundError if a variant is not computed)."""
    rows = []
    for v in variants(cfg):
        d = variant_store(ctx, cfg, v).load_array("summary")
        lmax = float(d["lmax"][0])
        row = dict(variant=v, lmax=lmax, heights=d["heights"],
                   **loss_numbers(d["loss"], d["status"], cfg.global_threshold))
        row["lr_ratio"] = (v.lr / stable_lr(lmax, v.momentum)) if v.is_gd else np.nan
        for pre, dist in (("raw", d["raw_dist"]), ("q", d["q_dist"])):
            row[f"{pre}_n"] = int(dist.size)
            row[f"{pre}_median"] = float(np.median(dist)) if dist.size else np.nan
            row[f"{pre}_lo"] = float(np.quantile(dist, 0.05)) if dist.size else np.nan
            row[f"{pre}_hi"] = float(np.quantile(dist, 0.95)) if dist.size else np.nan
            row[f"{pre}_shell"] = shell_share(dist, cfg.shell_lo, cfg.shell_hi)
        row["q_certified"] = int(np.sum(d["q_certified"]))
        row["q_drop"] = float(np.median(d["q_loss0"] - d["q_loss"])) if d["q_loss"].size \
            else np.nan
        if "basin_x_half" in d:
            row.update(basin_n=int(np.sum(d["basin_status"] == 0)),
                       basin_share=float(d["basin_share"][0]),
                       basin_x_half=float(d["basin_x_half"][0]),
                       basin_se=float(d["basin_x_half_se"][0]),
                       basin_fit=str(d["basin_fit_status"]))
        rows.append(row)
    return rows


def _stable(row) -> bool:
    return bool(row["variant"].is_gd and row["lr_ratio"] < 1.0)


def shell_reproduced_by(rows) -> list[str]:
    """Variants whose quenched points lie mostly (>= 50%) in the paper's shell."""
    return [r["variant"].label for r in rows if r["q_shell"] >= 0.5]


def _x_half(r) -> str:
    """A variant's 50% point with its standard error, or the fit's status."""
    if np.isfinite(r["basin_se"]):
        return f"{fmt(r['basin_x_half'])} +- {fmt(r['basin_se'])}"
    if np.isfinite(r["basin_x_half"]):
        return f"{fmt(r['basin_x_half'])} ({r['basin_fit']} fit: no se)"
    return f"- ({r['basin_fit']} fit)"


def _range(vals, form=fmt) -> str:
    vals = [v for v in vals if np.isfinite(v)]
    return f"{form(min(vals))}-{form(max(vals))}" if vals else "-"


# =============================================================================
# What the other sections cite
# =============================================================================
def _stored_rows(scale: str, ctx):
    try:
        cfg = config(scale)
        return cfg, table(cfg, ctx)
    except (FileNotFoundError, KeyError):
        return None, None


def shell_note(scale: str, ctx) -> str:
    """One sentence on the distance shell across the variants, or '' if not computed."""
    cfg, rows = _stored_rows(scale, ctx)
    if rows is None:
        return ""
    by = shell_reproduced_by(rows)
    return (f"Sensitivity ({NAME}, {len(rows)} variants of heights, step size, momentum, "
            f"precision, data and optimizer, {cfg.n_quench} quenched points each): median "
            f"distance of the quenched points {_range([r['q_median'] for r in rows])}, of the "
            f"students as trained {_range([r['raw_median'] for r in rows])}; share in the "
            f"shell at most {max(r['q_shell'] for r in rows):.0%} (quenched), "
            f"{max(r['raw_shell'] for r in rows):.0%} (as trained); "
            + (f"reproduced by: {', '.join(by)}." if by else
               "no variant reproduces the shell."))


def basin_note(scale: str, ctx) -> str:
    """One sentence on the GD basin across the variants, or '' if not computed."""
    cfg, rows = _stored_rows(scale, ctx)
    if rows is None:
        return ""
    gd = [r for r in rows if "basin_x_half" in r]
    stable = [r for r in gd if _stable(r)]
    unstable = [r for r in gd if not _stable(r)]
    base = next(r for r in rows if r["variant"].key == "baseline")
    text = (f"Sensitivity ({NAME}, {len(gd)} gradient-descent variants, {cfg.n_restarts} "
            f"restarts x {cfg.basin_steps:,} steps each): where the step is stable at canonical "
            f"W_f "
            f"({len(stable)} variants) the 50% point is "
            f"{_range([r['basin_x_half'] for r in stable])} (baseline {_x_half(base)}), "
            f"returns in {sum(r['basin_share'] > 0 for r in stable)} of {len(stable)}")
    if unstable:
        text += (f"; beyond its stability bound ({len(unstable)} variants) "
                 f"{sum(r['basin_share'] > 0 for r in unstable)} have any return")
    return text + "."


# =============================================================================
# Plot and report
# =============================================================================
_GROUP_COLORS = {"baseline": "k", "heights": "#1f77b4", "step": "#2ca02c",
                 "precision": "#8c564b", "data": "#e377c2"}


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import OPT_COLORS, figure, log_axis, savefig
    rows = table(cfg, ctx)
    n = len(rows)
    y = np.arange(n)[::-1]
    fig, axes = figure(5, 1, width=2.9, height=0.2 * n + 1.4, sharey=True)
    a_share, a_mse, a_dist, a_shell, a_basin = axes

    def mark(ax, r, yy, x, **kw):
        v = r["variant"]
        kw.setdefault("marker", "o" if v.is_gd else "s")
        kw.setdefault("color", OPT_COLORS[v.optimizer])
        ax.plot([x], [yy], ls="none", ms=5, **kw)
    for r, yy in zip(rows, y):
        mark(a_share, r, yy, r["share"])
        mark(a_mse, r, yy, r["best"])
        mark(a_mse, r, yy, r["median"], mfc="none")
        a_dist.plot([r["raw_lo"], r["raw_hi"]], [yy, yy], color="0.6", lw=1)
        mark(a_dist, r, yy, r["raw_median"], mfc="none")
        mark(a_dist, r, yy, r["q_median"])
        mark(a_shell, r, yy, r["raw_shell"], mfc="none")
        mark(a_shell, r, yy, r["q_shell"])
        if "basin_x_half" in r:
            if np.isfinite(r["basin_x_half"]):
                se = r["basin_se"] if np.isfinite(r["basin_se"]) else 0.0
                a_basin.plot([max(r["basin_x_half"] - se, 0), r["basin_x_half"] + se],
                             [yy, yy], color="0.6", lw=1)
                mark(a_basin, r, yy, r["basin_x_half"])
            else:
                a_basin.text(0.02, yy, "no fit: " + ("none return" if r["basin_share"] == 0
                                                     else r["basin_fit"]),
                             va="center", fontsize=6, color="0.4")
    a_share.axvline(0, color="r", lw=2, alpha=0.5, label="paper: none")
    a_share.set_xlim(-0.05, 1.05)
    a_share.set_title("(a) share at the global minimum")
    a_share.set_xlabel(f"students with MSE < {cfg.global_threshold:g}")
    log_axis(a_mse, "x")
    a_mse.set_title("(b) best (filled), median MSE")
    a_mse.set_xlabel("final MSE (the paper prints none)")
    a_dist.axvspan(cfg.shell_lo, cfg.shell_hi, color="r", alpha=0.2, label="paper's shell")
    a_dist.set_title("(c) distance from W_f")
    a_dist.set_xlabel("median: quenched (filled),\ntrained (open; 5-95%)")
    a_shell.axvline(1.0, color="r", lw=2, alpha=0.5, label="paper: most")
    a_shell.axvline(0.5, color="r", lw=0.8, ls=":")
    a_shell.set_xlim(-0.05, 1.05)
    a_shell.set_title(f"(d) share in [{cfg.shell_lo:g}, {cfg.shell_hi:g}]")
    a_shell.set_xlabel("quenched (filled), trained (open)")
    a_basin.axvline(PAPER_BASIN_RADIUS, color="r", lw=2, alpha=0.5,
                    label="paper: basin radius ~2 (NEB)")
    a_basin.set_xlim(0, cfg.radius_hi * 1.05)
    a_basin.set_title("(e) GD basin: 50% return")
    a_basin.set_xlabel("noise norm of 50% return (+- se)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="lower right")
        for yy in y[:-1]:
            ax.axhline(yy - 0.5, color="0.9", lw=0.5)
    a_share.set_yticks(y)
    a_share.set_yticklabels([r["variant"].label for r in rows], fontsize=7)
    for lab, r in zip(a_share.get_yticklabels(), rows):
        lab.set_color(_GROUP_COLORS[r["variant"].group])
    a_share.set_ylim(-0.7, n - 0.3)
    fig.suptitle(f"each claim per variant ({cfg.n_students} students x {cfg.steps:,} steps; "
                 f"circles GD, squares Adadelta); red: the paper's value", fontsize=9)
    return savefig(fig, "ext_sensitivity", ctx.figures)


def report(cfg: Config, ctx) -> str:
    rows = table(cfg, ctx)
    base = rows[0]
    lines = [f"## {TITLE}", "", "![sensitivity](ext_sensitivity.png)", "",
             f"The paper does not state its spline heights, the learning rate and momentum "
             f"of its gradient descent, its precision, or (exactly) its data. Each variant "
             f"below changes one of them against the baseline (the project's defaults) and "
             f"reruns the claims at reduced size: {cfg.n_students} students x "
             f"{cfg.steps:,} steps per variant (main runs: 1,024 x 50,000); the first "
             f"{cfg.n_quench} students of each quenched ({cfg.quench_descent:,} BFGS steps, "
             f"then {cfg.quench_iter} Newton iterations; distances of quenched points; "
             f"certified stationary: "
             f"{sum(r['q_certified'] for r in rows)} of {sum(r['q_n'] for r in rows)}); "
             f"{cfg.n_restarts} basin restarts x {cfg.basin_steps:,} steps per "
             f"gradient-descent variant (Fig. 5: 512 x 20,000). 'typical scale' is our default "
             f"spline scaled to the size of a typical draw of the paper's recipe (its "
             f"Fig. 1 shows a spline beside the teeth; the module docstring gives the "
             f"reasoning). lr/bound: the learning rate over the largest stable step at "
             f"canonical W_f, 2 (1 + momentum) / lambda_max. Distances: median "
             f"[5%, 95%] from the variant's own canonical W_f.", ""]
    body = []
    for r in rows:
        v = r["variant"]
        basin = (f"{r['basin_share']:.2f}", _x_half(r)) if "basin_x_half" in r else ("-", "-")
        body.append((
            v.label, fmt(r["lmax"]), fmt(r["lr_ratio"]) if v.is_gd else "-",
            f"{r['n_used']} ({r['n_diverged']})", f"{r['share']:.3f}", fmt(r["best"]),
            fmt(r["median"]), f"{fmt(r['raw_median'])} [{fmt(r['raw_lo'])}, {fmt(r['raw_hi'])}]",
            f"{r['raw_shell']:.0%}", f"{fmt(r['q_median'])} [{fmt(r['q_lo'])}, {fmt(r['q_hi'])}]",
            f"{r['q_shell']:.0%}", f"{r['q_certified']}/{r['q_n']}", *basin))
    lines += markdown_table(("variant", "lambda_max at W_f", "lr/bound", "used (diverged)",
                            "share at global min", "best MSE", "median MSE",
                            "distance, as trained", "in shell", "quenched: distance", "in shell",
                            "certified", "basin: returned", "50% noise norm +- se"), body)
    gd = [r for r in rows if r["variant"].is_gd]
    ada = [r for r in rows if not r["variant"].is_gd]
    found = [r["variant"].label for r in rows if r["share"] > 0]
    # Adadelta's best against GD's, pair by pair (same heights, precision and data)
    pairs = []
    for a in ada:
        v = a["variant"]
        g = next((r for r in gd if r["variant"].key == v.key.removeprefix("adadelta-")), None)
        if g is not None:
            pairs.append((v.label, a["best"], g["best"]))
    ada_wins = [p for p in pairs if p[1] < p[2]]
    by = shell_reproduced_by(rows)
    stable = [r for r in gd if _stable(r)]
    unstable = [r for r in gd if not _stable(r)]
    small = [r for r in stable if r["basin_share"] > 0
             and np.isfinite(r["basin_x_half"]) and r["basin_x_half"] < PAPER_BASIN_RADIUS / 2]
    med_range = _range([r["median"] for r in rows])
    spread = {}
    for g in GROUPS[1:]:
        meds = [r["median"] for r in gd if r["variant"].group in ("baseline", g)]
        spread[g] = max(meds) - min(meds) if meds else 0.0
    moves_most = {"heights": "spline heights", "step": "step size and momentum",
                  "precision": "precision", "data": "data"}[max(spread, key=spread.get)]
    stuck = [r for r in unstable if r["basin_share"] == 0]
    closest = min(rows, key=lambda r: abs(r["q_median"] - (cfg.shell_lo + cfg.shell_hi) / 2))
    lines += ["", *claims(
        ("no student finds the global minimum",
         f"students at the global minimum in: {', '.join(found)}" if found else
         f"share 0 in all {len(rows)} variants",
         f"yes (at {cfg.n_students} students per variant)" if not found else
         "no: it depends on " + ", ".join(found)),
        ("Adadelta's best fit beats GD's, but is not optimal",
         f"Adadelta's best below GD's in {len(ada_wins)} of {len(pairs)} matched pairs ("
         + "; ".join(f"{lab}: {fmt(a)} vs {fmt(g)}" for lab, a, g in pairs) + ")",
         "yes" if pairs and len(ada_wins) == len(pairs) else
         "no: it holds only in some pairs" if ada_wins else "no: GD's best is lower"),
        ("MSE of the fits (the paper prints none)",
         f"median MSE {med_range}, best {_range([r['best'] for r in rows])}; baseline "
         f"{fmt(base['median'])}, {fmt(base['best'])}; the median moves most with the "
         f"{moves_most}", "unknown in the paper"),
        (f"most local minima lie in the shell {cfg.shell_lo:g}-{cfg.shell_hi:g} around W_f",
         f"median distance of the quenched points {_range([r['q_median'] for r in rows])} "
         f"(as trained {_range([r['raw_median'] for r in rows])}); share in the shell at most "
         f"{max(r['q_shell'] for r in rows):.0%} quenched, "
         f"{max(r['raw_shell'] for r in rows):.0%} as trained; "
         f"closest: {closest['variant'].label} (median {fmt(closest['q_median'])})",
         f"reproduced by: {', '.join(by)}; not by the baseline" if by and base["q_shell"] < 0.5
         else f"reproduced by: {', '.join(by)}" if by else
         "no variant reproduces it: no single one of the unknowns varied here (heights, "
         "step, momentum, precision, data; one at a time) explains the difference (the "
         "paper's de-symmetrisation or its sense of 'distance' may differ)"),
        ("GD returns to W_f for small noise; the basin is small against the NEB radius ~2",
         f"50% point {_range([r['basin_x_half'] for r in stable])} in the {len(stable)} "
         f"variants whose step is stable at canonical W_f (baseline {_x_half(base)}); "
         + (f"beyond the bound ({'; '.join(r['variant'].label for r in unstable)}): share "
            f"returned {_range([r['basin_share'] for r in unstable], '{:.2f}'.format)}"
            if unstable else ""),
         ("yes, wherever the step is stable at canonical W_f" if stable and
          len(small) == len(stable) else
          f"partly: {len(small)} of {len(stable)} stable variants return with a 50% "
          f"point below {PAPER_BASIN_RADIUS / 2:g}")
         + (f"; no restart returns with a step beyond its stability bound ({len(stuck)} "
            f"of {len(unstable)} such variants)" if unstable and len(stuck) == len(unstable)
            else f"; {len(unstable) - len(stuck)} of {len(unstable)} variants beyond the "
            f"stability bound still return" if unstable else "")),
        header=("claim of the paper", "across the variants", "robust to the unknowns?"))]
    sec = [r["variant"] for r in rows]
    t = [variant_store(ctx, cfg, v).load_array("summary")["seconds"] for v in sec]
    lines += [f"Compute time of the stored variants: training {sum(s[0] for s in t):.0f} s, "
              f"quench {sum(s[1] for s in t):.0f} s, basin {sum(s[2] for s in t):.0f} s "
              f"(training runs that were already stored count as 0).", ""]
    return "\n".join(lines)
