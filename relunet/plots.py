"""The one place (besides relunet/experiments) that imports matplotlib.

One style for every figure, a ``savefig`` that writes PNG and PDF into the
figures folder, and reusable panels that take ``ax=None`` and return the axes.
Colours follow the paper: f in blue, fits in green/red, probabilities in blue.
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

if "MPLBACKEND" not in os.environ:
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

F_COLOR = "#1f4e9c"       # the target f (blue, as in the paper)
FIT_COLOR = "#2ca02c"     # a fitted network (green)
MEAN_COLOR = "#d62728"    # mean fits and lowess curves (red)
OPT_COLORS = {"momentum": "#9467bd", "adadelta": "#ff7f0e"}
OPT_LABELS = {"momentum": "GD + momentum", "adadelta": "Adadelta"}

STYLE = {
    "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10,
    "axes.labelsize": 9, "legend.fontsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.25,
    "lines.linewidth": 1.3, "savefig.bbox": "tight",
}


def style() -> None:
    plt.rcParams.update(STYLE)


def figure(ncols=1, nrows=1, width=3.4, height=2.7, **kw):
    """A grid of panels, ``width`` x ``height`` inches each, laid out by matplotlib's
    constrained layout (labels and titles never overlap a neighbouring panel)."""
    style()
    kw.setdefault("layout", "constrained")
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kw)
    return fig, axes


def log_axis(ax, which="y") -> None:
    """Log scale labelled at 1, 2 and 5 times each decade, in plain numbers
    (matplotlib's default labels only the decades, or crowds narrow panels)."""
    from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter
    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def savefig(fig, name: str, outdir) -> list[str]:
    """Write ``name``.png and ``name``.pdf into ``outdir``; close the figure."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        p = outdir / f"{name}.{ext}"
        fig.savefig(p, metadata={"CreationDate": None} if ext == "pdf" else None)
        paths.append(str(p))
    plt.close(fig)
    return paths


def plot_function(x, y, ax=None, **kw):
    """A function on [-1, 1]."""
    ax = ax or plt.gca()
    ax.plot(x, y, **kw)
    ax.set_xlabel("x")
    ax.set_ylabel("output")
    return ax


def mean_band(x, mu, sd, ax=None, color=MEAN_COLOR, label="mean fit"):
    """A mean curve with a +-1 standard deviation band."""
    ax = ax or plt.gca()
    ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.25, lw=0, label="± 1 sd")
    ax.plot(x, mu, color=color, label=label)
    return ax


def colored_line(x, y, c, ax=None, cmap="viridis", lw=2.0):
    """A line whose colour follows ``c`` (e.g. distance along a NEB path)."""
    from matplotlib.collections import LineCollection
    ax = ax or plt.gca()
    pts = np.column_stack([x, y]).reshape(-1, 1, 2)
    segs = np.concatenate([pts[:-1], pts[1:]], axis=1)
    lc = LineCollection(segs, cmap=cmap, linewidths=lw)
    lc.set_array(np.asarray(c)[:-1])
    ax.add_collection(lc)
    ax.autoscale_view()
    return lc


def _branch_points(tree, t):
    """Polyline of the line from leaf or node t up to its parent (or the top)."""
    n, L = tree.n_minima, tree.levels
    bottom = tree.energies[t] if t < n else L[tree.node_level[t - n]]
    p = tree.parent[t]
    if p < 0:  # a root: straight up to the top level
        return [tree.x[t], tree.x[t]], [bottom, max(bottom, L[-1])]
    kp = tree.node_level[p - n]
    knee = max(bottom, L[kp - 1]) if kp > 0 else bottom
    return [tree.x[t], tree.x[t], tree.x[p]], [bottom, knee, L[kp]]


def disconnectivity_graph(tree, ax=None, colors=None, labels=None, highlight=None, linewidth=1.0):
    """Draw a disconnectivity graph (energy up, one line per minimum).

    Each minimum i is one line (``Line2D`` with gid ``"minimum i"``) from (x_i, E_i)
    straight up to one level below its merge node, then slanting to the node; each
    node's line (gid ``"node t"``) does the same up to its parent. Roots run up to
    the top level; separate trees stand side by side.

    Parameters
    ----------
    tree : :class:`relunet.disconnectivity.DisconnectivityTree` (from
        :func:`relunet.disconnectivity.build`)
    ax : matplotlib Axes, optional
        Drawn on a new figure if None.
    colors : sequence of n matplotlib colours, optional
        Per-minimum colour (e.g. by optimizer). A node's line takes the colour its
        minima share, or black if they differ.
    labels : sequence of n str, optional
        Text written under each minimum's line.
    highlight : int, optional
        A minimum to draw prominently (thick line, a dot at its bottom), e.g. W_f.
    linewidth : float, default 1.0

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.colors import to_rgba

    from .disconnectivity import DisconnectivityTree, check_index
    if not isinstance(tree, DisconnectivityTree):
        raise ValueError(f"tree: expected a DisconnectivityTree, got {type(tree).__name__}")
    n = tree.n_minima
    if colors is not None and len(colors) != n:
        raise ValueError(f"colors: expected {n} colours, one per minimum, got {len(colors)}")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: expected {n} labels, one per minimum, got {len(labels)}")
    if highlight is not None:
        highlight = check_index("highlight", highlight, n)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    rgba = [to_rgba("k")] * n if colors is None else [to_rgba(c) for c in colors]

    for q in range(tree.n_nodes):
        t = n + q
        shades = {rgba[i] for i in tree.members(t)}
        color = shades.pop() if len(shades) == 1 else to_rgba("k")
        xs, ys = _branch_points(tree, t)
        ax.plot(xs, ys, color=color, lw=linewidth, solid_capstyle="butt", gid=f"node {t}")
    for i in range(n):
        xs, ys = _branch_points(tree, i)
        strong = i == highlight
        ax.plot(xs, ys, color=rgba[i], lw=linewidth * (3 if strong else 1),
                zorder=3 if strong else 2, gid=f"minimum {i}")
        if strong:
            ax.plot([xs[0]], [ys[0]], "o", color=rgba[i], ms=5 * linewidth, zorder=4,
                    gid=f"highlight {i}")
        if labels is not None:
            ax.text(xs[0], ys[0], f"{labels[i]} ", rotation=90, ha="center", va="top",
                    fontsize=7)

    span = tree.levels[-1] - tree.energies.min()
    ax.set_ylim(tree.energies.min() - 0.05 * span, tree.levels[-1] + 0.02 * span)
    ax.set_xlim(tree.x.min() - 1, tree.x.max() + 1)
    ax.set_xticks([])
    ax.set_ylabel("energy")
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.grid(False)
    return ax
