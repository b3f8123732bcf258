"""Transition states: the highest point of each Fig. 4 band refined into a saddle (issue 8).

A band's highest image only approximates the transition state between its
two ends. Here each band's highest image (kept in float64 by Fig. 4, while the
stored bands are float32) is refined by eigenvector-following
with the exact Hessian (relunet.saddle: P-RFO, rescaling zero modes
projected out) and the result is certified: gradient norm <= gtol, exactly
one negative curvature, and no pre-activation within ``gap`` of its kink (the
loss is smooth there). A maximum that lies on a kink (a ridge crease of the
ReLU loss) cannot be such a saddle: it is reported as such, not forced.
Barriers are read from W_f (loss 0) and from each band's far end (a quenched
minimum).

P-RFO refuses every step that raises the gradient norm, and on a ReLU loss the
gradient jumps at each kink a step crosses. The same band maxima are therefore
also refined by Newton's method on the stationarity conditions
(:func:`relunet.saddle.newton_stationary`: along the creases the point nearly
sits on, no decrease of anything asked), and every point it brings to the
quench's certificate (smooth, or Clarke-stationary on kinks) is typed by
:func:`relunet.quench.classify`: an index-1 saddle there is a certified
transition state, smooth or not.

Why none is found off that plateau: the converged bands' highest images below var(t)
compute W_f's spline and almost none of its teeth, at the spline level (the lowest loss
of a function without teeth), on a nearly flat set of networks, and the loss still falls
across their bands (relunet.string_method.min_across): they are tops of paths, not near
an isolated saddle (Fig. 4's module docstring, "What the bands cross"). The report's last
table reads these from Fig. 4's store.

In float32 (``dtype``) the bands are the float32 ones of Fig. 4; the
refinement and its certificate stay float64 (a Newton method with the exact
Hessian, certified at |grad| <= 1e-9, below float32's resolution), starting
from the float32 bands' highest images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH
from ..data import wf_training_set
from ..quench import TAU, near_stationarity
from ..saddle import network_saddles, newton_stationary
from . import fig4_neb
from .frame import preset, stored
from .tables import CLAIM, claims, spread, table

NAME = "transition_states"
TITLE = "Transition states: band maxima refined into saddles"
NEEDS = ("fig4_neb",)   # experiments whose stored results compute() reads
RESULT = "saddles"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_bands: int = 100            # the first bands of Fig. 4
    max_iter: int = 40            # P-RFO iterations per band
    gtol: float = 1e-9
    gap: float = 1e-6
    radius: float = 0.02          # trust radius of the saddle search
    newton_iter: int = 25         # Newton steps on the stationarity conditions per band
    dtype: str = "float64"        # which Fig. 4 bands (the refinement is float64)


PRESETS = {"smoke": dict(n_bands=3, max_iter=5, newton_iter=3),
           "default": dict(n_bands=100, max_iter=40, newton_iter=25),
           "paper": dict(n_bands=100, max_iter=200, newton_iter=100)}


config = preset(Config, PRESETS)


def compute(cfg: Config, ctx) -> dict:
    d = stored(fig4_neb, fig4_neb.config(cfg.scale, cfg.dtype), ctx)
    E = d["energies"][:cfg.n_bands]
    top = np.argmax(E[:, 1:-1], axis=1) + 1      # the highest movable image
    # the highest images in float64 (stores written before they were kept: the float32
    # copies of the band)
    starts = d["top_images"][:cfg.n_bands] if "top_images" in d else \
        d["images"][np.arange(len(E)), top].astype(np.float64)
    x, t = wf_training_set()
    r = network_saddles(starts, WF_ARCH, x, t, gap=cfg.gap, gtol=cfg.gtol,
                        max_iter=cfg.max_iter, radius=cfg.radius)
    # what the band maxima sit on: the creases within 1e-6 and the Clarke measure over them
    near = near_stationarity(starts, WF_ARCH, x, t)
    ns = newton_stationary(starts, WF_ARCH, x, t, max_iter=cfg.newton_iter)
    return dict(X=r.X, E=r.E, gnorm=r.gnorm, index=r.index,
                nt_X=ns.X, nt_E=ns.E, nt_certified=ns.certified, nt_type=ns.type,
                nt_index=ns.index, nt_measure=ns.measure, nt_iterations=ns.iterations,
                nt_moved=ns.moved, var_t=float(np.var(t)),
                near_n=near["n_near"], near_vees=near["vees"], near_falls=near["falls"],
                near_measure=near["measure"],
                converged=r.converged, iterations=r.iterations, moved=r.moved, kind=r.kind,
                start_energy=E[np.arange(len(E)), top], end_energy=E[:, -1],
                band_converged=d["converged"][:cfg.n_bands])


def plot(cfg: Config, ctx) -> list[str]:
    return []                                    # a table, no figure


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    n = len(d["E"])
    # Fig. 4's store, and what its climbing images are (read once for both tables)
    f4 = fig4_neb.config(cfg.scale, cfg.dtype)
    f = ctx.results(fig4_neb.NAME, f4).load_array(fig4_neb.RESULT)
    c = fig4_neb.crossing(f, f4.etol, n)
    kinds = {k: int(np.sum(d["kind"] == k)) for k in np.unique(d["kind"])}
    ok = d["converged"]
    lines = [f"## {TITLE}", "",
             f"The highest image of each of the first {n} Fig. 4 bands, refined by P-RFO "
             f"eigenvector-following with the exact Hessian (at most {cfg.max_iter} "
             f"iterations, trust radius {cfg.radius:g}). Certified transition state: "
             f"|grad| <= {cfg.gtol:g}, one negative curvature after removing the rescaling "
             f"modes, no pre-activation within {cfg.gap:g} of its kink.", "",
             *table(("quantity", "value"), [
                 ("outcome", ", ".join(f"{k}: {v}" for k, v in kinds.items())),
                 ("certified index-1 saddles", f"{int(ok.sum())} of {n}"),
                 ("barrier from W_f (E_ts - 0), certified", spread(d["E"][ok])),
                 ("barrier from the minimum (E_ts - E_end), certified",
                  spread(d["E"][ok] - d["end_energy"][ok])),
                 ("highest image -> refined point: energy change, certified",
                  spread(d["E"][ok] - d["start_energy"][ok])),
                 ("gradient norm reached (all)", spread(d["gnorm"])),
                 ("negative curvatures of the reduced Hessian there (all; 1 for a saddle)",
                  spread(d["index"][d["index"] >= 0])),
                 ("distance moved (all)", spread(d["moved"]))]), "",
             *_crease_rows(d), *_newton_rows(cfg, d), *_nonsmooth_rows(f4, f, c, n), "",
             *claims(
                 ("the paths from W_f to the minima cross smooth index-1 saddles",
                  f"P-RFO: {int(ok.sum())} of {n} band maxima refine into certified saddles"
                  + _newton_claim(d),
                  "reproduced for most bands" if ok.mean() >= 0.5 else
                  "not shown: most band maxima do not refine into smooth saddles; on a ReLU "
                  "loss the highest point of a path can sit on kinks, where no gradient "
                  "vanishes (here mostly V-shaped creases, not ridges, table above: a saddle "
                  "there is one of the loss along the creases, and the Clarke measure over them "
                  "is not yet small), and the others have dozens of negative curvatures "
                  "(row above): directions in which the band itself could still descend, so "
                  "they are not near a saddle of index 1; the band maxima (Fig. 4) remain "
                  "upper bounds of the barriers" + _plateau_clause(c)),
                 header=CLAIM)]
    return "\n".join(lines)


def _plateau_clause(c) -> str:
    """The verdict's last words where Fig. 4 stored what its climbing images compute
    (``c``: :func:`fig4_neb.crossing`, or None): most sit at the spline level with the loss
    still falling across the band (no saddle there to refine), or nothing."""
    if c is None:
        return ""
    m, near, falls = c["below"], c["level"], c["falls"]
    if not m.any() or near.sum() < 0.5 * m.sum() or falls.sum() < 0.5 * m.sum():
        return ""
    return (f"; {int(near.sum())} of the {int(m.sum())} converged band maxima below var(t) "
            "compute the spline and almost none of the teeth, at the spline level, and "
            f"from {int(falls.sum())} the loss still falls across the band: the paths cross a "
            "wide, nearly flat set of networks without teeth, not an isolated saddle")


def _crease_rows(d) -> list[str]:
    """What the band maxima sit on (relunet.quench.near_stationarity at the starting
    points): the creases within TAU of them, V-shaped or falling, and the Clarke
    measure over them; a report paragraph and table (nothing for older stores)."""
    if "near_vees" not in d:
        return []
    on = d["near_n"] > 0
    vee, fall = d["near_vees"], d["near_falls"]
    return [f"What the band maxima (the starting points) sit on, every pre-activation within "
            f"{TAU:g} of its kink counted as on it (relunet.quench.near_stationarity): the "
            "creases there are V-shaped (the loss rises on both sides, as at a kink minimum) "
            "or fall on at least one side (a ridge, or one-sided); the Clarke measure over them "
            "says how far the point is from stationary on them.", "",
            *table(("quantity", "value"), [
                ("band maxima with a pre-activation within that of its kink",
                 f"{int(on.sum())} of {len(on)}; such pre-activations {spread(d['near_n'][on])}"
                 if on.any() else f"0 of {len(on)}"),
                ("... with a V-shaped crease / a falling crease / neither",
                 f"{int(np.sum(on & (vee > 0)))} / {int(np.sum(on & (fall > 0)))} / "
                 f"{int(np.sum(on & (vee == 0) & (fall == 0)))}"),
                ("... Clarke measure over those creases",
                 spread(d["near_measure"][on]) if on.any() else "-")]), ""]


def _newton_ts(d):
    """Masks of the Newton refinement's certified points and of its transition states
    (certified, index 1), and of those on the plateau (E = var(t) to 1e-8)."""
    cert = d["nt_certified"].astype(bool)
    ts = cert & (d["nt_index"] == 1)
    plateau = np.abs(d["nt_E"] - float(d["var_t"])) <= 1e-8
    return cert, ts, plateau


def _newton_claim(d) -> str:
    if "nt_type" not in d:
        return ""
    cert, ts, plateau = _newton_ts(d)
    return (f"; Newton on the stationarity conditions: {int(ts.sum())} of {len(ts)} reach a "
            f"certified index-1 saddle ({int((ts & plateau).sum())} of them at var(t), on the "
            f"plateau of constant networks), {int(cert.sum())} a certified stationary point")


def _newton_rows(cfg: Config, d) -> list[str]:
    """The band maxima refined by Newton on the stationarity conditions
    (relunet.saddle.newton_stationary): what the certified ones are (classify),
    the transition states among them and their barriers (nothing for older stores)."""
    if "nt_type" not in d:
        return []
    cert, ts, plateau = _newton_ts(d)
    n = len(cert)
    types = d["nt_type"].astype(str)
    kinds = ", ".join(f"{k} {int(np.sum(types[cert] == k))}" for k in np.unique(types[cert]))
    return [f"The same band maxima refined by Newton's method on the stationarity conditions "
            f"(relunet.saddle.newton_stationary: along the creases within 1e-6, the Hessian "
            f"of the piece weighted as in the Clarke certificate, no decrease asked; at most "
            f"{cfg.newton_iter} steps of at most 0.01), and every point that reaches the "
            "quench's certificate typed by relunet.quench.classify; a certified point of "
            "index 1 is a transition state, smooth or on kinks. Points at var(t) = "
            f"{float(d['var_t']):.4g} sit on the plateau of constant networks.", "",
            *table(("quantity", "value"), [
                ("certified stationary points",
                 f"{int(cert.sum())} of {n}" + (f": {kinds}" if cert.any() else "")),
                ("... at var(t) (on the plateau)", f"{int((cert & plateau).sum())}"),
                ("certified index-1 saddles (transition states)",
                 f"{int(ts.sum())} of {n} ({int((ts & plateau).sum())} on the plateau)"),
                ("... barrier from W_f (E_ts) / from the minimum (E_ts - E_end)",
                 f"{spread(d['nt_E'][ts])} / {spread(d['nt_E'][ts] - d['end_energy'][ts])}"
                 if ts.any() else "-"),
                ("Newton steps taken (certified / the rest)",
                 f"{spread(d['nt_iterations'][cert]) if cert.any() else '-'} / "
                 f"{spread(d['nt_iterations'][~cert]) if (~cert).any() else '-'}"),
                ("distance moved, certified", spread(d["nt_moved"][cert]) if cert.any() else "-"),
                ("stationarity measure at the end, the rest",
                 spread(d["nt_measure"][~cert]) if (~cert).any() else "-")]), ""]


def _nonsmooth_rows(f4cfg, f, c, n: int) -> list[str]:
    """The nonsmooth counterpart, read from Fig. 4's store ``f`` (config ``f4cfg``; ``c``:
    :func:`fig4_neb.crossing` of its first ``n`` bands, or None): the climbing images of
    the converged bands are maxima along their band at which the sampled Clarke
    measure (relunet.string_method) is small, saddle candidates in the sense of
    nonsmooth analysis, whatever kinks they sit on; their index is not settled."""
    conv = f["converged"][:n].astype(bool)
    E = f["energies"][:n]
    top = E.max(axis=1)
    var_t = float(f["var_t"])
    plateau = conv & (np.abs(top - var_t) <= f4cfg.etol)
    other = conv & ~plateau
    rows = [("converged bands: candidates", f"{int(conv.sum())} of {n}"),
            ("... on the plateau (E within etol of var(t))", f"{int(plateau.sum())}"),
            ("... below it: energy (barrier from W_f)", spread(top[other])),
            ("... below it: barrier from the minimum", spread((top - E[:, -1])[other]))]
    if c is not None and other.any():
        rows += [("... below it: teeth coefficient (relunet.geometry.components; W_f 1, the "
                  "spline alone 0)", spread(f["top_components"][:n, 1][other])),
                 (f"... below it: energy - spline level {float(f['spline_level']):.4g} (the "
                  "lowest loss of a function without teeth)",
                  spread((c["climb"] - float(f["spline_level"]))[other])),
                 (f"... below it: lower across the band ({f4cfg.across_iter} BFGS steps in "
                  "the hyperplane perpendicular to it, relunet.string_method.min_across)",
                  f"{int(np.sum(other & c['falls']))} of {int(other.sum())}, by "
                  f"{spread(c['drop'][other])}")]
    return ["Nonsmooth saddle candidates, from Fig. 4: the climbing images of the converged "
            f"bands, each a maximum along its band with a sampled Clarke measure (radius "
            f"{f4cfg.gs_radius:g}) at most {f4cfg.gs_tol:g}: the nonsmooth meaning of a "
            "stationary point, on kinks or not; their index is not settled. Those within "
            f"{f4cfg.etol:g} of var(t) = {var_t:.4g} sit on the plateau of constant networks "
            "(relunet.plateau), which joins any two networks at that level. A saddle of "
            "index 1 would also be a minimum across its band; the last rows test that, and "
            "say what the others compute (Fig. 4's row 'what the bands cross').", "",
            *table(("quantity", "value"), rows)]


def numbers(cfg: Config, ctx) -> list:
    """Certified saddles and how far the refinement got (the float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    out = [("certified index-1 saddles", int(d["converged"].sum())),
           ("band maxima on a kink", int(np.sum(d["kind"].astype(str) == "kink"))),
           ("median gradient norm reached", float(np.median(d["gnorm"])))]
    if "nt_type" in d:
        cert, ts, _ = _newton_ts(d)
        out += [("Newton: certified stationary points", int(cert.sum())),
                ("Newton: certified index-1 saddles", int(ts.sum()))]
    return out
