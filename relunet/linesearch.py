"""Batched backtracking (Armijo) line search, shared by the descents of a stack of points.

For every row i of a stack, try the steps 1, 1/2, 1/4, ... along its direction d_i
and accept the first with

    E(x_i + step d_i) <= E(x_i) + c step s_i          (s_i = the slope g_i . d_i < 0)

(sufficient decrease: Nocedal & Wright 2006, Sec. 3.1), and, with ``strict``, a
loss strictly below E(x_i) (a decrease that rounding cannot fake). All rows still
searching share one ``efun`` call per halving; a row's result does not depend on
the others. Used by :func:`relunet.quench.lbfgs` (c = 1e-4) and
:func:`relunet.gradient_sampling.gradient_sampling` (c = 1e-6, strict).
"""
from __future__ import annotations

import numpy as np

__all__ = ["backtrack"]


def backtrack(efun, X, E, d, slope, c: float, strict: bool = False, max_halvings: int = 30):
    """Backtracking along d from every row of X (module docstring).

    Parameters
    ----------
    efun : callable X (k, D) -> (E (k,), G (k, D)), rows independent.
    X : (n, D) start points;  E : (n,) their energies.
    d : (n, D) directions;  slope : (n,) g . d at the start (negative for descent).
    c : the sufficient-decrease constant;  strict : also require E_new < E.
    max_halvings : trial steps at most per row (1, 1/2, ..., 2^-(max_halvings-1)).

    Returns
    -------
    step : (n,) accepted step (0 where none was accepted);  found : (n,) bool;
    E_new : (n,), G_new : (n, D) at the accepted points (E, and G unset, elsewhere:
    the caller keeps its own);  evals : (n,) energy evaluations per row.
    """
    n = len(X)
    step = np.ones(n)
    found = np.zeros(n, bool)
    evals = np.zeros(n, int)
    E_new = np.array(E, dtype=np.float64, copy=True)
    G_new = np.empty_like(d)
    for _ in range(max_halvings):
        pend = np.flatnonzero(~found)
        if pend.size == 0:
            break
        Et, Gt = efun(X[pend] + step[pend, None] * d[pend])
        evals[pend] += 1
        ok = np.isfinite(Et) & (Et <= E[pend] + c * step[pend] * slope[pend])
        if strict:
            ok &= Et < E[pend]
        E_new[pend[ok]], G_new[pend[ok]] = Et[ok], Gt[ok]
        found[pend[ok]] = True
        step[pend[~ok]] *= 0.5
    return np.where(found, step, 0.0), found, E_new, G_new, evals
