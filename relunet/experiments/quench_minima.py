"""Quenched minima: from trained students to certified stationary points (issue 8).

Training stops after a step budget, not at a critical point. Before the
landscape experiments (Fig. 4, the Hessian spectra, the geometry of the
minima, the disconnectivity graph) use the students as "local minima", each
is quenched (relunet.quench: batched BFGS with a weak-Wolfe line search
down the long descents, then Newton steps on the loss's piecewise model and
along the kinks the point sits on, the loss never increasing) until it
carries a stationarity certificate (smooth: |grad| <= 1e-9 off all kinks;
kink: Clarke measure <= 1e-9) or its iteration budget is spent. Every point
is then classified (minimum, saddle, kink minimum, ...) and de-symmetrised
(relunet.symmetry.canonicalize) for the distance and path experiments. Figs.
2-3 keep the raw students: that is what training gives.

In float32 (``run_all.py --dtype float32``) the students are the float32 main
runs, and the quench is its BFGS stage on the float32 loss, the point
rounded to float32, then certified and classified in float64 as it is; the
Newton stage is not run (a float64 instrument: a float32 point cannot meet a
1e-9 certificate; :func:`relunet.experiments.precision.quench_float32`).

``quenched(scale, ctx, dtype)`` hands the stored result to the other experiments.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH, build_wf
from ..data import wf_training_set
from ..hessian import hessian
from ..kinks import preactivations
from ..knots import steepest_piece
from ..quench import (
    EPS_ON,
    GAP,
    GTOL,
    TAU,
    certify,
    classify,
    near_stationarity,
    probe,
    quench,
)
from ..symmetry import canonicalize
from . import fig2_fits
from .frame import preset, stored
from .precision import quench_float32
from .students import OPTIMIZERS, main_config, usable
from .tables import CLAIM, claims, fmt, spread, table

NAME = "quench_minima"
TITLE = "Quenched minima: certified stationary points below the trained students"
NEEDS = ("fig2_fits",)   # experiments whose stored results compute() reads
RESULT = "quench"

NEAR = 1e-6       #: "stationary to this" in the report's account of the uncertified points

#: the first stage's methods, as the report names them
_METHOD = {"bfgs": "BFGS (weak-Wolfe line search)", "lbfgs": "L-BFGS (backtracking)"}

TYPES = ("minimum", "kink-minimum", "degenerate-kink", "saddle", "kink-saddle", "uncertified")


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_networks: tuple = (("momentum", 300), ("adadelta", 50))   # first usable students
    descent_iter: int = 10000     # BFGS steps per network at most (stage 1)
    max_iter: int = 10            # Newton iterations per network at most (stage 2)
    polish_iter: int = 30         # polish steps per network at most (stage 3; 0: none)
    gtol: float = GTOL
    eps_on: float = EPS_ON
    gap: float = GAP
    descent: str = "bfgs"         # stage 1: relunet.quench.descend's method
    dtype: str = "float64"        # float32: the float32 students, BFGS on the float32 loss


PRESETS = {
    "smoke": dict(n_networks=(("momentum", 4), ("adadelta", 4)), descent_iter=100,
                  max_iter=20),
    # the descent runs on the vector kernel, Newton on dense Hessians (8-10 ms per network
    # and iteration). Measured with L-BFGS on 40 students: 2,000 + 100 certified 4,
    # 10,000 + 30 3, 20,000 + 30 5 (in the time of 2,000 + 100). With BFGS on the 150:
    # 10,000 + 30 certified 29 in 68 s, 20,000 + 30 28 in 87 s
    # 300 momentum students: about a third certify, enough for Fig. 4's 100 bands to end
    # at certified minima (fig4_neb._chosen). Newton budget, on the 350 default students
    # after their 10,000 BFGS steps (2026-12-03): 30 iterations certified 125 (119 minima,
    # 5 kink saddles, 1 open) in 71.6 s, 10 the same 125 and types in 34.4 s, 5 certified
    # 122: the points that certify do so within 10 (their median: 4); the rest crawl
    "default": dict(n_networks=(("momentum", 300), ("adadelta", 50)), descent_iter=10000,
                    max_iter=10),
    # paper: 2,000 x 100,000 BFGS steps ~2-3 h, 2,000 x 200 Newton iterations ~1 h here
    "paper": dict(n_networks=(("momentum", 1000), ("adadelta", 1000)), descent_iter=100000,
                  max_iter=200),
}


config = preset(Config, PRESETS)


#: radii of the random probes around the certified points (relunet.quench.probe)
PROBE_RADII = (1e-6, 1e-4, 1e-2)
#: a probe lower than this (relative) counts: float64 rounding of a 341-point loss is ~1e-15
PROBE_TOL = 1e-12

#: the QuenchResult fields stored per optimizer
_FIELDS = ("W", "loss0", "loss", "moved", "iterations", "certified", "descent_iterations",
           "kind", "measure", "n_kinks", "reason", "polished")


def compute(cfg: Config, ctx) -> dict:
    runs = fig2_fits.main_runs(fig2_fits.config(cfg.scale, cfg.dtype), ctx)
    x, t = wf_training_set()
    # both optimizers' students in ONE quench (rows are independent: the same bits as
    # one call each, and half the descent's bookkeeping per step), then split again
    picks, W0s = [], []
    for opt, n in dict(cfg.n_networks).items():
        run = runs[opt]
        ok = usable(run)
        W0s.append(run.W[ok][:n].astype(np.float64))
        picks.append((opt, run.index[ok][:n]))
    ends = np.cumsum([0] + [len(w) for w in W0s])
    W0_all = np.concatenate(W0s)
    bar = None
    if ctx.progress:
        from tqdm import tqdm
        bar = tqdm(total=len(W0_all), desc="quench", unit="net", leave=False)

    def progress(done, total):
        if bar is not None:
            bar.n = done
            bar.refresh()
    if cfg.dtype == "float64":
        r = quench(W0_all, WF_ARCH, x, t, max_iter=cfg.max_iter,
                   descent_iter=cfg.descent_iter, descent=cfg.descent, gtol=cfg.gtol,
                   eps_on=cfg.eps_on, gap=cfg.gap, polish_iter=cfg.polish_iter,
                   progress=progress)
        q_all = {k: getattr(r, k) for k in _FIELDS}
    else:
        q_all = quench_float32(W0_all, WF_ARCH, x, t, cfg.descent_iter, cfg.gtol, cfg.eps_on,
                               cfg.gap, data32=wf_training_set(dtype=np.float32),
                               descent=cfg.descent, progress=progress)
    if bar is not None:
        bar.close()
    cert_all = q_all.pop("cert", None) or certify(q_all["W"], WF_ARCH, x, t, cfg.gtol,
                                                  cfg.eps_on, cfg.gap)
    cl_all = classify(q_all["W"], WF_ARCH, x, t, cert_all)
    raw_all = certify(W0_all, WF_ARCH, x, t, cfg.gtol, cfg.eps_on, cfg.gap)
    # what the uncertified points are, and how sharp: the largest Hessian eigenvalue
    # before and after (momentum GD cannot rest where it exceeds 2 (1 + beta) / lr)
    near_all = near_stationarity(q_all["W"], WF_ARCH, x, t)
    # random probes around the certified points: an independent check of their types
    probe_all = np.full((len(q_all["W"]), len(PROBE_RADII)), np.nan)
    c_all = np.flatnonzero(cert_all["certified"])
    probe_all[c_all] = probe(q_all["W"][c_all], WF_ARCH, x, t, PROBE_RADII)
    lmax_all = np.linalg.eigvalsh(hessian(q_all["W"], WF_ARCH, x, t))[:, -1]
    lmax0_all = np.linalg.eigvalsh(hessian(W0_all, WF_ARCH, x, t))[:, -1]
    out = {}
    for k, ((opt, index), W0) in enumerate(zip(picks, W0s)):
        sl = slice(ends[k], ends[k + 1])
        q = {f: v[sl] for f, v in q_all.items()}
        if "loss64" in q:
            out[f"{opt}_loss64"] = q.pop("loss64")
        out.update({f"{opt}_{f}": q[f] for f in _FIELDS if f != "W"})
        out.update({
            f"{opt}_index": index, f"{opt}_W0": W0, f"{opt}_W": q["W"],
            f"{opt}_Wc": canonicalize(q["W"], WF_ARCH), f"{opt}_W0c": canonicalize(W0, WF_ARCH),
            f"{opt}_type": cl_all["type"][sl], f"{opt}_index_neg": cl_all["index"][sl],
            f"{opt}_n_flat": cl_all["n_flat"][sl],
            f"{opt}_flat_creases": cl_all["n_flat_creases"][sl],
            f"{opt}_pieces": cl_all["pieces"][sl],
            f"{opt}_margin": cl_all["margin"][sl],
            f"{opt}_raw_measure": raw_all["measure"][sl],
            f"{opt}_raw_certified": raw_all["certified"][sl],
            f"{opt}_near_measure": near_all["measure"][sl],
            f"{opt}_near_ridges": near_all["ridges"][sl],
            f"{opt}_near_falls": near_all["falls"][sl],
            f"{opt}_lmax": lmax_all[sl], f"{opt}_lmax0": lmax0_all[sl],
            f"{opt}_probe": probe_all[sl]})
        # the steepest linear piece of each function on [-1, 1], before and after, and
        # whether it fits between two training points (the loss cannot see it)
        for key, Ws in (("steep0", W0), ("steep", q["W"])):
            sp = np.array([steepest_piece(w, WF_ARCH, x) for w in Ws]).reshape(-1, 3)
            out[f"{opt}_{key}"], out[f"{opt}_{key}_hidden"] = sp[:, 0], sp[:, 2] > 0
        if opt == "momentum":                 # the main runs' step: lr and momentum beta
            sgd = main_config(opt, 1, 1, 0, 1).make_optimizer()
            out["momentum_gd_bound"] = 2.0 * (1.0 + sgd.momentum) / sgd.lr
    out["wf_c"] = canonicalize(build_wf()[None, :], WF_ARCH)[0]
    return out


#: quench types that are minima (certified)
MINIMUM_TYPES = ("global-minimum", "minimum", "kink-minimum")


def preference(types, certified) -> np.ndarray:
    """Rank of each quenched point: 0 certified minimum, 1 certified but of open
    type (degenerate kink), 2 uncertified, 3 certified saddle (never taken)."""
    types = np.asarray(types).astype(str)
    certified = np.asarray(certified, dtype=bool)
    rank = np.full(types.size, 2)
    rank[certified] = 1
    rank[certified & np.isin(types, MINIMUM_TYPES)] = 0
    rank[certified & (np.char.find(types, "saddle") >= 0)] = 3
    return rank


def select(types, certified, n) -> np.ndarray:
    """Indices of the n preferred points (by rank, then by original order)."""
    rank = preference(types, certified)
    order = np.lexsort((np.arange(rank.size), rank))
    return order[rank[order] < 3][:n]


def quenched(scale: str, ctx, dtype: str = "float64") -> dict:
    """The stored quench of a precision (computed first if missing): arrays keyed
    ``<opt>_<field>``."""
    return stored(sys.modules[__name__], config(scale, dtype), ctx)


def optimizers(d) -> list[str]:
    return [o for o in OPTIMIZERS if f"{o}_W" in d]


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import OPT_COLORS, OPT_LABELS, figure, savefig
    d = ctx.results(NAME, cfg).load_array(RESULT)
    fig, (a, b, c) = figure(3, 1, width=3.3, height=2.9)
    lo = min(min(d[f"{o}_loss"].min(), d[f"{o}_loss0"].min()) for o in optimizers(d))
    hi = max(d[f"{o}_loss0"].max() for o in optimizers(d))
    for opt in optimizers(d):
        a.scatter(d[f"{opt}_loss0"], d[f"{opt}_loss"], s=8, alpha=0.6, color=OPT_COLORS[opt],
                  label=OPT_LABELS[opt])
        b.hist(d[f"{opt}_moved"], bins=25, alpha=0.55, color=OPT_COLORS[opt],
               label=OPT_LABELS[opt])
    a.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", label="no change")
    a.set_xlabel("MSE of the trained student")
    a.set_ylabel("MSE after quenching")
    a.set_title("(a) the quench keeps descending")
    a.legend(fontsize=7)
    b.set_xlabel("distance moved by the quench")
    b.set_ylabel("networks")
    b.set_title("(b) how far the students were from rest")
    b.legend(fontsize=7)
    for opt in optimizers(d):
        m0 = np.maximum(d[f"{opt}_raw_measure"], 1e-17)
        m1 = np.maximum(d[f"{opt}_measure"], 1e-17)
        c.scatter(m0, m1, s=8, alpha=0.6, color=OPT_COLORS[opt], label=OPT_LABELS[opt])
    c.axhline(cfg.gtol, color="k", lw=0.8, ls=":", label=f"certificate: {cfg.gtol:g}")
    c.set_xscale("log")
    c.set_yscale("log")
    c.set_xlabel("stationarity measure of the student")
    c.set_ylabel("after quenching")
    c.set_title("(c) (Clarke) gradient measure")
    c.legend(fontsize=7)
    return savefig(fig, "ext_quench", ctx.figures)


def type_counts(d, opt) -> dict:
    ty = d[f"{opt}_type"]
    return {k: int(np.sum(ty == k)) for k in TYPES + ("global-minimum",) if np.any(ty == k)}


def _margin(d, o) -> str:
    """How many certified points' types rest on a curvature near the tolerance, by type."""
    mg = d[f"{o}_margin"].astype(bool)
    if not mg.any():
        return "0"
    types = d[f"{o}_type"].astype(str)[mg]
    return f"{int(mg.sum())}: " + ", ".join(f"{k} {int(np.sum(types == k))}"
                                            for k in np.unique(types))


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    how = (f"The first students of each main run quenched (relunet.quench) in three stages: "
           f"at most {cfg.descent_iter} batched {_METHOD[cfg.descent]} steps down the long "
           f"descents, then at most {cfg.max_iter} Newton iterations to finish at the kinks "
           f"and certify (on the loss's piecewise model, or, near a kink minimum, "
           f"sequential quadratic programming along the kinks the point sits on), then, "
           f"for the points still uncertified but nearly stationary, at most "
           f"{cfg.polish_iter} polish steps: every pre-activation within 1e-6 of its kink "
           f"put onto it (moves of about 1e-9) and the point finished there by the same SQP "
           f"steps, taken only if the loss, evaluated in extended precision, does not rise."
           if cfg.dtype == "float64" else
           f"float32: the first students of each float32 main run descend by at most "
           f"{cfg.descent_iter} batched {_METHOD[cfg.descent]} steps on the float32 loss "
           f"(relunet.quench's "
           f"first stage; energies and gradients in float32 at the float32-rounded point), "
           f"and the final point, rounded to float32, is certified and classified in "
           f"float64 as it is; the Newton stage is not run (a float32 point cannot meet a "
           f"{cfg.gtol:g} certificate: relunet/experiments/precision.py). MSE values are "
           f"float32 losses.")
    lines = [f"## {TITLE}", "", "![quench](ext_quench.png)", "",
             f"{how} Certificate: smooth (|grad| <= {cfg.gtol:g}, no "
             f"pre-activation within {cfg.gap:g} of its kink) or kink (every pre-activation "
             f"on its kink, |z| <= {cfg.eps_on:g}, or farther than {cfg.gap:g}; the kink "
             f"families' normals independent; Clarke measure <= {cfg.gtol:g}). Values: "
             "median [10%, 90%].", "",
             "Types (relunet.quench.classify): at a smooth point the Hessian's eigenvalues "
             "without the rescaling modes; at a kink point first the creases: V-shaped ones "
             "(the loss rises on both sides) are held, one the loss falls across makes a "
             "kink saddle, and the Hessian along the held creases must have no negative "
             "curvature. A crease flat to first order on a side (its backpropagated error "
             "dL/dh is 0, e.g. a unit whose output weight or data point's residual vanishes) "
             "is settled at second order: the Hessian of every piece of the flat sides "
             "(2^k for k such creases, added up point by point) positive semidefinite on the "
             "held creases' tangent space, a kink minimum; a negative curvature inside its "
             "own piece's side, a kink saddle; otherwise, or beyond 2^16 pieces, the point "
             "stays a 'degenerate kink'. As for the smooth points, zero curvatures "
             "(flat directions such as dead units) are allowed in a minimum: the test is "
             "second order.", ""]
    opts = optimizers(d)
    wf_steep = steepest_piece(build_wf(), WF_ARCH)[0]     # W_f's teeth, the reference slope

    def row(name, f):
        return (name, *(f(o) for o in opts))
    lines += table(("", *opts), [
        row("networks quenched", lambda o: str(len(d[f"{o}_loss"]))),
        row("students certified stationary before quenching",
            lambda o: f"{int(d[f'{o}_raw_certified'].sum())}; measure "
                      f"{spread(d[f'{o}_raw_measure'])}"),
        row("certified after quenching", lambda o: f"{int(d[f'{o}_certified'].sum())} "
            f"({np.mean(d[f'{o}_certified']):.0%})"),
        row("types after quenching", lambda o: ", ".join(f"{k} {v}" for k, v in
                                                         type_counts(d, o).items())),
        *([row("kink points with creases flat to first order: settled as kink minima, "
               "kink saddles, open; pieces tested", lambda o: _second_order(d, o))]
          if f"{opts[0]}_flat_creases" in d else []),
        *([row("types that rest on a curvature near the zero tolerance (a negative one "
               "or not, depending on a tolerance 10x tighter or looser than 1e-8 of the "
               "largest)", lambda o: _margin(d, o))]
          if f"{opts[0]}_margin" in d else []),
        *([row(f"steepest slope of the function on [-1, 1] (W_f: "
                f"{wf_steep:.3g}): as trained -> quenched",
                lambda o: f"{spread(d[f'{o}_steep0'])} -> {spread(d[f'{o}_steep'])}"),
            row("quenched: that steepest piece fits between two training points "
                "(none inside it); certified, uncertified",
                lambda o: _hidden(d, o))] if f"{opts[0]}_steep" in d else []),
        *([row("random probes (200 directions per radius, relunet.quench.probe): minima, "
               "then saddles, with a probe lower by more than 1e-12 (relative) at radius "
               + " / ".join(f"{r:g}" for r in PROBE_RADII), lambda o: _probes(d, o))]
          if f"{opts[0]}_probe" in d else []),
        row("constant networks (MSE var(t) before and after: a layer off at every "
            "point); their types", lambda o: _constant(d, o)),
        row("MSE before", lambda o: spread(d[f"{o}_loss0"])),
        row("MSE after", lambda o: spread(d[f"{o}_loss"])),
        row("MSE decrease", lambda o: spread(d[f"{o}_loss0"] - d[f"{o}_loss"])),
        row("distance moved", lambda o: spread(d[f"{o}_moved"])),
        row("measure after (uncertified ones)", lambda o: spread(d[f"{o}_measure"][
            ~d[f"{o}_certified"]]) if np.any(~d[f"{o}_certified"]) else "-"),
        row(f"{cfg.descent.upper()} steps (stage 1)",
            lambda o: spread(d[f"{o}_descent_iterations"])),
        row("Newton iterations (stage 2)", lambda o: spread(d[f"{o}_iterations"]))]
        + ([row("certified by the polish (stage 3); its steps",
                lambda o: f"{int(np.sum(d[f'{o}_polished'] >= 0))}; "
                          f"{spread(d[f'{o}_polished'][d[f'{o}_polished'] >= 0])}")]
           if cfg.dtype == "float64" and f"{opts[0]}_polished" in d else [])
        + ([row("float64 MSE at the float32 point", lambda o: spread(d[f"{o}_loss64"]))]
           if cfg.dtype == "float32" else []))
    reasons = {}
    for o in opts:
        for r in d[f"{o}_reason"][~d[f"{o}_certified"]]:
            key = "stalled (no step of the model lowers the loss)" if r.startswith("stalled") \
                else "iteration budget spent"
            reasons[key] = reasons.get(key, 0) + 1
    stationary = {o: float(np.mean(d[f"{o}_raw_certified"])) for o in opts}
    if f"{opts[0]}_steep" in d:
        lines += ["", _cliffs(d, opts, wf_steep)]
    lines += ["", "Why the rest are not certified: " + (", ".join(
        f"{k}: {v}" for k, v in reasons.items()) or "-") + ".", "", *_uncertified(d, opts), "",
        *claims(
            ("the trained students are local minima (Sec. 3.2)",
             "; ".join(f"{o}: {int(d[f'{o}_raw_certified'].sum())} of {len(d[f'{o}_loss'])} "
                       f"students are certified stationary points; quenching lowers the MSE by "
                       f"{fmt(np.median(d[f'{o}_loss0'] - d[f'{o}_loss']))} (median, up to "
                       f"{fmt(np.max(d[f'{o}_loss0'] - d[f'{o}_loss']))}) and moves them "
                       f"{fmt(np.median(d[f'{o}_moved']))}" for o in opts),
             "reproduced: most students are at rest" if min(stationary.values()) >= 0.5
             else "differs: the students are not at rest (not stationary, still descending "
             "under a second-order method); the landscape experiments use the quenched "
             "points, and only the certified ones are called minima"),
            ("the quenched points are minima",
             "; ".join(f"{o}: " + ", ".join(f"{k} {v}" for k, v in type_counts(d, o).items())
                       for o in opts),
             _verdict_minima(d, opts)), header=CLAIM)]
    return "\n".join(lines)


def _cliffs(d, opts, wf) -> str:
    """What the quench does to the functions: the steepest pieces, in words."""
    s0 = np.concatenate([d[f"{o}_steep0"] for o in opts])
    s1 = np.concatenate([d[f"{o}_steep"] for o in opts])
    hid = np.concatenate([d[f"{o}_steep_hidden"] for o in opts]).astype(bool)
    c = np.concatenate([d[f"{o}_certified"] for o in opts]).astype(bool)
    trained = ", ".join(f"{o} {fmt(np.median(d[f'{o}_steep0']))}" for o in opts)
    return (f"In function space: the steepest linear piece of the trained students' "
            f"functions is a median {trained} (W_f's teeth: {wf:.3g}; median "
            f"{fmt(np.median(s0))} over all); the quench, lowering the MSE further, makes them "
            f"steep "
            f"(median {fmt(np.median(s1))}, {int(np.sum(s1 > wf))} of {s1.size} steeper than "
            f"W_f, up to {fmt(s1.max())}), and for {int(hid.sum())} of {hid.size} the "
            f"steepest piece lies between two training points, where no data constrain it: "
            f"cliffs squeezed into the gaps of the grid (exact linear regions, "
            f"relunet.knots.steepest_piece). The lower points the descents reach are far "
            f"steeper than what either optimizer's training produces (the implicit "
            f"regularisation of training, seen in the function)"
            + (f"; the uncertified ones are "
               f"{'the steeper' if np.median(s1[~c]) > np.median(s1[c]) else 'not steeper'} "
               f"(median {fmt(np.median(s1[~c]))} against {fmt(np.median(s1[c]))} at the "
               f"certified)." if c.any() and (~c).any() else "."))


def _hidden(d, o) -> str:
    c = d[f"{o}_certified"].astype(bool)
    h, s = d[f"{o}_steep_hidden"].astype(bool), d[f"{o}_steep"]
    return "; ".join(f"{name} {int(h[sel].sum())} of {int(sel.sum())} (median slope "
                     f"{fmt(np.median(s[sel])) if sel.any() else '-'})"
                     for name, sel in (("certified", c), ("uncertified", ~c)))


def _probes(d, o) -> str:
    ty, pr = d[f"{o}_type"].astype(str), d[f"{o}_probe"]
    parts = []
    for name, sel in (("minima", np.isin(ty, MINIMUM_TYPES)),
                      ("saddles", np.char.find(ty, "saddle") >= 0)):
        low = pr[sel] < -PROBE_TOL
        parts.append(f"{name} " + " / ".join(str(int(v)) for v in low.sum(axis=0))
                     + f" of {int(sel.sum())}")
    return "; ".join(parts)


def _constant(d, o) -> str:
    var_t = float(np.var(wf_training_set()[1]))
    dead = (np.abs(d[f"{o}_loss0"] - var_t) <= 1e-9 * var_t) & \
        (np.abs(d[f"{o}_loss"] - var_t) <= 1e-9 * var_t)
    ty, n = np.unique(d[f"{o}_type"][dead], return_counts=True)
    return f"{int(dead.sum())}" + (": " + ", ".join(f"{k} {v}" for k, v in zip(ty, n))
                                   if dead.any() else "")


def _second_order(d, o) -> str:
    flat = d[f"{o}_flat_creases"] > 0
    ty = d[f"{o}_type"][flat]
    return (f"{int(flat.sum())}: {int(np.sum(ty == 'kink-minimum'))}, "
            f"{int(np.sum(ty == 'kink-saddle'))}, {int(np.sum(ty == 'degenerate-kink'))}; "
            + (spread(d[f"{o}_pieces"][flat]) if flat.any() else "-"))


def _verdict_minima(d, opts) -> str:
    if f"{opts[0]}_near_measure" not in d:
        return ("unknown for the uncertified majority: the quench's budget ends before a "
                "certificate (see the reasons above)")
    u = np.concatenate([~d[f"{o}_certified"] for o in opts])
    near = np.concatenate([d[f"{o}_near_measure"] for o in opts])[u] <= NEAR
    ridge = np.concatenate([_falling(d, o) for o in opts])[u] > 0
    ty = np.concatenate([d[f"{o}_type"] for o in opts])[~u]
    mins = int(np.sum(np.isin(ty, ("minimum", "kink-minimum", "global-minimum"))))
    return (f"{mins} of the {int((~u).sum())} certified points are minima (to second order: "
            f"{int(np.sum(ty == 'minimum'))} smooth, {int(np.sum(ty == 'kink-minimum'))} on "
            f"kinks), {int(np.sum(np.char.find(ty.astype(str), 'saddle') >= 0))} saddles, "
            f"{int(np.sum(ty == 'degenerate-kink'))} left open; "
            f"only the certified ones are shown to be stationary; of the {int(u.sum())} "
            f"uncertified, {int(np.sum(near & ridge))} are nonsmooth saddles (stationary "
            f"to {NEAR:g} on a crease the loss falls across), {int(np.sum(near & ~ridge))} "
            f"minimum candidates (stationary to {NEAR:g}, no such crease) and "
            f"{int(np.sum(~near))} not near a stationary point after the budget (see above)")


def _falling(d, o):
    """Per point, the creases within TAU that the loss falls across (ridges and one-sided
    ones, relunet.quench._falls); stores written before they were counted: the ridges."""
    return d[f"{o}_near_falls"] if f"{o}_near_falls" in d else d[f"{o}_near_ridges"]


def _uncertified(d, opts) -> list[str]:
    """What the uncertified points are (relunet.quench.near_stationarity) and how sharp
    the quenched points are, as report lines."""
    if f"{opts[0]}_near_measure" not in d:
        return []
    rows = []
    for o in opts:
        u = ~d[f"{o}_certified"]
        near = d[f"{o}_near_measure"][u] <= NEAR
        ridge = _falling(d, o)[u] > 0
        rows.append((o, int(u.sum()), int(np.sum(near & ridge)), int(np.sum(near & ~ridge)),
                     int(np.sum(~near))))
    lines = [f"What the uncertified points are, every pre-activation within {TAU:g} of its "
             f"kink counted as on it (relunet.quench.near_stationarity): Clarke-stationary to "
             f"{NEAR:g} on a crease the loss falls across (on both sides, a ridge, or on one: "
             f"a nonsmooth saddle, not a minimum), Clarke-stationary to {NEAR:g} with no such "
             f"crease (minimum "
             f"candidates that the certificate's rules, a pre-activation between 1e-10 and "
             f"1e-6 or a measure above 1e-9, still reject), or farther from stationary.", "",
             "| | uncertified | stationary to 1e-6, on a falling crease | stationary to 1e-6, "
             "no falling crease | farther |", "|---|---|---|---|---|"]
    lines += [f"| {o} | {n} | {a} | {b} | {c} |" for o, n, a, b, c in rows]
    x = wf_training_set()[0]
    far = []
    for o in opts:
        u = ~d[f"{o}_certified"]
        m = d[f"{o}_near_measure"][u] > NEAR
        z = np.abs(preactivations(d[f"{o}_W"][u][m], WF_ARCH, x)).reshape(int(m.sum()), -1)
        far.append((d[f"{o}_near_measure"][u][m], d[f"{o}_lmax"][u][m],
                    z.min(axis=1) if z.size else np.zeros(0)))
    g, lam, zmin = (np.concatenate(v) for v in zip(*far))
    fin = np.isfinite(g)
    if fin.any():
        lines += ["", f"The {g.size} farther from stationary: gradient measure {spread(g[fin])}, "
                  f"largest Hessian eigenvalue {spread(lam)}; along a gradient of that size a "
                  f"step may be only about measure / eigenvalue = {spread(g[fin] / lam[fin])} "
                  f"long before the loss turns up, and the nearest kink lies at a "
                  f"pre-activation of {spread(zmin)}: the descent crawls in the sharp creases "
                  f"it has run into."]
    lines += ["", "Sharpness: the largest eigenvalue of the exact Hessian (median [10%, 90%]).",
              "", "| | students as trained | quenched, certified | quenched, uncertified |",
              "|---|---|---|---|"]
    for o in opts:
        c = d[f"{o}_certified"]
        lines.append(f"| {o} | {spread(d[f'{o}_lmax0'])} | "
                     f"{spread(d[f'{o}_lmax'][c]) if c.any() else '-'} | "
                     f"{spread(d[f'{o}_lmax'][~c]) if (~c).any() else '-'} |")
    if "momentum_gd_bound" in d and "momentum" in opts:
        b = float(d["momentum_gd_bound"])
        lines += ["", f"Momentum GD at the main runs' step (lr and momentum beta) is linearly "
                  f"stable only where the largest eigenvalue is below 2 (1 + beta) / lr = "
                  f"{b:.0f}: {int(np.sum(d['momentum_lmax0'] > b))} of "
                  f"{len(d['momentum_lmax0'])} momentum students lie above it as trained, "
                  f"{int(np.sum(d['momentum_lmax'] > b))} after quenching. The quench follows "
                  f"the descents into valleys far sharper than training can enter."]
    return lines


def numbers(cfg: Config, ctx) -> list:
    """The quench's main numbers per optimizer (float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    out = []
    for o in optimizers(d):
        out += [(f"{o}: certified stationary as trained", int(d[f"{o}_raw_certified"].sum())),
                (f"{o}: certified after quenching", int(d[f"{o}_certified"].sum())),
                (f"{o}: median MSE after quenching", float(np.median(d[f"{o}_loss"]))),
                (f"{o}: median MSE decrease", float(np.median(d[f"{o}_loss0"]
                                                              - d[f"{o}_loss"]))),
                (f"{o}: median distance moved", float(np.median(d[f"{o}_moved"]))),
                (f"{o}: median descent steps", float(np.median(d[f"{o}_descent_iterations"]))),
                (f"{o}: median stationarity measure after (float64)",
                 float(np.median(d[f"{o}_measure"])))]
    return out
