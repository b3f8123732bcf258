"""Lowess smoothing (Cleveland 1979, J. Amer. Statist. Assoc. 74, 829-836), NumPy only.

Fig. 5 draws it through the final losses of the restarts against their noise norm.

At an evaluation point x0, take the r = floor(frac * n) data points nearest to x0
(at least 2, at most n; see below),
let h be the distance from x0 to the r-th nearest of them, and give point k the
tricube weight (Cleveland 1979, Sec. 2, step 1)::

    w_k = (1 - (|x_k - x0| / h)^3)^3   if |x_k - x0| < h,   else 0.

(If h = 0, i.e. the r nearest points are all tied at x0, the tied points get
weight 1 and the rest 0.) The fit at x0 is the intercept a of the local weighted
least-squares line, in local coordinates d_k = x_k - x0::

    (a, b) = argmin  sum_k w_k (y_k - a - b d_k)^2
    a = (A2 C0 - A1 C1) / (A0 A2 - A1^2),   A_j = sum w d^j,  C_j = sum w d^j y.

Where the weighted spread of d is zero (one point, or ties only) the line is
undefined and the weighted mean C0 / A0 is used instead.

The neighbour count is that of Cleveland's own Fortran and C code and of R:
``r = max(2, floor(frac * n + 1e-7))``, capped at n (R's ``clowess``: ``ns =
imax2(2, imin2(n, (int)(f*n + 1e-7)))``; statsmodels also rounds down). The
1e-7 keeps an integral frac * n from rounding down to one less in floating
point. (An earlier version here took ceil(frac * n): one neighbour more
whenever frac * n is not an integer, e.g. 154 instead of 153 at Fig. 5's
n = 512, frac = 0.3, changing its curve by up to 1.4e-3.) The r
nearest points of sorted data form a window, found by bisection, so the cost is
O(n r) flops, in blocks of ~1e6 doubles.

Robustness iterations (Sec. 2, steps 2-4): with residuals e_i = y_i - yhat_i and
s = median |e_i|, each point gets the bisquare weight delta_i = B(e_i / (6 s)),
B(u) = (1 - u^2)^2 for |u| < 1 else 0, which multiplies its tricube weight in the
next fit. ``it`` such rounds are run. Default it = 0 (R and statsmodels use 3):
the basin experiment's outcomes are 0/1-like (a run returns to the global minimum
or not; its final loss is ~0 or clearly not), and on such data most residuals are
~0, s collapses and the bisquare weights throw away whole neighbourhoods, giving
asymmetric or NaN curves (statsmodels issue #2108, and PR #9220 which, like R,
stops iterating when the MAD is ~0). We stop likewise when s < 1e-7 * mean|e|; a
neighbourhood whose robustness weights are all zero keeps its previous fit. Worse,
where most runs return (loss ~0), the bisquare weights treat the others as
outliers and the robust curve collapses onto 0 instead of showing the mean loss.
"""
from __future__ import annotations

import math

import numpy as np

from ._check import vector

__all__ = ["lowess", "neighbours"]


def _bandwidth(xs: np.ndarray, x0: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance h to the r-th nearest point of sorted ``xs`` (n,) for each x0 (m,).

    The r nearest points of a sorted array form a window xs[lo:lo+r]; lo is found
    by a vectorised bisection (shift right while the left end is farther than the
    next point on the right). Returns (h (m,), lo (m,) int).
    """
    n = xs.size
    i = np.searchsorted(xs, x0)
    a = np.clip(i - r, 0, n - r)
    b = np.clip(i, 0, n - r)
    while np.any(a < b):
        mid = (a + b) // 2
        right = xs[np.minimum(mid + r, n - 1)]
        active = a < b  # there mid + r < n, so `right` is the next point
        shift = (x0 - xs[mid]) > (right - x0)
        a, b = np.where(active & shift, mid + 1, a), np.where(active & ~shift, mid, b)
    h = np.maximum(x0 - xs[a], xs[a + r - 1] - x0)
    return h, a


def _local_linear(xs, ys, rw, x0, r, fallback=None, block=1 << 20) -> np.ndarray:
    """Tricube-weighted local linear fit at sorted x0 (m,) from sorted data (n,).

    ``rw`` (n,) are robustness weights (ones for plain lowess). Where every weight
    in a neighbourhood is zero the value from ``fallback`` (m,) is used (NaN if
    None). Works on blocks of evaluation points whose windows overlap, against the
    column slice covering them (< 2r columns), so memory stays at ~``block``
    doubles; the weighted sums are one matrix product per block.
    """
    m = x0.size
    h, lo = _bandwidth(xs, x0, r)
    inv_h = np.divide(1.0, h, out=np.zeros(m), where=h > 0)
    out = np.empty(m)
    rows = max(1, block // (2 * r))
    s = 0
    while s < m:
        # lo is nondecreasing in x0: rows whose windows start within r of lo[s]
        e = min(m, s + rows, int(np.searchsorted(lo, lo[s] + r, side="right")))
        c0, c1 = lo[s:e].min(), lo[s:e].max() + r  # columns any window needs
        xb, xe = xs[c0:c1], x0[s:e]
        w = np.subtract(xb[None, :], xe[:, None])  # (mb, k) d = x_k - x0
        np.abs(w, out=w)
        w *= inv_h[s:e, None]  # u = |d| / h
        u3 = w * w
        u3 *= w
        np.subtract(1.0, u3, out=w)
        np.maximum(w, 0.0, out=w)
        np.multiply(w, w, out=u3)
        w *= u3  # tricube (1 - u^3)^3
        tie = h[s:e] == 0  # h = 0: only points tied with x0 count
        if tie.any():
            w[tie] = xb[None, :] == xe[tie, None]
        # moments about a block centre xc, shifted to each x0 below (dx = x0 - xc)
        xc = xe[(e - s) // 2]
        z = xb - xc
        Z = np.column_stack([np.ones_like(z), z, z * z, ys[c0:c1], z * ys[c0:c1]])
        ac0, ac1, ac2, cc0, cc1 = (w @ (Z * rw[c0:c1, None])).T  # A_j, C_j about xc
        dx = xe - xc
        A0, A1, A2 = ac0, ac1 - dx * ac0, ac2 - 2.0 * dx * ac1 + dx * dx * ac0
        C0, C1 = cc0, cc1 - dx * cc0
        det = A0 * A2 - A1 * A1
        with np.errstate(divide="ignore", invalid="ignore"):
            # zero spread: weighted variance det/A0^2 below (1e-7 h)^2
            flat = det <= 1e-14 * (h[s:e] ** 2) * A0 * A0
            line = (A2 * C0 - A1 * C1) / np.where(flat, 1.0, det)
            out[s:e] = np.where(flat, C0 / A0, line)
        s = e
    bad = ~np.isfinite(out)  # only A0 == 0: all robustness weights zero
    if np.any(bad):
        out[bad] = np.nan if fallback is None else fallback[bad]
    return out


def _anchors(xs: np.ndarray, delta: float) -> np.ndarray:
    """Indices of sorted ``xs`` where lowess is fitted exactly (Cleveland's delta).

    delta = 0: one per distinct x. delta > 0: skip points within delta of the last
    anchor; the last point is always an anchor. Others are linearly interpolated.
    """
    if delta == 0.0:
        return np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    idx = [0]
    while True:
        j = int(np.searchsorted(xs, xs[idx[-1]] + delta, side="right"))
        if j >= xs.size:
            break
        idx.append(j)
    if xs[-1] > xs[idx[-1]]:
        idx.append(xs.size - 1)
    return np.asarray(idx)


def neighbours(frac: float, n: int) -> int:
    """Points in each lowess neighbourhood: max(2, floor(frac n + 1e-7)), at most n.

    As R's ``clowess`` (and Cleveland's code); the 1e-7 absorbs rounding when
    frac * n is an integer (e.g. 0.3 * 10 = 2.9999999999999996).
    """
    return min(n, max(2, math.floor(frac * n + 1e-7)))


def lowess(x, y, frac: float = 2.0 / 3.0, it: int = 0, delta: float = 0.0,
           xvals=None) -> np.ndarray:
    """Cleveland (1979) locally weighted linear regression of y on x.

    Parameters
    ----------
    x, y : array_like (n,)
        Data, finite, any order.
    frac : float in (0, 1]
        Fraction of points in each neighbourhood: r = max(2, floor(frac * n))
        points, at most n (as Cleveland's code and R; module docstring).
    it : int >= 0
        Robustness (bisquare) iterations. Default 0; see the module docstring for
        why (0/1-like outcomes, statsmodels issue #2108).
    delta : float >= 0
        Fit exactly only at data points more than ``delta`` apart (and the last);
        interpolate linearly in between. 0 fits at every distinct x.
    xvals : array_like (m,), optional
        Where to evaluate the final fit (robustness weights, if any, come from
        the fit at the data points).

    Returns
    -------
    ndarray
        If ``xvals`` is None: shape (2, n), row 0 = x sorted (stable), row 1 = the
        fitted values there, so ``xs, ys = lowess(x, y)`` unpacks. Otherwise shape
        (m,): fitted values at ``xvals`` in the order given.
    """
    x = vector(x, "x")
    y = vector(y, "y")
    if x.size != y.size:
        raise ValueError(f"x and y must have the same length, got {x.size} and "
                         f"{y.size}")
    if not (isinstance(frac, (int, float, np.floating)) and 0.0 < frac <= 1.0):
        raise ValueError(f"frac must be a number in (0, 1], got {frac!r}")
    if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
        raise ValueError(f"it must be an integer >= 0, got {it!r}")
    if not (isinstance(delta, (int, float, np.floating)) and 0.0 <= delta < np.inf):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    xv = None if xvals is None else vector(xvals, "xvals", allow_empty=True)

    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]  # (n,) sorted data
    n = xs.size
    r = neighbours(frac, n)
    rw = np.ones(n)  # (n,) robustness weights
    anchors = _anchors(xs, float(delta))

    xa = xs[anchors]  # (na,) distinct x where the fit is exact

    def fit_at_data(rw, prev):  # (n,) fitted values at the sorted data
        at = _local_linear(xs, ys, rw, xa, r, None if prev is None else prev[anchors])
        return np.interp(xs, xa, at) if anchors.size < n else at

    fit = fit_at_data(rw, None)
    for _ in range(it):
        res = np.abs(ys - fit)
        s = np.median(res)
        if not s > 1e-7 * res.mean():  # MAD ~ 0: unstable, stop (as R does)
            break
        u = np.clip(res / (6.0 * s), 0.0, 1.0)
        rw = (1.0 - u * u) ** 2
        fit = fit_at_data(rw, fit)
    if xv is None:
        return np.vstack([xs, fit])
    if xv.size == 0:
        return np.empty(0)
    o = np.argsort(xv, kind="stable")
    fb = np.interp(xv[o], xa, fit[anchors])  # only where all weights vanished
    out = np.empty(xv.size)
    out[o] = _local_linear(xs, ys, rw, xv[o], r, fb)
    return out
