"""Beyond the paper: a disconnectivity graph of W_f and the quenched minima (issue 8, item 6).

G&W describe the landscape of W_f through paths from W_f to single local
minima (Fig. 4). How the minima are organised among themselves, which of them
are separated from W_f by how high a barrier, is the question a
disconnectivity graph answers (Becker & Karplus, J. Chem. Phys. 106, 1495
(1997); Wales, Miller & Walsh, Nature 394, 758 (1998); :mod:`relunet.disconnectivity`).

Minima. Canonical W_f and the first ``n_minima`` quenched students of each
main run (:mod:`relunet.experiments.quench_minima`), all de-symmetrised
(relunet.symmetry.canonicalize), so that two networks computing the same
function by a rescaling or permutation of hidden units are one point. Certified
minima (types minimum, kink-minimum, global-minimum) are taken first, then
certified points whose type the one-sided curvatures leave open
(degenerate-kink), then uncertified ones; certified saddles are left out (they
are not minima). A minimum within ``dedup_tol`` of one already taken (two
students that quenched to the same point) is dropped.

Edges. The pairs to join are chosen by canonical distance, as in the
discrete-path sampling practice of joining nearest neighbours (Wales, Mol.
Phys. 100, 3285 (2002)): every minimum to its ``k_neighbours`` nearest, W_f
to its ``wf_neighbours`` nearest (its funnel is what we ask about), and the
edges of the Euclidean minimum spanning tree of all minima. A k-nearest-
neighbour graph alone can fall apart into clusters (then the disconnectivity
graph is a forest and no barrier between clusters exists); the spanning tree
adds the shortest pair between any two parts, so every minimum is joined to
W_f by some chain of bands. Pairs are deduplicated.

Barriers. Every pair is relaxed as one band, all bands batched in one energy
call per iteration, by the climbing string of :func:`relunet.string_method.string_method`
(a stopping rule that holds on a piecewise-smooth loss: the band's barrier
stable to ``etol`` over a window of checks on a frozen grid, and the sampled
Clarke measure of the gradient around the climbing image at most ``gs_tol``;
see that module). The edge energy is the band's *path maximum*: the maximum of
the loss on the dense polyline through its images, located to a small fraction
of a segment. It is the top of an actual path between the two minima, hence an
upper bound on their mountain-pass barrier whether or not the band converged,
and it is the quantity the stopping rule watches (``watch="path"``).

Every band starts on the plateau path between its minima (``start``; as in
:mod:`relunet.experiments.fig4_neb`), which never rises above max(E_i, E_j,
var(t)), rather than on the straight line, whose interpolated networks are
garbage (losses up to 1e3). Measured on the default graph, the same 2,500
iterations: 59 of 146 bands converged from the plateau path against 41 from the
straight line, 16 edges were set by a converged band against 11 (the other
converged bands peak above the plateau path, which then sets the edge), and W_f's
funnel opened at 0.194 instead of 0.227; 10,000 iterations converged 87 bands but
set no more edges. Fig. 4's preconditioned climbing image (``climb_hessian``) is off
here: with it 19 edges were set by a converged band instead of 16, for 7 s more (24 s
against 17 s); the window here watches the path maximum, which the faster-moving
images around the climber keep changing.

Why not the climbing image's energy, the usual transition-state estimate? On
these bands it is not a barrier of any path: with a dozen images over the
canonical distance between two minima the loss between neighbouring images
rises well above the images, converged bands included, so the images alone
would report a landscape lower than any path we have. The highest image's
energy is stored (``image_max``) and the report gives the gap (row "path
maximum minus highest image").

W_f's bands decide the barrier the graph is built for, so they are relaxed a
second time with ``wf_images`` images; both relaxations give real paths, so
the lower path maximum is the edge energy (and that band's convergence flag
the edge's). The report gives how much the second relaxation moved them;
where it moves them either way, the W_f barriers are upper bounds, not
converged values.

Shortening: the bands go through Fig. 4's shortening rounds
(:func:`relunet.experiments.fig4_neb.shorten`: cut each band's corners, relax it again,
then the same for the bands not yet replaced with the climbing image held), a new band
kept where it converged and its path maximum (the quantity watched here) is not higher
than the old one's by more than ``etol``. The plateau start leaves long paths, and a
relaxed band's path maximum is an upper bound on the barrier, so a converged shorter band
over a pass no higher can only tighten the edges. The report gives what the rounds
replaced.

Not done: refining the climbing images into transition states. P-RFO with the
exact Hessian (:func:`relunet.saddle.network_saddles`) does not converge from
band peaks that sit on kinks, where a Newton model of one piece does not
describe the ridge (the section on transition states of figures/REPORT.md
shows it for the Fig. 4 bands), and it costs far more per point than a band.

Budget: a band stops when it converges, so the cost is set by the slow ones,
and raising ``max_iter`` converges few more bands for much more time; the
report gives the compute time and the share of converged bands.

The graph. :func:`relunet.disconnectivity.build` floods the landscape on an
even ladder of ``n_levels`` energies; minimax barriers come from
:func:`relunet.disconnectivity.barrier_matrix` (exact, no ladder). The
barrier that separates W_f's funnel from the rest is the level at which W_f's
superbasin first merges with any other minimum (W_f is the global minimum,
so that is the energy a walker at W_f must reach to get anywhere else); the
report also gives the minimax barrier from W_f to every minimum, seen from
both ends.

In float32 (``dtype``) the minima are the float32 quench's, and the energies,
the bands' forces and the straight lines are computed in float32
(:mod:`relunet.experiments.precision`); the graph is built from those.

This module is one experiment in the frame every experiment shares (config,
compute, plot and report side by side: relunet.experiments.frame). It runs
past 300 lines because its method needs the explanation above and its report
reads three tables off the graph; the graph itself (flooding, minimax
barriers) is :mod:`relunet.disconnectivity`, its drawing
:func:`relunet.plots.disconnectivity_graph`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH
from ..data import wf_training_set
from ..geometry import components, pairwise_distances, spline_level
from .frame import Timer, preset
from .precision import energy, hessians, loss_in
from .quench_minima import select
from .students import OPTIMIZERS
from .tables import CLAIM, claims, fmt, spread, table

NAME = "ext_disconnectivity"
TITLE = "Beyond the paper: the disconnectivity graph of W_f and the quenched minima"
NEEDS = ("quench_minima",)   # experiments whose stored results compute() reads
RESULT = "graph"

@dataclass(frozen=True)
class Config:
    scale: str = "default"
    n_minima: tuple = (("momentum", 25), ("adadelta", 25))   # quenched minima per optimizer
    k_neighbours: int = 3         # each minimum joined to its k nearest (canonical distance)
    wf_neighbours: int = 5        # W_f joined to its nearest minima
    spanning_tree: bool = True    # add the Euclidean minimum spanning tree (connected graph)
    dedup_tol: float = 1e-4       # canonical distance below which two minima are one
    n_images: int = 12            # images per band, both ends included
    max_iter: int = 2500
    step: float = 1e-3            # initial step of every image
    step_max: float = 0.5
    max_step: float = 0.2         # largest displacement of one image in one step
    first_move: float = 1e-3      # ... in its first step (no Lipschitz estimate yet)
    start: str = "plateau"        # initial path: "plateau" (relunet.plateau) or "straight"
    n_dense: int = 8              # points per segment of the dense profile
    regrid_every: int = 100
    regrid_until: int = 300       # grid frozen after this iteration
    climb: bool = True            # climbing highest image (climbing string)
    watch: str = "path"           # the window watches the path maximum (the edge energy)
    climb_hessian: bool = False   # precondition the climbing image's steps (as Fig. 4)
    precond_floor: float = 1.0
    precond_every: int = 200
    precond_width: int = 1
    wf_images: int = 24           # W_f's bands relaxed again with this many images (0: not)
    shorten_rounds: int = 1       # shortening rounds as Fig. 4's (fig4_neb.shorten): free,
    hold_widths: tuple = (1,)     # ... then held (climbing image and neighbours) on the rest
    shorten_sweeps: int = 100     # ... curve-shortening sweeps per round
    refine_images: int = 5        # segments rising above their band's highest image: relaxed
    refine_iter: int = 300        # ... as strings of this many images, this many iterations
    check_every: int = 10
    window: int = 20
    etol: float = 1e-4            # peak energy stable to this over the window
    gs_radius: float = 1e-2
    gs_samples: int = 16
    gs_tol: float = 1e-2
    n_levels: int = 40            # energy ladder of the graph, up to the last merge
    dtype: str = "float64"        # precision of the minima, energies and forces


PRESETS = {
    "smoke": dict(n_minima=(("momentum", 4), ("adadelta", 4)), k_neighbours=2,
                  wf_neighbours=2, n_images=6, wf_images=8, max_iter=40, regrid_every=10,
                  regrid_until=20, check_every=5, window=3, n_levels=20, refine_iter=20,
                  shorten_sweeps=3),
    "default": dict(),
    "paper": dict(n_minima=(("momentum", 100), ("adadelta", 100)), k_neighbours=4,
                  wf_neighbours=8, n_images=32, wf_images=64, max_iter=4000,
                  regrid_until=1000),
}


config = preset(Config, PRESETS)


# ----------------------------------------------------------------------------
# choosing minima and edges
# ----------------------------------------------------------------------------
def deduplicate(points, tol) -> np.ndarray:
    """Mask keeping the first of every group of rows closer than ``tol``."""
    keep = np.ones(len(points), bool)
    for i in range(1, len(points)):
        d = np.linalg.norm(points[:i][keep[:i]] - points[i], axis=1)
        keep[i] = d.size == 0 or d.min() >= tol
    return keep


def minimum_spanning_tree(D) -> list:
    """Edges (i, j) of the Euclidean minimum spanning tree of a distance matrix (Prim)."""
    n = len(D)
    if n < 2:
        return []
    inside = np.zeros(n, bool)
    inside[0] = True
    best, link = D[0].astype(float).copy(), np.zeros(n, int)
    out = []
    for _ in range(n - 1):
        c = np.where(inside, np.inf, best)
        j = int(np.argmin(c))
        out.append((min(link[j], j), max(link[j], j)))
        inside[j] = True
        closer = D[j] < best
        best = np.where(closer, D[j], best)
        link = np.where(closer, j, link)
    return out


def choose_edges(D, k, k0=0, spanning_tree=True) -> np.ndarray:
    """Pairs (i < j), sorted: every point to its k nearest, point 0 to its k0
    nearest, and (optionally) the minimum spanning tree. Shape (m, 2)."""
    n = len(D)
    pairs = set()
    for i in range(n):
        d = D[i].astype(float).copy()
        d[i] = np.inf
        for j in np.argsort(d, kind="stable")[:min(max(k, k0 if i == 0 else 0), n - 1)]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    if spanning_tree:
        pairs.update(minimum_spanning_tree(D))
    return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)


# ----------------------------------------------------------------------------
# compute
# ----------------------------------------------------------------------------
def compute(cfg: Config, ctx) -> dict:
    from ..neb import linear_path
    from ..plateau import band_start, plateau_path
    from ..string_method import string_method
    from . import fig4_neb, quench_minima
    qd = quench_minima.quenched(cfg.scale, ctx, cfg.dtype)
    timer = Timer()
    x, t = wf_training_set()
    xd, td = wf_training_set(dtype=cfg.dtype)     # the data in the precision computed in
    pool, group, source, cert, types = [qd["wf_c"][None, :]], [-1], [-1], [True], ["W_f"]
    offered = {}
    for k, opt in enumerate(OPTIMIZERS):
        n = dict(cfg.n_minima).get(opt, 0)
        if n == 0 or f"{opt}_Wc" not in qd:
            continue
        sel = select(qd[f"{opt}_type"], qd[f"{opt}_certified"], n)
        offered[opt] = len(qd[f"{opt}_Wc"])
        pool.append(qd[f"{opt}_Wc"][sel])
        group += [k] * sel.size
        source += sel.tolist()
        cert += qd[f"{opt}_certified"][sel].tolist()
        types += qd[f"{opt}_type"][sel].astype(str).tolist()
    minima = np.concatenate(pool).astype(np.float64)
    keep = deduplicate(minima, cfg.dedup_tol)
    minima = minima[keep]
    group, source = np.array(group)[keep], np.array(source)[keep]
    cert, types = np.array(cert)[keep], np.array(types)[keep]
    E = loss_in(minima, WF_ARCH, xd, td, cfg.dtype)
    D = pairwise_distances(minima, WF_ARCH, canonical=False)      # already canonical
    pairs = choose_edges(D, cfg.k_neighbours, cfg.wf_neighbours, cfg.spanning_tree)
    efun = energy(WF_ARCH, xd, td, cfg.dtype)

    # the plateau path (relunet.plateau) between the same minima: never above
    # max(E_i, E_j, var(t)); the bands start on it (cfg.start), and where it is lower than
    # the band, it is the edge (a bound)
    pp = plateau_path(minima[pairs[:, 0]], minima[pairs[:, 1]], WF_ARCH, td,
                      n_per_leg=cfg.n_images)

    def relax(a, b, n_images, path=None, fractions=None):
        if path is None:
            path, fractions = band_start(cfg.start, minima[a], minima[b], WF_ARCH, td, n_images)
        return string_method(efun, minima[a], minima[b], n_images=n_images, path=path,
                             fractions=fractions,
                             max_iter=cfg.max_iter, first_move=cfg.first_move,
                             step=cfg.step, step_max=cfg.step_max, max_step=cfg.max_step,
                             n_dense=cfg.n_dense, climb=cfg.climb, watch=cfg.watch,
                             regrid_every=cfg.regrid_every, regrid_until=cfg.regrid_until,
                             check_every=cfg.check_every, window=cfg.window, etol=cfg.etol,
                             gs_radius=cfg.gs_radius, gs_samples=cfg.gs_samples,
                             gs_tol=cfg.gs_tol,
                             climb_hessian=hessians(WF_ARCH, xd, td) if cfg.climb_hessian else None,
                             precond_floor=cfg.precond_floor, precond_every=cfg.precond_every,
                             precond_width=cfg.precond_width)
    first = relax(pairs[:, 0], pairs[:, 1], cfg.n_images)
    # shortening rounds (as Fig. 4's), judged by the path maximum, the edge's bound
    res, kept = fig4_neb.shorten(
        cfg, lambda rows, path, frac: relax(pairs[rows, 0], pairs[rows, 1], cfg.n_images,
                                            path, frac),
        first, lambda r: r.peak_energy)
    t_bands = timer()
    ends_E = np.maximum(E[pairs[:, 0]], E[pairs[:, 1]])
    # the segments that rise above their band's highest image relaxed as strings of their
    # own (as in Fig. 4): a path with a lower maximum, the edge's upper bound
    seg = fig4_neb.segments(cfg, efun, res)
    chord_max = np.maximum(res.peak_energy, ends_E)
    path_max = np.maximum(seg.peak, ends_E)
    image_max = np.maximum(res.energies.max(axis=1), ends_E)
    # W_f's bands again with more images: either path is a path, so the lower maximum counts
    wf = np.flatnonzero(pairs[:, 0] == 0)
    wf_path_max, wf_conv = np.full(wf.size, np.nan), np.zeros(wf.size, bool)
    if cfg.wf_images and wf.size:
        res2 = relax(pairs[wf, 0], pairs[wf, 1], cfg.wf_images)
        wf_path_max, wf_conv = np.maximum(res2.peak_energy, ends_E[wf]), res2.converged
    edge_E, conv = path_max.copy(), res.converged.copy()
    better = wf_path_max < path_max[wf]
    edge_E[wf[better]], conv[wf[better]] = wf_path_max[better], wf_conv[better]
    plateau_max = np.maximum(loss_in(pp.reshape(-1, minima.shape[1]), WF_ARCH, xd, td,
                                     cfg.dtype).reshape(len(pairs), -1).max(axis=1), ends_E)
    plateau_edge = plateau_max < edge_E
    edge_E[plateau_edge], conv[plateau_edge] = plateau_max[plateau_edge], False
    # the straight line between the two minima, on the same dense grid
    n_line = (cfg.n_images - 1) * cfg.n_dense + 1
    line = linear_path(minima[pairs[:, 0]], minima[pairs[:, 1]], n_line)
    line_E = loss_in(line.reshape(-1, minima.shape[1]), WF_ARCH, xd, td,
                     cfg.dtype).reshape(len(pairs), n_line)
    chord = np.linalg.norm(minima[pairs[:, 1]] - minima[pairs[:, 0]], axis=1)
    return dict(minima=minima, energies=E, group=group, source=source, certified=cert,
                types=types.astype(str), distances=D, pairs=pairs, edge_energy=edge_E,
                path_max=path_max, chord_max=chord_max, n_segments=len(seg.segments),
                image_max=image_max, converged=conv,
                plateau_max=plateau_max, plateau_edge=plateau_edge,
                band_converged=res.converged, wf_edges=wf, wf_path_max=wf_path_max,
                first_converged=first.converged, first_peak=first.peak_energy,
                band_peak=res.peak_energy,
                first_length=first.distance[:, -1], shorten_round=kept,
                wf_converged=wf_conv, iterations=res.iterations,
                peak_point=res.peak_point,
                barrier_change=res.barrier_change, peak_measure=res.peak_measure,
                path_length=res.distance[:, -1], chord=chord, line_max=line_E.max(axis=1),
                dense_distance=res.dense_distance, dense_energies=res.dense_energies,
                offered=np.array([offered.get(o, 0) for o in OPTIMIZERS]),
                n_duplicates=np.array([int((~keep).sum())]),
                seconds=np.array([timer()]), band_seconds=np.array([t_bands]),
                wf_seconds=np.array([timer() - t_bands]),
                constant_mse=np.array([float(np.var(t))]))


# ----------------------------------------------------------------------------
# the graph from the store
# ----------------------------------------------------------------------------
def graph(cfg: Config, ctx, energy: str = "edge_energy"):
    """(stored arrays, DisconnectivityTree, minimax barrier matrix), the edges
    weighted by ``energy``: "edge_energy" (path maxima, W_f's bands the lower of
    their two relaxations) or "path_max" (path maxima of the
    ``n_images`` bands, without W_f's second relaxation)."""
    from .. import disconnectivity as dg
    d = ctx.results(NAME, cfg).load_array(RESULT)
    E = d["energies"]
    edges = np.column_stack([d["pairs"], d[energy]])
    barriers = dg.barrier_matrix((E, edges))
    # the ladder ends just above the last merge (higher edges change nothing)
    lo, hi = E.min(), max(E.max(), barriers[np.isfinite(barriers)].max())
    step = (hi - lo) / (cfg.n_levels - 1) if hi > lo else 1.0
    tree = dg.build(E, edges, levels=lo + step * (np.arange(cfg.n_levels) + 0.5))
    return d, tree, barriers


def bottleneck_edges(n, pairs, edge_energy, root=0) -> np.ndarray:
    """For every minimum j, the edge that sets its minimax barrier to ``root``
    (Kruskal: the edge whose addition first joins j's component to root's);
    -1 for the root itself and for minima never joined to it."""
    up = np.arange(n)

    def find(i):
        while up[i] != i:
            up[i] = up[up[i]]
            i = up[i]
        return i
    out = np.full(n, -1)
    for e in np.argsort(edge_energy, kind="stable"):
        a, b = find(pairs[e, 0]), find(pairs[e, 1])
        if a == b:
            continue
        r = find(root)
        if r in (a, b):
            other = b if a == r else a
            members = [j for j in range(n) if find(j) == other]
            out[members] = e
        up[b] = a
    return out


def wf_separation(d, barriers):
    """The level at which W_f (minimum 0) first shares a superbasin with another
    minimum, and that minimum's index (the lowest minimax barrier from W_f)."""
    b = barriers[0].copy()
    b[0] = np.inf
    j = int(np.argmin(b))
    return float(b[j]), j


def plot(cfg: Config, ctx) -> list[str]:
    from matplotlib.lines import Line2D

    from ..plots import F_COLOR, OPT_COLORS, OPT_LABELS, disconnectivity_graph, figure, savefig
    d, tree, barriers = graph(cfg, ctx)
    to_wf = barriers[0]                  # minimax barrier from each minimum to W_f
    group = d["group"]
    colors = [F_COLOR if g < 0 else OPT_COLORS[OPTIMIZERS[g]] for g in group]
    fig, (a, b) = figure(2, 1, width=4.2, height=3.4, gridspec_kw=dict(width_ratios=[1.6, 1]))
    disconnectivity_graph(tree, ax=a, colors=colors, highlight=0, linewidth=1.0)
    sep, j = wf_separation(d, barriers)
    const = float(d["constant_mse"][0])
    if np.isfinite(sep):
        a.axhline(sep, color=F_COLOR, lw=0.8, ls=":")
    if const < tree.levels[-1]:
        a.axhline(const, color="0.4", lw=0.8, ls="--")
    handles = [Line2D([], [], color=F_COLOR, lw=3, marker="o", ms=5, label="W_f")]
    handles += [Line2D([], [], color=OPT_COLORS[o], lw=1, label=f"{OPT_LABELS[o]} minimum")
                for k, o in enumerate(OPTIMIZERS) if np.any(group == k)]
    if np.isfinite(sep):
        handles.append(Line2D([], [], color=F_COLOR, lw=0.8, ls=":",
                              label=f"W_f merges: {sep:.3g}"))
    if const < tree.levels[-1]:
        handles.append(Line2D([], [], color="0.4", lw=0.8, ls="--",
                              label=f"MSE of the mean of f: {const:.3g}"))
    a.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0),
             ncol=3, frameon=False)
    a.set_ylabel("MSE")
    a.set_title(f"(a) disconnectivity graph: {tree.n_minima} minima, {len(d['pairs'])} bands")
    # (b) minimax barrier to W_f against each minimum's own energy
    E = d["energies"]
    bn = bottleneck_edges(len(E), d["pairs"], d["edge_energy"])
    solid = (bn >= 0) & d["converged"][np.maximum(bn, 0)]
    for k, o in enumerate(OPTIMIZERS):
        m = (group == k) & np.isfinite(to_wf)
        if m.any():
            b.scatter(E[m & solid], to_wf[m & solid], s=14, alpha=0.8, color=OPT_COLORS[o],
                      label=OPT_LABELS[o])
            b.scatter(E[m & ~solid], to_wf[m & ~solid], s=14, alpha=0.8, facecolors="none",
                      edgecolors=OPT_COLORS[o])
    b.scatter([], [], s=14, facecolors="none", edgecolors="0.4",
              label="open: set by an unconverged\nband (an upper bound)")
    hi = float(np.nanmax(np.where(np.isfinite(to_wf), to_wf, np.nan)))
    b.plot([0, hi], [0, hi], color="0.5", lw=0.8, ls="--", label="barrier = own energy")
    b.set_xlabel("MSE at the minimum")
    b.set_ylabel("minimax barrier to W_f (MSE)")
    b.set_title("(b) how high a minimum must climb to reach W_f")
    b.legend(fontsize=7, loc="lower right")
    return savefig(fig, "ext_disconnectivity", ctx.figures)


def report(cfg: Config, ctx) -> str:
    d, tree, barriers = graph(cfg, ctx)
    to_wf = barriers[0]                  # minimax barrier from each minimum to W_f
    E, group, cert, pairs = d["energies"], d["group"], d["certified"], d["pairs"]
    conv, edge_E = d["converged"], d["edge_energy"]
    n = len(E)
    roots = len(tree.roots)
    sep, j = wf_separation(d, barriers)
    _, _, barriers_first = graph(cfg, ctx, "path_max")
    sep_first, _ = wf_separation(d, barriers_first)
    jname = "-" if j == 0 else (f"a {OPTIMIZERS[group[j]]} minimum (MSE {fmt(E[j])}, "
                                f"canonical distance {fmt(d['distances'][0, j])} from W_f)")
    fin = np.isfinite(to_wf)
    top = float(np.max(to_wf[fin]))
    const = float(d["constant_mse"][0])
    mean_like = np.abs(E - const) <= 1e-3
    wf_edges = (pairs[:, 0] == 0)
    bn = bottleneck_edges(n, pairs, edge_E)
    sep_conv = bool(j > 0 and bn[j] >= 0 and conv[bn[j]])
    solid = int(np.sum((bn >= 0) & conv[np.maximum(bn, 0)]))
    ratio = d["path_length"] / np.maximum(d["chord"], 1e-300)
    gain = d["line_max"] - d["path_max"]
    cut = d["path_max"] - d["image_max"]
    wf_moved = d["wf_path_max"] - d["path_max"][d["wf_edges"]]
    near_const = np.abs(to_wf[1:][fin[1:]] - const) <= 0.01 * const
    plateau_row = "-"
    if "plateau_edge" in d:
        pe = d["plateau_edge"].astype(bool)
        cap = np.maximum(np.maximum(E[pairs[:, 0]], E[pairs[:, 1]]), const)
        plateau_row = (f"{int(pe.sum())} (their bands peaked "
                       f"{spread((d['path_max'] - d['plateau_max'])[pe])} above it); the "
                       f"plateau path's maximum exceeds max(E_i, E_j, var(t)) by "
                       f"{fmt(float(np.max(d['plateau_max'] - cap)))} at most (rounding)")
    crit = (f"{'path maximum' if cfg.watch == 'path' else 'climbing image energy'} stable "
            f"to {cfg.etol:g} over {cfg.window} checks x {cfg.check_every} iterations on the "
            f"frozen grid, and the sampled Clarke measure of the gradient around the climbing "
            f"image (radius {cfg.gs_radius:g}) <= {cfg.gs_tol:g}")
    lines = [f"## {TITLE}", "", "![disconnectivity](ext_disconnectivity.png)", "",
             f"Minima: canonical W_f and the first quenched minima of each main run "
             f"(certified minima first, then the rest; certified saddles left out), "
             f"{int(d['n_duplicates'][0])} duplicate(s) within canonical distance "
             f"{cfg.dedup_tol:g} merged. Edges: each minimum to its {cfg.k_neighbours} nearest "
             f"in canonical distance, W_f to its {cfg.wf_neighbours} nearest"
             + (", and the minimum spanning tree (so that the graph is connected)"
                if cfg.spanning_tree else "") +
             f"; each relaxed as a climbing string of {cfg.n_images} images started on the "
             f"{'plateau path' if cfg.start == 'plateau' else 'straight line'} "
             f"(relunet.string_method, all bands in one batch, at most {cfg.max_iter} "
             f"iterations; converged: {crit}). W_f's bands relaxed again with {cfg.wf_images} "
             "images, the lower maximum kept. Edge energy: the maximum of the loss along the "
             "relaxed path, its segments that rise above its highest image relaxed as "
             f"strings of {cfg.refine_images} images of their own (at most {cfg.refine_iter} "
             "iterations; relunet.string_method.refine_segments), the top of an actual path, "
             "so an upper bound on the barrier "
             "(converged or not), or, where lower, the maximum along the plateau path "
             "(relunet.plateau: shrink one minimum's output layer onto the constant mean(t), "
             "cross the plateau of constant networks, grow the other's), which never "
             "exceeds max(E_i, E_j, var(t)): no barrier of the graph is above the MSE of the "
             "mean of f. Not the climbing image's energy: with so few images the "
             "loss between images rises above them (row 'path maximum minus highest image'). "
             "Saddle refinement by P-RFO (relunet.saddle) is not used: from the band peaks it "
             "did not converge (they sit on kinks). Compute time "
             f"{fmt(float(d['seconds'][0]))} s (W_f's second relaxation "
             f"{fmt(float(d['wf_seconds'][0]))} s). "
             "Values: median [10%, 90%].", ""]

    def row(name, f):
        return (name, *(f(g) for g in (-1, 0, 1)))
    lines += table(("", "W_f", *OPTIMIZERS), [
        row("minima", lambda g: str(int(np.sum(group == g)))),
        row("of them certified stationary", lambda g: str(int(np.sum(cert[group == g])))),
        row("MSE at the minima", lambda g: spread(E[group == g])),
        row(f"predicting the mean of f (MSE within 1e-3 of {fmt(const)})",
            lambda g: str(int(np.sum(mean_like[group == g])))),
        row("canonical distance from W_f", lambda g: spread(d["distances"][0, group == g])
            if g >= 0 else "0"),
        row("minimax barrier to W_f (MSE)", lambda g: spread(to_wf[(group == g) & fin])
            if g >= 0 else "-"),
        row("... seen from the minimum (barrier - its MSE)",
            lambda g: spread((to_wf - E)[(group == g) & fin]) if g >= 0 else "-")])
    lines += ["", *table(("edges", "value"), [
        ("bands (edges)", f"{len(pairs)}, of them {int(wf_edges.sum())} at W_f"),
        ("bands converged", f"{int(d['band_converged'].sum())} of {len(pairs)}"),
        ("edges set by a converged band (its path maximum below the plateau path's)",
         f"{int(conv.sum())} ({np.mean(conv):.0%}); at W_f "
         f"{int(conv[wf_edges].sum())} of {int(wf_edges.sum())}"),
        ("edge energy (MSE)", f"all {spread(edge_E)}; converged {spread(edge_E[conv])}"),
        ("path maximum: straight segments between the images -> rising segments relaxed",
         (f"{spread(d['chord_max'])} -> {spread(d['path_max'])} ({int(d['n_segments'])} "
          "segments relaxed)") if "chord_max" in d else "-"),
        ("path maximum minus highest image",
         f"{spread(cut)}; converged bands {spread(cut[d['band_converged']])}"),
        (f"W_f's bands with {cfg.wf_images} instead of {cfg.n_images} images: change of the "
         "path maximum", (", ".join(f"{v:+.3g}" for v in wf_moved)
                          if np.isfinite(wf_moved).any() else "-")
         + f"; converged {int(d['wf_converged'].sum())} of {len(wf_moved)}"),
        (f"edges above the MSE of the mean of f ({fmt(const)})", f"{int(np.sum(edge_E > const))}"),
        ("edges set by the plateau path (its maximum below the band's)", plateau_row),
        ("straight-line maximum minus path maximum (what relaxing gained)", spread(gain)),
        ("path length / chord", f"{spread(ratio)}; <= 1.5: {np.mean(ratio <= 1.5):.0%}"),
        *([_shortening(cfg, d, ratio)] if "shorten_round" in d else []),
        *_tops(d, const),
        ("connected components (trees of the graph)", f"{roots}")]), ""]
    lines += claims(
        ("(beyond the paper) the barrier that separates W_f's funnel from the rest: the level "
         "at which W_f first merges with another minimum",
         f"{fmt(sep)} MSE, with {jname}; without W_f's second relaxation {fmt(sep_first)}; "
         f"every minimum is joined to W_f below {fmt(top)}",
         "not in the paper; "
         + ("W_f is separated from every other minimum by a barrier above the mean "
            "predictor's MSE" if sep > const else
            f"a path leaves W_f's funnel {fmt(const - sep)} below the mean predictor's MSE")
         + ("; the band that sets it converged, so it is a saddle estimate (to the band "
            "tolerance)" if sep_conv else "; the band that sets it did not converge, "
            "so it is an upper bound")),
        ("(beyond the paper) minimax barriers from W_f",
         f"set by a converged band for {solid} of {n - 1} minima (the rest are upper bounds); "
         f"within 1% of the mean predictor's MSE for {int(near_const.sum())} of "
         f"{int(fin[1:].sum())}",
         "not in the paper" + ("; the paths from W_f climb to about the MSE of a network that "
                               "predicts the mean of f: to leave W_f, the network first "
                               "forgets f" if near_const.mean() >= 0.5 else "")),
        ("(beyond the paper) organisation of the minima",
         f"{roots} connected component(s), {tree.n_nodes} merge nodes on {cfg.n_levels} levels",
         "not in the paper (no such graph there)"), header=CLAIM)
    return "\n".join(lines)


def _tops(d, const) -> list:
    """The row on what the converged bands' highest points compute, in W_f's terms
    (relunet.geometry.components; as Fig. 4's row 'what the bands cross'): at the plateau
    of constant networks (var(t)) or at the spline level (the spline alone, no teeth)."""
    ok = d["band_converged"].astype(bool)
    if not ok.any():
        return []
    x, _ = wf_training_set()
    coef, _ = components(np.asarray(d["peak_point"], np.float64)[ok], WF_ARCH, x)
    level, peak = spline_level(x), d["path_max"][ok]
    return [("highest points of the converged bands, in W_f's terms (relunet.geometry."
             "components: teeth coefficient 1 at W_f, 0 without teeth)",
             f"teeth coefficient {spread(coef[:, 1])}, spline coefficient "
             f"{spread(coef[:, 0])}; path maximum within 1e-3 of var(t) = {fmt(const)}: "
             f"{int(np.sum(np.abs(peak - const) <= 1e-3))}, within 5e-3 of the spline level "
             f"{fmt(level)}: {int(np.sum(np.abs(peak - level) <= 5e-3))}, of "
             f"{int(ok.sum())}")]


def _shortening(cfg: Config, d, ratio):
    """The shortening rounds' row: (name, value)."""
    from . import fig4_neb
    kept = d["shorten_round"].astype(int)
    c0 = d["first_converged"].astype(bool)
    new = kept > 0
    dE = (d["band_peak"] - d["first_peak"])[new & c0]
    per = fig4_neb.rounds_kept(cfg, kept)
    r0 = d["first_length"] / np.maximum(d["chord"], 1e-300)
    return (f"shortening rounds (Fig. 4's: {cfg.shorten_rounds} free, {len(cfg.hold_widths)} with "
            f"the climbing image held; {cfg.shorten_sweeps} sweeps; a band replaced where the "
            "new one converged with its path maximum no higher than before + etol)",
            f"{int(new.sum())} of {len(kept)} replaced ({per}); bands converged "
            f"{int(c0.sum())} -> {int(d['band_converged'].sum())}; path length / chord "
            f"<= 1.5: {np.mean(r0 <= 1.5):.0%} -> {np.mean(ratio <= 1.5):.0%}; path maximum "
            f"of the replaced bands that had converged: change {spread(dE)}")


def numbers(cfg: Config, ctx) -> list:
    """W_f's funnel and the edges (the float32 report's comparison)."""
    d, _, barriers = graph(cfg, ctx)
    sep, _ = wf_separation(d, barriers)
    b = barriers[0][1:]
    b = b[np.isfinite(b)]
    return [("level at which W_f's funnel opens", sep),
            ("median minimax barrier to W_f", float(np.median(b)) if b.size else float("nan")),
            ("bands converged", int(np.sum(d["band_converged"]))),
            ("edges", len(d["pairs"]))]
