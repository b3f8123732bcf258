"""Toy energy surfaces for testing the nudged elastic band: batched, with exact gradients.

Every function here has the energy-function interface used by :mod:`relunet.neb`
and :mod:`relunet.string_method`:

    efun(X) -> (E, G)      X (n, D) points,  E (n,) energies,  G (n, D) = dE/dX

so a whole batch of bands is evaluated in one call, exactly like a stack of
networks with :func:`relunet.kernels.loss_and_grad`.

* :func:`mueller_brown` -- the two-dimensional surface of Mueller & Brown
  (Theor. Chim. Acta 53, 75 (1979)), the standard test of path methods:
  three minima and two saddles, with a curved minimum energy path.
* :func:`double_well` -- E = (x_0^2 - 1)^2 + sum_{j>=1} (x_j - c x_0^2)^2 in
  any dimension D >= 1. Minima at x_0 = +-1 (x_j = c, E = 0), a single saddle
  at the origin with barrier exactly 1. For c = 0 the minimum energy path is
  the straight x_0 axis; for c != 0 it is the parabola x_j = c x_0^2, so the
  straight initial band (which crosses x_0 = 0 at height 1 + (D-1) c^2) must
  bend to find the barrier.
* :func:`crease_well` -- E = (x_0^2 - 1)^2 + a sum_{j>=1} |x_j - c x_0^2|, a
  piecewise-smooth surface (a sharp V-shaped valley, like the kinks of a ReLU
  loss) with everything known in closed form: minima at x_0 = +-1, x_j = c
  (E = 0) ON the kink; for a > 1 and 0 <= c <= 1/2 the minimum energy path is
  the crease x_j = c x_0^2 itself, along which E = (x_0^2 - 1)^2; the saddle is
  the origin, again on the kink, with barrier exactly 1. The gradient jumps by
  2a across the crease, so no single-point force ever falls below a there.
"""

from __future__ import annotations

import numpy as np

__all__ = ["mueller_brown", "double_well", "crease_well", "stiff_valley", "MB_MINIMA", "MB_SADDLES"]

# Mueller & Brown (1979): E(x, y) = sum_k A_k exp(a_k (x - x0_k)^2
#                          + b_k (x - x0_k)(y - y0_k) + c_k (y - y0_k)^2)
_MB_A = np.array([-200.0, -100.0, -170.0, 15.0])
_MB_a = np.array([-1.0, -1.0, -6.5, 0.7])
_MB_b = np.array([0.0, 0.0, 11.0, 0.6])
_MB_c = np.array([-10.0, -10.0, -6.5, 0.7])
_MB_x0 = np.array([1.0, 0.0, -0.5, -1.0])
_MB_y0 = np.array([0.0, 0.5, 1.5, 1.0])

# Stationary points to 3 decimals (widely tabulated; E in the surface's units).
# Our tests locate the saddles independently with NEB; these are for reference.
MB_MINIMA = {"A": ((-0.558, 1.442), -146.70), "B": ((0.623, 0.028), -108.17),
             "C": ((-0.050, 0.467), -80.77)}
MB_SADDLES = {"AC": ((-0.822, 0.624), -40.66), "CB": ((0.212, 0.293), -72.25)}


def _as_points(X, width=None) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or (width is not None and X.shape[1] != width):
        want = f"(n, {width})" if width is not None else "(n, D)"
        raise ValueError(f"X must have shape {want}, got {X.shape}")
    return X


def mueller_brown(X):
    """Mueller-Brown energy and gradient at many points.

    Parameters
    ----------
    X : (n, 2) points (x, y).

    Returns
    -------
    E : (n,) energies;  G : (n, 2) gradients.
    """
    X = _as_points(X, 2)
    dx = X[:, :1] - _MB_x0                       # (n, 4)
    dy = X[:, 1:] - _MB_y0                       # (n, 4)
    terms = _MB_A * np.exp(_MB_a * dx * dx + _MB_b * dx * dy + _MB_c * dy * dy)
    E = terms.sum(axis=1)
    G = np.empty_like(X)
    G[:, 0] = (terms * (2.0 * _MB_a * dx + _MB_b * dy)).sum(axis=1)
    G[:, 1] = (terms * (_MB_b * dx + 2.0 * _MB_c * dy)).sum(axis=1)
    return E, G


def double_well(X, c: float = 0.0):
    """Double well with barrier exactly 1 at the origin, optionally curved.

    E(x) = (x_0^2 - 1)^2 + sum_{j>=1} (x_j - c x_0^2)^2

    Parameters
    ----------
    X : (n, D) points, D >= 1.
    c : curvature of the valley (0: straight valley along x_0).

    Returns
    -------
    E : (n,) energies;  G : (n, D) gradients.
    """
    X = _as_points(X)
    if X.shape[1] < 1:
        raise ValueError("X must have at least one column (D >= 1)")
    x0 = X[:, 0]
    r = X[:, 1:] - c * (x0 * x0)[:, None]        # (n, D-1) distance from the valley
    E = (x0 * x0 - 1.0) ** 2 + (r * r).sum(axis=1)
    G = np.empty_like(X)
    G[:, 0] = 4.0 * x0 * (x0 * x0 - 1.0) - 4.0 * c * x0 * r.sum(axis=1)
    G[:, 1:] = 2.0 * r
    return E, G


def crease_well(X, a: float = 2.0, c: float = 0.5):
    """Double well in a sharp V-shaped valley: barrier exactly 1, everything on kinks.

    E(x) = (x_0^2 - 1)^2 + a sum_{j>=1} |x_j - c x_0^2|

    Why the crease is the minimum energy path (2-D, r = y - c x^2): the normal
    of the crease is n = (-2cx, 1)/sqrt(1 + 4c^2x^2). The smooth part
    U = (x^2 - 1)^2 has normal slope |grad U . n| = 8c x^2 |x^2 - 1| / sqrt(...),
    at most 8c/4 = 2c <= 1 for |x| <= 1; the |r| term has one-sided normal
    slopes +-a sqrt(1 + 4c^2x^2), at least a. For a > 1 >= 2c every point of the
    crease with |x| <= 1 is therefore a V-shaped valley floor across the path
    (0 lies in the Clarke subdifferential of E restricted to the normal line)
    and the tangential force is -dU/ds; E along the crease is (x^2 - 1)^2,
    highest (= 1) at the origin, where grad U = 0 and the subdifferential of
    the |r| term, a [-1, 1] (0, 1), contains 0: a nonsmooth saddle point.
    At the kink the gradient returned uses sign(0) = 0 (a Clarke subgradient).

    Parameters
    ----------
    X : (n, D) points, D >= 2.
    a : slope of the V (> 0; the statements above need a > 1).
    c : curvature of the crease (the statements above need 0 <= c <= 1/2).

    Returns
    -------
    E : (n,) energies;  G : (n, D) gradients.
    """
    X = _as_points(X)
    if X.shape[1] < 2:
        raise ValueError(f"X must have at least two columns (D >= 2), got shape {X.shape}")
    if not (np.isfinite(a) and a > 0 and np.isfinite(c)):
        raise ValueError(f"a must be a finite number > 0 and c finite, got a={a!r}, c={c!r}")
    x0 = X[:, 0]
    r = X[:, 1:] - c * (x0 * x0)[:, None]
    s = np.sign(r)
    E = (x0 * x0 - 1.0) ** 2 + a * np.abs(r).sum(axis=1)
    G = np.empty_like(X)
    G[:, 0] = 4.0 * x0 * (x0 * x0 - 1.0) - 2.0 * a * c * x0 * s.sum(axis=1)
    G[:, 1:] = a * s
    return E, G


def stiff_valley(X, a: float = 1.0, b: float = 1e4, c: float = 0.5, hessian: bool = False):
    """Double well in a curved valley with a stiff wall across it: barrier exactly 1.

    E(x) = (x_0^2 - 1)^2 + a (x_1 - c x_0^2)^2 + b sum_{j>=2} x_j^2

    Minima at (+-1, c, 0...), E = 0; the minimum energy path is the curve
    x_1 = c x_0^2 (x_j = 0 beyond), along which E = (x_0^2 - 1)^2; its saddle is the
    origin, E = 1, with Hessian diag(-4, 2a, 2b, ...): index 1. With b >> a the
    directions across the path differ in curvature by b / a (1e4 by default), the
    situation of a network's loss, whose walls curve at 1e3-1e5 beside weak
    directions: a steepest-descent step stable across the wall (h < 1 / b) crawls
    along the weak direction.

    Returns E (n,), G (n, D) and, with ``hessian``, H (n, D, D).
    """
    X = _as_points(X)
    if X.shape[1] < 2:
        raise ValueError(f"X must have at least two columns (D >= 2), got shape {X.shape}")
    x, y = X[:, 0], X[:, 1]
    u = y - c * x * x
    z = X[:, 2:]
    E = (x * x - 1.0) ** 2 + a * u * u + b * (z * z).sum(axis=1)
    G = np.empty_like(X)
    G[:, 0] = 4.0 * x * (x * x - 1.0) - 4.0 * a * c * x * u
    G[:, 1] = 2.0 * a * u
    G[:, 2:] = 2.0 * b * z
    if not hessian:
        return E, G
    n, D = X.shape
    H = np.zeros((n, D, D))
    H[:, 0, 0] = 12.0 * x * x - 4.0 - 4.0 * a * c * u + 8.0 * a * c * c * x * x
    H[:, 0, 1] = H[:, 1, 0] = -4.0 * a * c * x
    H[:, 1, 1] = 2.0 * a
    idx = np.arange(2, D)
    H[:, idx, idx] = 2.0 * b
    return E, G, H
