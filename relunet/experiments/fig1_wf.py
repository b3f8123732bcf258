"""Fig. 1: the hand-built network W_f and its output f (G&W Sec. 2, Fig. 1).

Left: the 5x5 network drawn layer by layer, nonzero weights bold, the
2-unit sawtooth block and 3-unit spline block side by side. Right: f on
[-1, 1] with its 35 knots and the 341 training points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..construct import WF_ARCH, build_wf, default_heights
from ..data import wf_training_set
from ..kernels import forward, loss
from ..knots import knots
from .frame import preset
from .tables import table

NAME = "fig1_wf"
TITLE = "Fig. 1: the hand-built network W_f and its function f"
NEEDS = ()   # experiments whose stored results compute() reads
RESULT = "wf"


@dataclass(frozen=True)
class Config:
    scale: str = "default"
    heights_seed: int = 0       # spline heights from default_rng(heights_seed)
    n_plot: int = 4001          # points on which f is drawn


config = preset(Config)          # the same at every scale


def compute(cfg: Config, ctx) -> dict:
    from ..symmetry import canonicalize
    h = default_heights(cfg.heights_seed)
    w = build_wf(h)
    x, t = wf_training_set(h)
    xs = np.linspace(-1, 1, cfg.n_plot)
    kn = knots(w, WF_ARCH)
    wc = canonicalize(w[None, :], WF_ARCH)[0]
    return dict(w=w, w_canonical=wc, heights=h, x=x, t=t, xs=xs,
                ys=forward(w, WF_ARCH, xs)[0], knots=kn, knot_values=forward(w, WF_ARCH, kn)[0],
                # the plain kernel computed the targets: W_f's loss there is exactly 0
                # (the vector kernel sums in another order: ~1e-32)
                loss=loss(w, WF_ARCH, x, t, kernel="plain"))


def _draw_network(ax, w, arch):
    from ..plots import F_COLOR, FIT_COLOR
    v = arch.unpack(w)
    L = arch.K + 2                                    # input, K hidden, output
    ypos = lambda n: np.arange(n)[::-1] - (n - 1) / 2.0  # noqa: E731
    sizes = [1] + [arch.N] * arch.K + [1]
    pos = [np.column_stack([np.full(n, col), ypos(n)]) for col, n in enumerate(sizes)]
    # unused (noqa): widths below scale as min(1, |w|/2), not |w|/wmax; was wmax meant?
    wmax = max(np.abs(w).max(), 1e-12)  # noqa: F841
    for layer in range(1, L):
        Wl = v[arch.layer_blocks(layer)[0]]           # (out, in)
        for j in range(Wl.shape[0]):
            for i in range(Wl.shape[1]):
                (x0, y0), (x1, y1) = pos[layer - 1][i], pos[layer][j]
                if Wl[j, i] == 0:
                    ax.plot([x0, x1], [y0, y1], color="0.85", lw=0.4, zorder=1)
                else:
                    lw = 1.2 + 2.0 * min(1.0, abs(Wl[j, i]) / 2.0)
                    col = "#444444" if Wl[j, i] > 0 else "#b03030"
                    ax.plot([x0, x1], [y0, y1], color=col, lw=lw, zorder=2)
    for col, p in enumerate(pos):
        for j, (xx, yy) in enumerate(p):
            fc = "white"
            if 0 < col < L - 1:
                fc = F_COLOR if j < 2 else FIT_COLOR
            ax.scatter([xx], [yy], s=140, c=fc, edgecolors="k", zorder=3)
    ax.text(0, -3.1, "x", ha="center")
    ax.text(L - 1, -3.1, "f(x)", ha="center")
    for col in range(1, L - 1):
        ax.text(col, 3.0, f"layer {col}", ha="center", fontsize=7)
    ax.scatter([], [], c=F_COLOR, edgecolors="k", label="sawtooth block (2 units)")
    ax.scatter([], [], c=FIT_COLOR, edgecolors="k", label="spline block (3 units)")
    ax.plot([], [], color="#444444", lw=2, label="weight > 0 (bold)")
    ax.plot([], [], color="#b03030", lw=2, label="weight < 0 (bold)")
    ax.plot([], [], color="0.85", lw=0.6, label="weight = 0")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    ax.set_xlim(-0.5, L - 0.5)
    ax.set_ylim(-3.4, 3.4)
    ax.axis("off")
    ax.set_title(f"W_f: a {arch} ReLU network, {arch.P} parameters")


def plot(cfg: Config, ctx) -> list[str]:
    from ..plots import F_COLOR, figure, savefig
    d = ctx.results(NAME, cfg).load_array(RESULT)
    fig, (a0, a1) = figure(2, 1, width=4.2, height=3.4,
                           gridspec_kw=dict(width_ratios=[1.1, 1]))
    _draw_network(a0, d["w"], WF_ARCH)
    a1.plot(d["xs"], d["ys"], color=F_COLOR, label="f = sawtooth + spline")
    a1.plot(d["knots"], d["knot_values"], "o", ms=3, color="k",
            label=f"{d['knots'].size} knots")
    a1.plot(d["x"], np.full(d["x"].size, d["ys"].min() - 0.15), "|", ms=5, mew=0.4,
            color="0.4", label=f"{d['x'].size} training points")
    a1.set_xlabel("x")
    a1.set_ylabel("f(x)")
    a1.set_title("the output f of W_f")
    a1.legend(loc="upper left", fontsize=7)
    return savefig(fig, "fig1_wf", ctx.figures)


def report(cfg: Config, ctx) -> str:
    d = ctx.results(NAME, cfg).load_array(RESULT)
    nw = np.linalg.norm(d["w"])
    nc = np.linalg.norm(d["w_canonical"])
    h = ", ".join(f"{v:.4f}" for v in d["heights"])
    return "\n".join([
        f"## {TITLE}", "",
        "![fig1](fig1_wf.png)", "",
        *table(("quantity", "ours", "paper", "verdict"), [
            ("parameters", f"{WF_ARCH.P}", "136 (5x5)", "reproduced"),
            ("knots of f in [-1, 1]", f"{d['knots'].size}", "35 (the hand construction)",
             "reproduced"),
            ("training points", f"{d['x'].size} distinct", "341 (authors' script: 350 rows)",
             "reproduced (341-point variant)"),
            ("loss of W_f on its training set", f"{float(d['loss'][0])!r}", "0", "reproduced"),
            ("spline heights", f"[{h}]", "unknown (no seed)", "our documented default"),
            ("L2 norm raw / canonical", f"{nw:.2f} / {nc:.2f}", "unknown",
             "the construction's own check: about 50.7 / 11.7")]),
        "",
    ])
