"""Exact knots (breakpoints) of a one-input ReLU network, by walking its linear regions.

A ReLU network with scalar input x is continuous and piecewise linear in x.
Inside one linear region every pre-activation is an affine function of x,

    z_{l,j}(x) = alpha_{l,j} + beta_{l,j} x,

obtained by pushing the pair (alpha, beta) through the layers with the current
on/off pattern of the units. The region ends at the nearest x where some
pre-activation changes sign, i.e. the smallest root -alpha/beta to the right of
the current point. Walking from x = -inf to +inf this way visits every region
exactly once (Chen, Gamst & Walker 2016, "Knots in random neural networks",
count them this way). A region boundary is a *knot* of the network function
only where the output slope actually changes: a unit can switch without
changing the output (e.g. when nothing downstream listens), so boundaries with
equal slopes on both sides are merged.

No sampling is involved; the only tolerances are the ones that decide whether
two slopes are equal and whether a root coincides with the current point.
"""
from __future__ import annotations

import numpy as np

from .net import Arch, check_stack

__all__ = ["linear_regions", "knots", "steepest_piece"]


def _pattern_forms(v, arch: Arch, x0: float, ztol: float):
    """Affine forms of all pre-activations in the region just right of x0.

    Returns list of (alpha, beta) per hidden layer and the output (alpha, beta).
    x0 = -inf selects the region at the far left (sign of beta decides).
    """
    a = np.zeros(1)
    b = np.ones(1)                       # h_0 = x = 0 + 1 * x
    forms = []
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        alpha = v[wn] @ a + v[bn]
        beta = v[wn] @ b
        forms.append((alpha, beta))
        if np.isinf(x0):
            on = (beta < 0) | ((beta == 0) & (alpha > 0))
        else:
            z = alpha + beta * x0
            scale = ztol * (1.0 + np.abs(alpha) + np.abs(beta * x0))
            on = (z > scale) | ((np.abs(z) <= scale) & (beta > 0))
        a = np.where(on, alpha, 0.0)
        b = np.where(on, beta, 0.0)
    out = (v["Wout"] @ a + v["bout"], v["Wout"] @ b)
    return forms, out


def linear_regions(w, arch: Arch, ztol: float = 1e-12, max_regions: int = 100_000):
    """All linear regions of a 1-input, 1-output network on the real line.

    Returns
    -------
    bounds : (R+1,) region boundaries, bounds[0] = -inf, bounds[-1] = +inf.
    slopes, intercepts : (R,) output = intercepts[r] + slopes[r] * x in region r.
    """
    if not isinstance(arch, Arch) or arch.n_in != 1 or arch.n_out != 1:
        raise ValueError("arch must be a relunet.Arch with n_in = n_out = 1")
    w = check_stack(w, arch)
    if w.shape[0] != 1:
        raise ValueError(f"w must be one network of shape ({arch.P},), got {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError("w contains non-finite values")
    v = arch.unpack(w[0].astype(np.float64))
    bounds, slopes, intercepts = [-np.inf], [], []
    x0 = -np.inf
    for _ in range(max_regions):
        forms, (oa, ob) = _pattern_forms(v, arch, x0, ztol)
        slopes.append(float(ob[0]))
        intercepts.append(float(oa[0]))
        nxt = np.inf
        for alpha, beta in forms:
            nz = beta != 0
            roots = -alpha[nz] / beta[nz]
            if np.isfinite(x0):
                roots = roots[roots > x0 + ztol * (1.0 + abs(x0))]
            if roots.size:
                nxt = min(nxt, roots.min())
        bounds.append(nxt)
        if not np.isfinite(nxt):
            return np.array(bounds), np.array(slopes), np.array(intercepts)
        x0 = nxt
    raise RuntimeError(f"more than max_regions={max_regions} linear regions")


def knots(w, arch: Arch, lo: float = -1.0, hi: float = 1.0, stol: float = 1e-9):
    """Exact breakpoints of the network function in the closed interval [lo, hi].

    A region boundary counts as a knot when the output slopes on its two sides
    differ by more than ``stol * (1 + |s_left| + |s_right|)``.

    Returns
    -------
    (n_knots,) sorted array.
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"need finite lo < hi, got lo={lo}, hi={hi}")
    bounds, slopes, _ = linear_regions(w, arch)
    inner = bounds[1:-1]
    jump = np.abs(np.diff(slopes)) > stol * (1.0 + np.abs(slopes[:-1]) + np.abs(slopes[1:]))
    k = inner[jump]
    eps = 1e-12 * (1.0 + max(abs(lo), abs(hi)))
    return k[(k >= lo - eps) & (k <= hi + eps)]


def steepest_piece(w, arch: Arch, x_data=None, lo: float = -1.0, hi: float = 1.0):
    """The steepest linear piece of the network function on [lo, hi], exactly.

    Returns (slope, width, hidden): the largest |slope| of a linear region that
    meets [lo, hi], the width of that region within [lo, hi], and whether no
    point of ``x_data`` lies strictly inside it (a piece that fits between two
    adjacent training points, which the loss cannot see: a cliff the data do not
    constrain). ``hidden`` is False when ``x_data`` is None.
    """
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"need finite lo < hi, got lo={lo}, hi={hi}")
    bounds, slopes, _ = linear_regions(w, arch)
    a, b = np.maximum(bounds[:-1], lo), np.minimum(bounds[1:], hi)
    meets = b > a
    r = np.flatnonzero(meets)[np.argmax(np.abs(slopes[meets]))]
    hidden = False
    if x_data is not None:
        xd = np.asarray(x_data, dtype=np.float64).ravel()
        hidden = not np.any((xd > a[r]) & (xd < b[r]))
    return float(abs(slopes[r])), float(b[r] - a[r]), bool(hidden)
