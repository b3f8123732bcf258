"""Bounded-variable least squares on the unit box, in numba: min |A u - b| over 0 <= u <= 1.

The step of the quench and the Clarke measure (:func:`relunet.kinks.hull_qp`)
solve this problem thousands of times, with a few to a hundred variables.
scipy's ``lsq_linear(method="bvls")`` (Stark & Parker 1995, "Bounded-variable
least-squares: an algorithm and applications", Comput. Stat. 10:129) solves it
exactly, but as a Python loop of NumPy calls: about ten least-squares solves
per problem, each paying tens of microseconds of NumPy's and scipy's call
overhead besides LAPACK's work. Compiled, the same solves take half the time
(measured on the quench's problems, one BLAS thread).

:func:`bvls01` is the same algorithm, step for step and operation for
operation, compiled: the unconstrained solution first (returned if it lies in
the box), then scipy's initialisation loop (solve on the free variables, clip
the ones that leave the box, repeat) and the main loop (free the bound
variable whose KKT condition is violated most, then solve on the free set and
step back to the box boundary until the solution is feasible), with the same
termination tests (KKT violation below ``tol``; a relative cost decrease below
``tol``; at most n main iterations). The least-squares solves are LAPACK's
``gelsd`` with scipy's ``rcond`` choices (machine precision for the first
solve, eps * max(m, n) inside the loop), the products are BLAS calls through
``np.dot`` as in scipy, and the element-wise steps are written in scipy's order
without fastmath. On the machine this was written on its answers are
bit-identical to scipy's on every problem the quench of 150 trained students
poses (tests/test_bvls.py holds it to scipy on random problems, to rounding,
since numba's and NumPy's BLAS libraries are separate builds).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._numba import STRICT

__all__ = ["bvls01", "lstsq"]

_EPS = float(np.finfo(np.float64).eps)


def bvls01(A, b, tol: float = 1e-14) -> np.ndarray:
    """argmin_{0 <= u <= 1} |A u - b|, as ``lsq_linear(A, b, (0, 1), "bvls", tol=tol).x``.

    Parameters
    ----------
    A : (m, n) with m >= n (the quench's problems carry a ridge of n rows);
    b : (m,);  tol : scipy's ``tol`` (KKT violation and relative cost decrease).
    """
    A = np.ascontiguousarray(A, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if A.ndim != 2 or b.shape != (A.shape[0],) or A.shape[0] < A.shape[1]:
        raise ValueError(f"A must be (m, n) with m >= n and b (m,), got A {A.shape}, "
                         f"b {b.shape}")
    if A.shape[1] == 0:
        return np.zeros(0)
    return _bvls01(A, b, float(tol))


def lstsq(A, b) -> np.ndarray:
    """``np.linalg.lstsq(A, b, rcond=None)[0]`` for a matrix A and a vector b, in numba
    (LAPACK's gelsd without NumPy's call overhead)."""
    A = np.ascontiguousarray(A, dtype=np.float64)
    b = np.ascontiguousarray(b, dtype=np.float64)
    if A.ndim != 2 or b.shape != (A.shape[0],):
        raise ValueError(f"A must be (m, n) and b (m,), got A {A.shape}, b {b.shape}")
    return _lstsq(A, b)


@njit(cache=True, fastmath=STRICT)
def _lstsq(A, b):
    """np.linalg.lstsq(A, b, rcond=None)[0]: gelsd with rcond = eps * max(m, n).
    With no column (every variable on a bound) NumPy returns an empty solution; so do we."""
    if A.shape[1] == 0:
        return np.zeros(0)
    return np.linalg.lstsq(A, b, _EPS * max(A.shape[0], A.shape[1]))[0]


@njit(cache=True, fastmath=STRICT)
def _kkt(g, on_bound):
    """Largest violation of the KKT conditions (scipy's compute_kkt_optimality)."""
    out = -np.inf
    for i in range(g.size):
        v = abs(g[i]) if on_bound[i] == 0 else g[i] * on_bound[i]
        if v > out:
            out = v
    return out


@njit(cache=True, fastmath=STRICT)
def _bvls01(A, b, tol):
    m, n = A.shape
    AT = A.T
    x = np.linalg.lstsq(A, b, -1.0)[0]            # lsq_linear: the unconstrained solution
    inside = True
    for i in range(n):
        if not (x[i] >= 0.0 and x[i] <= 1.0):
            inside = False
    if inside:
        return x
    # -- initialisation (scipy's bvls): clip to the box, solve on the free set, repeat
    on_bound = np.zeros(n)
    for i in range(n):
        if x[i] <= 0.0:
            x[i] = 0.0
            on_bound[i] = -1.0
        if x[i] >= 1.0:
            x[i] = 1.0
            on_bound[i] = 1.0
    free = np.flatnonzero(on_bound == 0)
    r = np.dot(A, x) - b
    cost = 0.5 * np.dot(r, r)
    g = np.dot(AT, r)
    iteration = 0
    while free.size > 0:
        iteration += 1
        xa = x * (on_bound != 0)                  # x * active_set, as scipy
        z = _lstsq(np.ascontiguousarray(A[:, free]), b - np.dot(A, xa))
        viol = np.zeros(free.size, np.bool_)
        for k in range(free.size):
            i = free[k]
            if z[k] < 0.0:
                x[i] = 0.0
                on_bound[i] = -1.0
                viol[k] = True
            elif z[k] > 1.0:
                x[i] = 1.0
                on_bound[i] = 1.0
                viol[k] = True
            else:
                x[i] = z[k]
        r = np.dot(A, x) - b
        cost = 0.5 * np.dot(r, r)
        g = np.dot(AT, r)
        if viol.any():
            free = free[~viol]
        else:
            break
    # -- main loop: free the most promising bound variable, re-solve, step back to the box
    optimality = _kkt(g, on_bound)
    done = False
    for _ in range(iteration, n + iteration):
        if optimality < tol:
            done = True
        if done:
            break
        move = np.argmax(g * on_bound)
        on_bound[move] = 0.0
        while True:
            free = np.flatnonzero(on_bound == 0)
            x_free = x[free]
            xa = x * (on_bound != 0)
            z = _lstsq(np.ascontiguousarray(A[:, free]), b - np.dot(A, xa))
            lbv = np.flatnonzero(z < 0.0)
            ubv = np.flatnonzero(z > 1.0)
            nv = lbv.size + ubv.size
            if nv > 0:
                # the first blocking bound along x_free -> z (lower violations first)
                best, alpha = 0, np.inf
                for k in range(nv):
                    j = lbv[k] if k < lbv.size else ubv[k - lbv.size]
                    num = (0.0 - x_free[j]) if k < lbv.size else (1.0 - x_free[j])
                    a = num / (z[j] - x_free[j])
                    if a < alpha or k == 0:
                        best, alpha = k, a
                i_free = lbv[best] if best < lbv.size else ubv[best - lbv.size]
                x_free *= 1 - alpha
                x_free += alpha * z
                x[free] = x_free
                on_bound[free[i_free]] = -1.0 if best < lbv.size else 1.0
            else:
                x[free] = z
                break
        r = np.dot(A, x) - b
        cost_new = 0.5 * np.dot(r, r)
        if cost - cost_new < tol * cost:
            done = True
        cost = cost_new
        g = np.dot(AT, r)
        optimality = _kkt(g, on_bound)
    return x
