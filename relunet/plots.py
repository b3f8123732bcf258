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
