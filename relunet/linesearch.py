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
    the caller keeps its own);  evals : (n,) trial steps up to the accepted one
    (max_halvings where none was).

    The rows that reject the full step are few, but one of them may need a dozen
    halvings, each an ``efun`` call that costs far more than its rows' work. So
    the halvings are tried several at once: the second call evaluates the next 4
    trial steps of every row still searching, the third the next 8, and so on,
    and each row takes the first of them that is accepted. The result is the one
    the halvings give one by one, bit for bit (the same trial points, since
    halving a power of two is exact, and rows are independent); only the wasted
    evaluations beyond a row's accepted step are extra, and not counted in evals.
    """
    n, D = X.shape
    step = np.zeros(n)
    found = np.zeros(n, bool)
    evals = np.full(n, max_halvings)
    E_new = np.array(E, dtype=np.float64, copy=True)
    G_new = np.empty_like(d)
    k0, width = 0, 1
    while k0 < max_halvings:
        pend = np.flatnonzero(~found)
        if pend.size == 0:
            break
        ks = np.arange(k0, min(k0 + width, max_halvings))
        trial = 0.5 ** ks                                       # 1, 1/2, 1/4, ... exactly
        Et, Gt = efun((X[pend, None] + trial[None, :, None] * d[pend, None]).reshape(-1, D))
        Et, Gt = Et.reshape(pend.size, ks.size), Gt.reshape(pend.size, ks.size, D)
        ok = np.isfinite(Et) & (Et <= E[pend, None] + c * trial[None, :] * slope[pend, None])
        if strict:
            ok &= Et < E[pend, None]
        hit = ok.any(axis=1)
        first = np.argmax(ok, axis=1)[hit]                      # the first accepted trial
        rows = pend[hit]
        step[rows], found[rows], evals[rows] = trial[first], True, k0 + first + 1
        E_new[rows], G_new[rows] = Et[hit, first], Gt[hit, first]
        k0 += ks.size
        width = 4 if width == 1 else 2 * width
    return step, found, E_new, G_new, evals
