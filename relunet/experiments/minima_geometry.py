"""How the trained minima are organised in weight space (G&W Secs. 3.3, 3.5).

G&W: "the ball of radius 2 around the global minimum is exponentially
miniscule compared to the shell of radius 9.5 to 10.5 which contains most of
the local minima". All networks are de-symmetrised (relunet.symmetry) and
compared by Euclidean distance: distances from W_f, distances between minima,
and a 2-D classical-MDS view of W_f among the minima. The minima are the
quenched students (relunet.experiments.quench_minima); the raw students'
distances are kept beside them, to show what quenching changes.

In float32 (``dtype``) the students and quenched points are the float32 ones;
distances and the 2-D view are computed in float64 from them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH
from ..geometry import embed_2d, pairwise_distances
from ..symmetry import canonicalize
from . import fig2_fits, quench_minima
from .frame import preset
from .students import OPTIMIZERS, usable
from .tables import claims, fmt, quantile_table, table

NAME = "minima_geometry"
TITLE = "The organisation of the minima in weight space"
NEEDS = ("fig2_fits", "quench_minima")   # experiments whose stored results compute() reads
RESULT = "geometry"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_pairwise: int = 400         # minima per optimizer in the pairwise / 2-D view
    shell_lo: float = 9.5         # the paper's shell
    shell_hi: float = 10.5
    dtype: str = "float64"        # of the students and quenched points


PRESETS = {"smoke": dict(n_pairwise=8), "default": dict(n_pairwise=400),
           "large": dict(n_pairwise=1000), "paper": dict(n_pairwise=1000)}


config = preset(Config, PRESETS)


def compute(cfg: Config, ctx) -> dict:
    runs = fig2_fits.main_runs(fig2_fits.config(cfg.scale, cfg.dtype), ctx)
    qd = quench_minima.quenched(cfg.scale, ctx, cfg.dtype)
    wf = qd["wf_c"][None, :]
    out, pool, labels, losses = {}, [wf], [np.array([-1])], [np.array([0.0])]
    for k, opt in enumerate(OPTIMIZERS):
        run = runs[opt]
        ok = usable(run)
        Wraw = canonicalize(run.W[ok].astype(np.float64), WF_ARCH)
        out[f"{opt}_raw_dist"] = np.linalg.norm(Wraw - wf, axis=1)
        Wc = qd[f"{opt}_Wc"]
        out[f"{opt}_dist"] = np.linalg.norm(Wc - wf, axis=1)
        out[f"{opt}_loss"] = qd[f"{opt}_loss"]
        out[f"{opt}_norm"] = np.linalg.norm(Wc, axis=1)
        out[f"{opt}_certified"] = qd[f"{opt}_certified"]
        pool.append(Wc[:cfg.n_pairwise])
        labels.append(np.full(len(Wc[:cfg.n_pairwise]), k))
        losses.append(out[f"{opt}_loss"][:cfg.n_pairwise])
    P = np.concatenate(pool)
    D = pairwise_distances(P, WF_ARCH, canonical=False)      # already canonical
    xy, ev = embed_2d(D, return_eigenvalues=True)
    out.update(pair_D=D, pair_label=np.concatenate(labels), pair_loss=np.concatenate(losses),
               xy=xy, mds_eigenvalues=ev, wf_norm=np.array([np.linalg.norm(wf)]))
    return out


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import F_COLOR, OPT_COLORS, OPT_LABELS, figure, savefig
    d = ctx.results(NAME, cfg).load_array(RESULT)
    fig, (a0, a1, a2) = figure(3, 1, width=3.3, height=2.9)
    bins = np.linspace(0, max(max(d[f"{o}_dist"].max(), d[f"{o}_raw_dist"].max())
                              for o in OPTIMIZERS) * 1.05, 50)
    for opt in OPTIMIZERS:
        a0.hist(d[f"{opt}_dist"], bins=bins, alpha=0.55, color=OPT_COLORS[opt], density=True,
                label=f"{OPT_LABELS[opt]}, quenched")
        a0.hist(d[f"{opt}_raw_dist"], bins=bins, histtype="step", color=OPT_COLORS[opt],
                density=True, label=f"{OPT_LABELS[opt]}, as trained")
    a0.axvspan(cfg.shell_lo, cfg.shell_hi, color="0.5", alpha=0.2,
               label=f"paper's shell [{cfg.shell_lo:g}, {cfg.shell_hi:g}]")
    a0.set_xlabel("distance from W_f (canonical)")
    a0.set_ylabel("density")
    a0.set_title("distance from the global minimum")
    a0.legend(fontsize=7)
    lab, D = d["pair_label"], d["pair_D"]
    iu = np.triu_indices(len(lab), 1)
    for k, opt in enumerate(OPTIMIZERS):
        sel = (lab[iu[0]] == k) & (lab[iu[1]] == k)
        a1.hist(D[iu][sel], bins=50, alpha=0.55, color=OPT_COLORS[opt], label=OPT_LABELS[opt])
    a1.set_xlabel("distance between two minima")
    a1.set_ylabel("pairs")
    a1.set_title("pairwise distances")
    a1.legend(fontsize=7)
    xy = d["xy"]
    for k, opt in enumerate(OPTIMIZERS):
        m = lab == k
        a2.scatter(xy[m, 0], xy[m, 1], s=5, alpha=0.5, color=OPT_COLORS[opt],
                   label=OPT_LABELS[opt])
    a2.scatter(xy[lab == -1, 0], xy[lab == -1, 1], marker="*", s=160, color=F_COLOR,
               edgecolors="k", label="W_f", zorder=5)
    a2.set_title("2-D view (classical MDS)")
    a2.set_xlabel("MDS 1")
    a2.set_ylabel("MDS 2")
    a2.legend(fontsize=7)
    return savefig(fig, "ext_minima_geometry", ctx.figures)


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    ev = d["mds_eigenvalues"]
    share2 = float(ev[:2].sum() / ev[ev > 0].sum())
    lines = [f"## {TITLE}", "", "![geometry](ext_minima_geometry.png)", "",
             f"Canonical W_f has norm {fmt(float(d['wf_norm'][0]))}.", ""]
    shares = {}
    raw_shares = {}
    rows = []
    for opt in OPTIMIZERS:
        for key, label in (("raw_dist", "as trained"), ("dist", "quenched")):
            dist = d[f"{opt}_{key}"]
            q = quantile_table(dist)
            share = float(np.mean((dist >= cfg.shell_lo) & (dist <= cfg.shell_hi)))
            (shares if key == "dist" else raw_shares)[opt] = share
            norm = fmt(float(np.median(d[f"{opt}_norm"]))) if key == "dist" else "-"
            rows.append((f"{opt}, {label}", f"{dist.size}", fmt(q[0.05]), fmt(q[0.5]),
                         fmt(q[0.95]), f"{share:.0%}", norm))
    lines += table(("minima", "n", "distance from W_f: 5%", "median", "95%", "in paper's shell",
                    "median norm"), rows)
    from .ext_sensitivity import shell_note
    sens = shell_note(cfg.scale, ctx)     # '' unless ext_sensitivity ran at this scale
    lab, D = d["pair_label"], d["pair_D"]
    iu = np.triu_indices(len(lab), 1)
    inner = D[iu][(lab[iu[0]] >= 0) & (lab[iu[1]] >= 0)]
    lines += ["", f"Pairwise distances between minima: median {fmt(np.median(inner))}, "
              f"5-95% [{fmt(np.quantile(inner, 0.05))}, {fmt(np.quantile(inner, 0.95))}]. "
              f"The 2-D MDS view keeps {share2:.0%} of the positive spectrum of the "
              "double-centred distance matrix, so it is a rough picture.", "",
              *claims(
                  ("most local minima lie in the shell 9.5-10.5 around W_f",
                   f"quenched: {shares['momentum']:.0%} (GD), {shares['adadelta']:.0%} "
                   f"(Adadelta); as trained: {raw_shares['momentum']:.0%}, "
                   f"{raw_shares['adadelta']:.0%}",
                   ("reproduced" if max(shares.values()) >= 0.5 else
                    "differs: our minima sit at other distances (heights, scaling convention "
                    "and optimizer settings of the paper are unknown)")
                   + (f". {sens}" if sens else "; the sensitivity study (ext_sensitivity) has "
                      "not been run at this scale")),
                  ("organisation of the minima (full paper)", "figures above",
                   "unknown in the paper (not available)"))]
    return "\n".join(lines)


def numbers(cfg: Config, ctx) -> list:
    """Distances from canonical W_f per optimizer (the float32 report's comparison)."""
    d = ctx.results(NAME, cfg).load_array(RESULT)
    out = []
    for opt in OPTIMIZERS:
        shell = (d[f"{opt}_dist"] >= cfg.shell_lo) & (d[f"{opt}_dist"] <= cfg.shell_hi)
        out += [(f"{opt}: median distance from W_f, trained",
                 float(np.median(d[f"{opt}_raw_dist"]))),
                (f"{opt}: median distance from W_f, quenched",
                 float(np.median(d[f"{opt}_dist"]))),
                (f"{opt}: share of quenched points in the paper's shell", float(shell.mean()))]
    return out
