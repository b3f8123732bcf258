"""Gradient sampling: descent and a stationarity certificate on ANY piecewise-smooth energy.

The network quench (:mod:`relunet.quench`) certifies a point exactly: it
enumerates the kinks a network sits on and measures the distance of 0 from
the convex hull of the one-sided gradients. That needs the network's
structure (its pre-activations). An energy given only as a function
``efun(X) -> (E, G)`` (the analytic surfaces of :mod:`relunet.neb_surfaces`,
a band's energy, a user's own) needs a method that sees the kinks through
gradients alone. This is the gradient sampling algorithm of Burke, Lewis &
Overton (SIAM J. Optim. 15, 751 (2005); convergence strengthened by Kiwiel,
SIAM J. Optim. 18, 379 (2007)):

1. at the point x and at ``n_samples`` points drawn uniformly in the ball of
   radius eps around it, take the gradients (one batched ``efun`` call for
   every point still moving);
2. g* = the shortest vector of their convex hull (:func:`min_norm_point`);
3. if |g*| <= tol: x is, as far as the samples can tell, Clarke
   (eps, tol)-stationary; shrink eps (``shrink``) and repeat; at the
   smallest radius ``radius_min`` this is the certificate;
4. otherwise step along -g* with a backtracking (Armijo) line search; if no
   step decreases E, shrink eps (the samples straddle a kink the line search
   cannot get past).

Why it works where a single gradient cannot: at a kink the gradient jumps,
so |grad E| never becomes small at a minimum on a kink (on the tilted crease
below it stays near the slope of the V). But 0 lies in the Clarke
subdifferential there, the convex hull of the gradients of the pieces that
meet at x (Clarke, *Optimization and Nonsmooth Analysis*, 1983), and the
gradients sampled around x come from those pieces: their hull contains
(nearly) 0. Along a crease with a slope, g* is the direction along the
crease, the one descent direction steepest descent zig-zags around.

The certificate is sampled: samples that miss a piece can only make |g*|
larger (the hull of fewer gradients is smaller), so it errs on the side of
"not certified"; the weights of g* are always feasible, so the norm reported
is an upper bound of the exact minimum norm of the samples' hull.

Every point is treated on its own: the sample directions of iteration k are
the same for every point (seeded by (seed, k)) and scaled by the point's own
radius, so a point's result does not depend on the others in the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .linesearch import backtrack

__all__ = ["GradientSamplingResult", "gradient_sampling", "min_norm_point"]


def min_norm_point(P) -> tuple[np.ndarray, np.ndarray]:
    """Shortest vector of the convex hull of the rows of each P[k], P (N, m, D).

    Solved as non-negative least squares (Lawson-Hanson active set, exact up
    to rounding) with a heavy row that asks the weights to sum to 1; the
    weights are then renormalised to sum to exactly 1, so the point returned
    is in the hull and its norm an upper bound of the minimum.
    Returns (g (N, D), norm (N,)).
    """
    from scipy.optimize import nnls
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 3 or P.shape[1] == 0:
        raise ValueError(f"P must have shape (N, m, D) with m >= 1, got {P.shape}")
    N, m, D = P.shape
    g = np.empty((N, D))
    for k in range(N):
        scale = max(float(np.abs(P[k]).max()), 1e-300)
        A = np.vstack([P[k].T / scale, 1e3 * np.ones(m)])
        b = np.concatenate([np.zeros(D), [1e3]])
        u, _ = nnls(A, b, maxiter=50 * m)
        s = u.sum()
        u = u / s if s > 0 else np.full(m, 1.0 / m)
        g[k] = u @ P[k]
    return g, np.sqrt(np.einsum("nd,nd->n", g, g))


@dataclass
class GradientSamplingResult:
    """Points after :func:`gradient_sampling`; every array has a leading n axis."""

    X: np.ndarray            # (n, D) final points
    energy: np.ndarray       # (n,) energies there (never above the start)
    certified: np.ndarray    # (n,) bool: |g*| <= tol with samples within radius_min
    measure: np.ndarray      # (n,) |g*| of the last sampling (inf: never sampled)
    radius: np.ndarray       # (n,) the sampling radius reached
    iterations: np.ndarray   # (n,) sampling rounds
    reason: np.ndarray       # (n,) str: why it stopped


def _check_positive(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
            or not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {v!r}")


def gradient_sampling(efun, X, radius: float = 1e-2, radius_min: float = 1e-8,
                      tol: float = 1e-8, n_samples: int | None = None, max_iter: int = 1000,
                      shrink: float = 0.1, seed: int = 0) -> GradientSamplingResult:
    """Descend from each row of X by gradient sampling to a certified Clarke
    (radius_min, tol)-stationary point (module docstring).

    Parameters
    ----------
    efun : callable X (k, D) -> (E (k,), G (k, D)), rows independent.
    X : (n, D) or (D,) start points.
    radius : initial sampling radius eps (the scale on which kinks are seen).
    radius_min : the radius of the certificate (eps shrinks to it).
    tol : the largest |g*| that counts as stationary.
    n_samples : gradients sampled per round besides x's own; default 2 D + 1
        (Burke, Lewis & Overton need at least D + 1).
    max_iter : sampling rounds at most per point.
    shrink : factor applied to eps when the point looks stationary at eps or
        no step along -g* decreases E (0 < shrink < 1).
    seed : seed of the sample directions.

    Returns
    -------
    GradientSamplingResult; a point that ran out of rounds has certified False.
    """
    if not callable(efun):
        raise ValueError(f"efun must be callable X (n, D) -> (E, G), got {type(efun).__name__}")
    X = np.array(np.atleast_2d(X), dtype=np.float64)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise ValueError(f"X must be a finite (n, D) array, got shape {X.shape}")
    for name, v in (("radius", radius), ("radius_min", radius_min), ("tol", tol)):
        _check_positive(name, v)
    if radius_min > radius:
        raise ValueError(f"radius_min must be <= radius, got {radius_min} > {radius}")
    if not (0 < shrink < 1):
        raise ValueError(f"shrink must lie in (0, 1), got {shrink!r}")
    n, D = X.shape
    m = 2 * D + 1 if n_samples is None else n_samples
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    E, G = efun(X)
    E, G = np.array(E, dtype=np.float64), np.array(G, dtype=np.float64)
    eps = np.full(n, float(radius))
    floor = float(radius_min) * (1.0 + 1e-12)
    meas = np.full(n, np.inf)
    certified = np.zeros(n, bool)
    active = np.ones(n, bool)
    iters = np.zeros(n, int)
    reason = np.full(n, f"round budget ({max_iter}) spent", dtype=object)
    for k in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        rng = np.random.default_rng([seed, k])
        U = rng.standard_normal((m, D))
        U *= (rng.random((m, 1)) ** (1.0 / D)) / np.linalg.norm(U, axis=1, keepdims=True)
        pts = X[a, None] + eps[a, None, None] * U[None]          # uniform in each ball
        _, Gs = efun(pts.reshape(-1, D))
        P = np.concatenate([G[a, None], np.asarray(Gs).reshape(a.size, m, D)], axis=1)
        g, nrm = min_norm_point(P)
        meas[a] = nrm
        iters[a] += 1
        small = nrm <= tol
        done = small & (eps[a] <= floor)
        certified[a[done]] = True
        active[a[done]] = False
        reason[a[done]] = "certified"
        eps[a[small & ~done]] = np.maximum(eps[a[small & ~done]] * shrink, radius_min)
        # --- backtracking line search along -g* for the others, batched
        ls = np.flatnonzero(~small)
        if ls.size == 0:
            continue
        b, d = a[ls], -g[ls]
        dd = np.einsum("nd,nd->n", d, d)
        step, found, Enew, Gnew, _ = backtrack(efun, X[b], E[b], d, -dd, 1e-6, strict=True,
                                               max_halvings=50)
        i = np.flatnonzero(found)
        X[b[i]] += step[i, None] * d[i]
        E[b[i]], G[b[i]] = Enew[i], Gnew[i]
        fail = b[~found]
        stuck = fail[eps[fail] <= floor]
        active[stuck] = False
        reason[stuck] = "no descent along -g* at the smallest radius"
        eps[fail] = np.maximum(eps[fail] * shrink, radius_min)
    return GradientSamplingResult(X=X, energy=E, certified=certified, measure=meas, radius=eps,
                                  iterations=iters, reason=reason.astype(str))
