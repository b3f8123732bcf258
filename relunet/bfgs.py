"""Batched BFGS with a weak-Wolfe line search: the descent that works on kinks.

The first stage of a quench (:func:`relunet.quench.descend`) has to run down
long descents of a loss that is only piecewise smooth. Lewis & Overton
(Math. Program. 141:135, 2013) found that plain BFGS, with the *full*
inverse-Hessian approximation and an inexact line search that asks only for the
weak Wolfe conditions, keeps descending where the gradient jumps: crossing a
V-shaped kink, the gradient difference y is large against the step s, so the
update learns a huge curvature across the kink and a small inverse curvature
H along its normal, and the next directions run along the kink instead of into
it. Its iterates converge (typically linearly) to Clarke-stationary points of
semi-algebraic functions (piecewise polynomials, like a ReLU network's loss),
and a failing line search is the usual way it ends: the point is then on or
next to kinks, where the Newton stage of :func:`relunet.quench.quench` takes
over. Limited-memory BFGS cannot hold that curvature across many kinks
(:func:`relunet.quench.lbfgs` keeps 20 pairs, a network's minimum sits on
dozens of kinks) and stalls at the first one its backtracking cannot cross.
Measured on the 150 students of the default run (10,000 steps, then the same
Newton stage): the quench certified 29 after BFGS against 11 after L-BFGS,
and BFGS ended lower on 111 (median MSE 0.111 against 0.127 for the momentum
students, 0.090 against 0.101 for Adadelta's), moving them twice as far
(median 16 against 8 in weight space): the descents the students sit on are long.

The line search (Lewis & Overton 2013, Sec. 4.2, after Lemarechal 1981):
with s = g . d < 0 the slope at the start, a trial step t is

* too long if E(x + t d) > E(x) + c1 t s (Armijo fails): b = t;
* too short if g(x + t d) . d < c2 s (the slope has not risen enough): a = t;
* accepted otherwise (the weak Wolfe conditions: c1 = 1e-4, c2 = 0.5);

and the next trial is (a + b) / 2 once b is set, 2 a before (doubling). Unlike
the strong Wolfe conditions (|g . d| small), these can always be met on a
function that is bounded below, kinks or not. Every step is at most
``max_step`` long, as in :func:`relunet.quench.lbfgs`: the direction is cut to
that length, and the doubling stops there (a quench should end at a minimum
near its start; unbounded doubling changed little: 27 instead of 29 of the
150 default students certified). A search that ends without a Wolfe point
takes the longest Armijo point it found (a > 0, a decrease); one that found
none clears H to the identity and retries along -g; a second failure stops
the point there. H is updated whenever s.y > 0, which keeps it positive
definite.

H starts as the identity and is scaled to (s.y / y.y) I at the first update
(Nocedal & Wright 2006, Eq. 6.20); every Wolfe step has s.y >= (1 - c2) |t s| > 0.
Each point (row) has its own H (P x P; 150 networks of 136 weights: 22 MB;
a stack whose H would exceed ``MAX_H_BYTES`` runs in chunks of rows) and is
treated on its own: the stack, its chunking and the threads do not change any
bit. The direction d = -H g and the update run in numba kernels
(:func:`_direction_kernel`, :func:`_update_kernel`; their NumPy twins
``_direction_numpy`` and ``_update_numpy`` state the same sums), split over
the process's kernel threads (:func:`relunet.fast.stack.run_threads`). They are
memory-bound (150 networks: 22 MB of H), so the update also computes the next
direction in its pass over H, bit for bit what :func:`_direction` gives. Every
line-search trial of all rows still searching is one ``efun`` call.

For networks (:func:`relunet.quench.descend`) the same descent runs compiled:
:func:`bfgs_networks` takes each network from its first step to its last in one
numba loop (:func:`_bfgs_rows`), calling the generated loss-and-gradient kernel on
that one row, so its H stays in the core's cache and no Python runs between steps.
Profiled on the default quench's 350 students, the batched driver spent about three
times as long in the H update (two threads streaming 350 H's from memory) as in the
gradients; the compiled loop ran 2,000 steps of them in 4.5 s against 15.9 s. It is
the batched driver, bit for bit: the same kernels for d and the update, the search
and stopping rules step by step, and NumPy's pairwise summation for every dot
product and norm (:func:`_pairwise`); the tests hold it to :func:`bfgs` on rows that
stop in each of the four ways, and the default run's quench gave the same 70 stored
arrays bit for bit. :func:`bfgs` stays the readable statement and the descent of any
other energy.
"""
from __future__ import annotations

import types

import numba
import numpy as np
from numba import njit

from ._numba import STRICT
from .fast.stack import run_threads

__all__ = ["bfgs", "bfgs_networks", "stop_reason"]

C1, C2 = 1e-4, 0.5       #: weak Wolfe constants (Lewis & Overton 2013)
MAX_H_BYTES = 1 << 29     #: inverse Hessians held at once (512 MiB); more: chunks of rows

#: why a descent stops, and what it reports (every descent: bfgs, bfgs_networks and
#: relunet.quench.lbfgs); the compiled loop's stop codes index this tuple
_STOPS = ("budget", "gtol", "kink", "stagnant")
_BUDGET, _GTOL, _KINK, _STAGNANT = range(len(_STOPS))     #: the codes _bfgs_rows writes
_REASONS = {"budget": "iteration budget ({max_iter}) spent", "gtol": "gradient norm <= gtol",
            "kink": "line search failed along -grad (a kink)",
            "stagnant": "loss stagnant for {patience} steps"}


def stop_reason(why, max_iter=None, patience=None) -> str:
    """The reason string of a descent that stopped for ``why`` (a name of ``_STOPS``
    or its code)."""
    return _REASONS[_STOPS[why] if isinstance(why, (int, np.integer)) else why].format(
        max_iter=max_iter, patience=patience)


# =============================================================================
# d = -H g and the inverse BFGS update, per row
# =============================================================================
def _direction_numpy(H, G):
    """-H_m g_m for every row m (H symmetric): the sum over q of H[m, q, :] g[m, q],
    in that order (the kernel's order)."""
    d = np.zeros_like(G)
    for q in range(G.shape[1]):
        d -= H[:, q, :] * G[:, q, None]
    return d


@njit(cache=True, fastmath=STRICT)
def _direction_kernel(H, rows, G, D, i0, i1):
    P = G.shape[1]
    for i in range(i0, i1):
        d = D[i]
        for p in range(P):
            d[p] = 0.0
        for q in range(P):
            gq = G[i, q]
            row = H[rows[i], q]
            for p in range(P):            # an axpy over a contiguous row: it vectorises
                d[p] -= row[p] * gq


def _update_numpy(H, S, Y, first):
    """The inverse BFGS update of every row (Nocedal & Wright 2006, Eq. 6.17),
    H <- (I - rho s y^T) H (I - rho y s^T) + rho s s^T, rho = 1 / s.y, written as
    H + rho (1 + rho y.Hy) s s^T - rho (Hy s^T + s Hy^T); rows with ``first`` set
    start from H = (s.y / y.y) I."""
    for m in range(len(S)):
        s, y = S[m], Y[m]
        sy = float(np.sum(s * y))
        if first[m]:
            H[m] = np.eye(len(s)) * (sy / float(np.sum(y * y)))
        Hy = np.zeros_like(y)
        for q in range(len(y)):
            Hy += H[m, q] * y[q]
        rho = 1.0 / sy
        a = rho * (1.0 + rho * float(np.sum(y * Hy)))
        H[m] += a * np.outer(s, s) - rho * (np.outer(Hy, s) + np.outer(s, Hy))


@njit(cache=True, fastmath=STRICT)
def _update_kernel(H, rows, S, Y, first, Gn, D, i0, i1):
    """The update of H[rows[i]], and with it the next direction D[i] = -H_new Gn[i],
    accumulated row by row as the rows of H_new are written (one pass over H instead
    of two; the sums in :func:`_direction_kernel`'s order, so the same bits)."""
    P = S.shape[1]
    Hy = np.empty(P)
    for i in range(i0, i1):
        m = rows[i]
        s, y = S[i], Y[i]
        sy, yy = 0.0, 0.0
        for p in range(P):
            sy += s[p] * y[p]
            yy += y[p] * y[p]
        Hm = H[m]
        if first[i]:
            h0 = sy / yy
            for q in range(P):
                for p in range(P):
                    Hm[q, p] = 0.0
                Hm[q, q] = h0
        for p in range(P):
            Hy[p] = 0.0
        for q in range(P):
            yq = y[q]
            for p in range(P):
                Hy[p] += Hm[q, p] * yq
        rho = 1.0 / sy
        yHy = 0.0
        for p in range(P):
            yHy += y[p] * Hy[p]
        a = rho * (1.0 + rho * yHy)
        d = D[i]
        for p in range(P):
            d[p] = 0.0
        for q in range(P):
            asq = a * s[q]
            rhq = rho * Hy[q]
            rsq = rho * s[q]
            row = Hm[q]
            for p in range(P):
                row[p] += asq * s[p] - (rhq * s[p] + rsq * Hy[p])
            gq = Gn[i, q]
            for p in range(P):
                d[p] -= row[p] * gq


def _threads(M):
    """Threads for M rows: numba's thread count (what the energy kernels use, set by
    --threads or NUMBA_NUM_THREADS), one below 16 rows; the bits do not depend on it."""
    return numba.get_num_threads() if M >= 16 else 1


def _direction(H, rows, G):
    """-H[rows[i]] G[i] for every i (H (M, P, P) is not copied)."""
    D = np.empty(G.shape)
    run_threads(_direction_kernel, (H, np.asarray(rows, dtype=np.int64),
                                    np.ascontiguousarray(G, dtype=np.float64), D),
                len(rows), _threads(len(rows)))
    return D


def _update(H, rows, S, Y, first, G_new):
    """The update of H[rows[i]] by the pair (S[i], Y[i]), in place; returns the next
    directions -H_new[rows[i]] G_new[i] (the bits of :func:`_direction`)."""
    D = np.empty(np.shape(G_new))
    run_threads(_update_kernel, (H, np.asarray(rows, dtype=np.int64),
                                 np.ascontiguousarray(S, dtype=np.float64),
                                 np.ascontiguousarray(Y, dtype=np.float64),
                                 np.asarray(first, dtype=np.bool_),
                                 np.ascontiguousarray(G_new, dtype=np.float64), D), len(rows),
                _threads(len(rows)))
    return D


# =============================================================================
# The weak-Wolfe line search, batched
# =============================================================================
def weak_wolfe(efun, X, E, d, slope, c1: float = C1, c2: float = C2, max_trials: int = 40,
               t_max=np.inf):
    """Bisection-and-doubling search for the weak Wolfe conditions (module docstring)
    from every row of X along d; all rows still searching share one efun call per trial.

    ``t_max`` (scalar or (n,)): the doubling stops there; a row still too short at
    t_max takes it (an Armijo point, not a Wolfe point).

    Returns step (n,) (0 where no Armijo point was found), wolfe (n,) bool (the step
    meets both conditions; else it is the longest Armijo point found), E_new (n,),
    G_new (n, D) at the step (unset where step is 0), evals (n,).
    """
    n, D = X.shape
    t_max = np.broadcast_to(np.asarray(t_max, dtype=np.float64), (n,))
    lo, hi, t = np.zeros(n), np.full(n, np.inf), np.minimum(1.0, t_max)
    done = np.zeros(n, bool)
    wolfe = np.zeros(n, bool)
    evals = np.zeros(n, int)
    E_new, G_new = np.array(E, dtype=np.float64, copy=True), np.empty_like(d)
    E_lo = np.array(E, dtype=np.float64, copy=True)
    for _ in range(max_trials):
        p = np.flatnonzero(~done)
        if p.size == 0:
            break
        Et, Gt = efun(X[p] + t[p, None] * d[p])
        evals[p] += 1
        arm = np.isfinite(Et) & (Et <= E[p] + c1 * t[p] * slope[p])
        curv = np.sum(Gt * d[p], axis=1) >= c2 * slope[p]
        ok = arm & curv
        q = p[ok]
        done[q], wolfe[q], lo[q] = True, True, t[q]
        E_new[q], G_new[q] = Et[ok], Gt[ok]
        hi[p[~arm]] = t[p[~arm]]
        short = arm & ~curv
        lo[p[short]], E_lo[p[short]] = t[p[short]], Et[short]
        G_new[p[short]] = Gt[short]
        done[p[short & (t[p] >= t_max[p])]] = True         # at the cap: take it
        nxt = p[~ok]
        t[nxt] = np.where(np.isfinite(hi[nxt]), 0.5 * (lo[nxt] + hi[nxt]),
                          np.minimum(2.0 * lo[nxt], t_max[nxt]))
    # no Wolfe point: the longest Armijo point (its E and G are kept above), if any
    rest = np.flatnonzero(~wolfe & (lo > 0))
    E_new[rest] = E_lo[rest]
    step = np.where(wolfe | (lo > 0), lo, 0.0)
    return step, wolfe, E_new, G_new, evals


# =============================================================================
# The driver
# =============================================================================
def _check_wolfe(c1, c2) -> None:
    if not 0 < c1 < c2 < 1:
        raise ValueError(f"the Wolfe constants need 0 < c1 < c2 < 1, got c1={c1}, c2={c2}")


def bfgs(efun, W, max_iter: int = 2000, max_step: float = 0.5, gtol: float = 1e-9,
         patience: int = 25, c1: float = C1, c2: float = C2, progress=None):
    """Batched full BFGS with the weak-Wolfe line search from every row of W.

    ``efun``: X (n, D) -> (E (n,), G (n, D)), rows independent. A row stops when
    |grad| <= gtol, when its line search fails along -grad too (on a kink: nothing
    along -grad decreases the energy), when the energy has fallen by less than
    1e-14 of itself in ``patience`` consecutive steps, or after ``max_iter`` steps.
    Returns a :class:`relunet.quench.DescentResult` (the energy never increases).
    """
    from .quench import DescentResult, _descent_input, _take_steps
    W = _descent_input(efun, W, max_step, max_iter=max_iter, patience=patience)
    _check_wolfe(c1, c2)
    M, P = W.shape
    per_row = 8 * P * P
    if M > 1 and M * per_row > MAX_H_BYTES:
        # the rows are independent: run them in chunks whose H fit, the same bits
        rows = max(1, MAX_H_BYTES // per_row)
        parts, done0 = [], 0
        for c0 in range(0, M, rows):
            sub = None if progress is None else \
                (lambda n, _m, d0=done0: progress(d0 + n, M))
            parts.append(bfgs(efun, W[c0:c0 + rows], max_iter=max_iter, max_step=max_step,
                              gtol=gtol, patience=patience, c1=c1, c2=c2, progress=sub))
            done0 += len(parts[-1].W)
        return DescentResult(**{f: np.concatenate([getattr(r, f) for r in parts])
                                for f in ("W", "loss", "iterations", "evaluations", "reason")})
    L, G = efun(W)
    L, G = np.array(L, dtype=np.float64), np.array(G, dtype=np.float64)
    H = np.zeros((M, P, P))
    H[:, np.arange(P), np.arange(P)] = 1.0
    first = np.ones(M, bool)              # H is the identity: scale it at the first update
    D_next = np.empty((M, P))             # -H G, computed by the last update where fresh
    fresh = np.zeros(M, bool)
    iters, evals, slow = np.zeros(M, int), np.ones(M, int), np.zeros(M, int)
    reason = np.full(M, stop_reason("budget", max_iter=max_iter), dtype=object)
    active = np.linalg.norm(G, axis=1) > gtol
    reason[~active] = stop_reason("gtol")
    for _ in range(max_iter):
        a = np.flatnonzero(active)
        if a.size == 0:
            break
        fr = fresh[a]
        d = np.empty((a.size, P))
        d[fr] = D_next[a[fr]]
        if not fr.all():
            d[~fr] = _direction(H, a[~fr], G[a[~fr]])
        gd = np.sum(G[a] * d, axis=1)
        bad = ~(gd < 0) | ~np.all(np.isfinite(d), axis=1)
        fresh[a] = False
        if bad.any():                     # not a descent direction: start H again
            H[a[bad]] = np.eye(P)
            first[a[bad]] = True
            d[bad] = -G[a[bad]]
        nd = np.linalg.norm(d, axis=1)
        d *= np.minimum(1.0, max_step / np.where(nd > 0, nd, 1.0))[:, None]
        gd = np.sum(G[a] * d, axis=1)
        step, wolfe, Lnew, Gnew, ev = weak_wolfe(efun, W[a], L[a], d, gd, c1, c2,
                                                 t_max=max_step / np.maximum(
                                                     np.linalg.norm(d, axis=1), 1e-300))
        evals[a] += ev
        found = step > 0
        # no decrease at all: clear H and retry along -grad; along -grad already: stop
        fail = a[~found]
        stop = fail[bad[~found] | first[fail]]
        active[stop] = False
        reason[stop] = stop_reason("kink")
        H[fail] = np.eye(P)
        first[fail] = True
        i = np.flatnonzero(found)
        m = a[i]
        s_ = step[i, None] * d[i]
        y_ = Gnew[i] - G[m]
        upd = np.sum(s_ * y_, axis=1) > 0
        if upd.any():
            mu = m[upd]
            D_next[mu] = _update(H, mu, s_[upd], y_[upd], first[mu], Gnew[i][upd])
            first[mu] = False
            fresh[mu] = True
        _take_steps(W, L, G, m, s_, Lnew[i], Gnew[i], iters, slow, active, reason, gtol,
                    patience)
        if progress is not None:
            progress(int(M - active.sum()), M)
    if progress is not None:
        progress(M, M)                    # the rows still active have spent their budget
    return DescentResult(W=W, loss=L, iterations=iters, evaluations=evals,
                         reason=reason.astype(str))


# =============================================================================
# The same descent for networks, one compiled loop per network
# =============================================================================


@njit(cache=True, fastmath=STRICT)
def _block(a, i0, n):
    """NumPy's pairwise sum of a[i0:i0 + n] for n <= 128: eight running sums."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i0 + i]
        return res
    r0, r1, r2, r3 = a[i0], a[i0 + 1], a[i0 + 2], a[i0 + 3]
    r4, r5, r6, r7 = a[i0 + 4], a[i0 + 5], a[i0 + 6], a[i0 + 7]
    i = 8
    while i < n - (n % 8):
        r0 += a[i0 + i]
        r1 += a[i0 + i + 1]
        r2 += a[i0 + i + 2]
        r3 += a[i0 + i + 3]
        r4 += a[i0 + i + 4]
        r5 += a[i0 + i + 5]
        r6 += a[i0 + i + 6]
        r7 += a[i0 + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i0 + i]
        i += 1
    return res


@njit(cache=True, fastmath=STRICT)
def _pairwise(a, i0, n):
    """NumPy's pairwise sum of a[i0:i0 + n] (numpy's ``pairwise_sum``: blocks of at most
    128 summed by :func:`_block`, split in halves rounded down to a multiple of 8 above
    that), so that the compiled loop's dot products and norms are np.sum's and
    np.linalg.norm's bit for bit. The split is walked with an explicit stack: numba
    cannot load a recursive function from its cache."""
    if n <= 128:
        return _block(a, i0, n)
    h = n // 2 - (n // 2) % 8
    if n - h <= 128:                           # one split (every P up to 256)
        return _block(a, i0, h) + _block(a, i0 + h, n - h)
    st_i, st_n = np.empty(128, np.int64), np.empty(128, np.int64)
    st_s, vals = np.zeros(128, np.int64), np.empty(128)
    sp, vp = 0, 0
    st_i[0], st_n[0], st_s[0] = i0, n, 0
    while sp >= 0:
        i, m = st_i[sp], st_n[sp]
        if m <= 128:                           # a leaf: its block sum
            vals[vp] = _block(a, i, m)
            vp += 1
            sp -= 1
        elif st_s[sp] == 0:                    # split: left on top, done first
            st_s[sp] = 1
            h = m // 2 - (m // 2) % 8
            st_i[sp + 1], st_n[sp + 1], st_s[sp + 1] = i + h, m - h, 0
            st_i[sp + 2], st_n[sp + 2], st_s[sp + 2] = i, h, 0
            sp += 2
        else:                                  # both halves summed: left + right
            vals[vp - 2] = vals[vp - 2] + vals[vp - 1]
            vp -= 1
            sp -= 1
    return vals[0]


@njit(cache=True, fastmath=STRICT)
def _dot(u, v, tmp):
    """np.sum(u * v) of two (P,) rows, in NumPy's order (reduce with identity 0)."""
    for p in range(len(u)):
        tmp[p] = u[p] * v[p]
    return 0.0 + _pairwise(tmp, 0, len(u))


@njit(cache=True, fastmath=STRICT)
def _identity(H):
    P = H.shape[1]
    for q in range(P):
        for p in range(P):
            H[0, q, p] = 0.0
        H[0, q, q] = 1.0


lg = None    #: in _bfgs_rows, the generated kernel module's loss_grad_range (_rows_kernel)


def _bfgs_rows(data, K, nchunks, clen, dys, invc, W, L, G, iters, evals, code,
               max_iter, max_step, gtol, patience, c1, c2, i0, i1):
    """Rows i0..i1 of :func:`bfgs` on a network stack, each to its end in one loop: the
    same arithmetic in the same order (the direction and update kernels above, the
    weak-Wolfe search of :func:`weak_wolfe`, the stopping rules of
    ``quench._take_steps``), ``lg`` the generated loss-and-gradient kernel called on
    one row. W, L, G, iters, evals, code are written in place. Compiled once per
    kernel module by :func:`_rows_kernel` (plain Python here)."""
    P = W.shape[1]
    H = np.empty((1, P, P))
    rows0 = np.zeros(1, dtype=np.int64)
    first = np.ones(1, dtype=np.bool_)
    w = np.empty((1, P))
    g = np.empty((1, P))
    d = np.empty((1, P))
    dn = np.empty((1, P))
    X = np.empty((1, P))
    Et = np.empty(1)
    Gt = np.empty((1, P))
    Gn = np.empty((1, P))
    S = np.empty((1, P))
    Y = np.empty((1, P))
    E1 = np.empty(1)
    tmp = np.empty(P)
    for i in range(i0, i1):
        w[0] = W[i]
        lg(w, data, K, nchunks, clen, dys, invc, E1, g, 0, 1)
        Lc = E1[0]
        evals[i] = 1
        iters[i] = 0
        code[i] = _BUDGET
        if not np.sqrt(_dot(g[0], g[0], tmp)) > gtol:
            code[i] = _GTOL
        else:
            _identity(H)
            first[0] = True
            fresh = False
            slow = 0
            for _ in range(max_iter):
                if fresh:
                    d[0] = dn[0]
                else:
                    _direction_kernel(H, rows0, g, d, 0, 1)
                fresh = False
                gd = _dot(g[0], d[0], tmp)
                bad = not gd < 0 or not np.all(np.isfinite(d[0]))
                if bad:
                    _identity(H)
                    first[0] = True
                    for p in range(P):
                        d[0, p] = -g[0, p]
                nd = np.sqrt(_dot(d[0], d[0], tmp))
                scale = min(1.0, max_step / (nd if nd > 0 else 1.0))
                for p in range(P):
                    d[0, p] *= scale
                gd = _dot(g[0], d[0], tmp)
                t_max = max_step / max(np.sqrt(_dot(d[0], d[0], tmp)), 1e-300)
                # the weak-Wolfe search (weak_wolfe, one row)
                lo, hi, t = 0.0, np.inf, min(1.0, t_max)
                wolfe = False
                E_new, E_lo = Lc, Lc
                for _trial in range(40):
                    for p in range(P):
                        X[0, p] = w[0, p] + t * d[0, p]
                    lg(X, data, K, nchunks, clen, dys, invc, Et, Gt, 0, 1)
                    evals[i] += 1
                    arm = np.isfinite(Et[0]) and Et[0] <= Lc + c1 * t * gd
                    curv = _dot(Gt[0], d[0], tmp) >= c2 * gd
                    if arm and curv:
                        wolfe, lo, E_new = True, t, Et[0]
                        Gn[0] = Gt[0]
                        break
                    if not arm:
                        hi = t
                    else:                                   # too short
                        lo, E_lo = t, Et[0]
                        Gn[0] = Gt[0]
                        if t >= t_max:                      # at the cap: take it
                            break
                    t = 0.5 * (lo + hi) if np.isfinite(hi) else min(2.0 * lo, t_max)
                if not wolfe and lo > 0:
                    E_new = E_lo
                step = lo if (wolfe or lo > 0) else 0.0
                if not step > 0:                            # no decrease at all
                    stop = bad or first[0]
                    _identity(H)
                    first[0] = True
                    if stop:
                        code[i] = _KINK
                        break
                    continue
                for p in range(P):
                    S[0, p] = step * d[0, p]
                    Y[0, p] = Gn[0, p] - g[0, p]
                if _dot(S[0], Y[0], tmp) > 0:
                    _update_kernel(H, rows0, S, Y, first, Gn, dn, 0, 1)
                    first[0] = False
                    fresh = True
                # quench._take_steps
                small = Lc - E_new <= 1e-14 * abs(Lc)
                slow = slow + 1 if small else 0
                for p in range(P):
                    w[0, p] += S[0, p]
                Lc = E_new
                g[0] = Gn[0]
                iters[i] += 1
                if np.sqrt(_dot(g[0], g[0], tmp)) <= gtol:
                    code[i] = _GTOL
                    break
                if slow >= patience:
                    code[i] = _STAGNANT
                    break
        W[i] = w[0]
        L[i] = Lc
        G[i] = g[0]


_ROWS: dict = {}


def _rows_kernel(module):
    """:func:`_bfgs_rows` compiled with ``lg`` bound to ``module.loss_grad_range``, and
    cached by numba beside the module's source.

    Why this way: passed as an argument, the kernel made numba's cache key a type that
    lives only in one process, so every process compiled the loop again (6-8 s). Bound
    as a global it is a constant of the compiled code; the copy of the function carries
    the generated module's file name, so numba files its cache beside that module (one
    per architecture, dtype and vector width) and checks it against that file's stamp.
    The module's name carries a digest of bfgs.py (``relunet.fast.build.DEPENDENCIES``),
    so an edit of the loop or of the kernels it calls makes a new module and a new cache.
    """
    kern = _ROWS.get(module.__name__)
    if kern is None:
        py = _bfgs_rows
        env = dict(py.__globals__, lg=module.loss_grad_range)
        code = py.__code__.replace(co_filename=module.__file__)
        fn = types.FunctionType(code, env, py.__name__, py.__defaults__)
        fn.__qualname__ = fn.__name__ = "bfgs_rows"
        fn.__module__ = module.__name__
        fn.__doc__ = py.__doc__
        kern = _ROWS[module.__name__] = njit(nogil=True, cache=True, fastmath=STRICT)(fn)
    return kern


def bfgs_networks(module, data_args, W, max_iter: int = 2000, max_step: float = 0.5,
                  gtol: float = 1e-9, patience: int = 25, c1: float = C1, c2: float = C2,
                  progress=None, threads=None):
    """:func:`bfgs` on the loss of a network stack, the same numbers bit for bit, each
    network descended to its end in one compiled loop (:func:`_bfgs_rows`).

    ``module``, ``data_args``: the generated kernel module and its data arguments
    (:func:`relunet.fast.stack.kernel_and_data`). Why: the batched driver moves every
    network by one step per round of Python, and each network's H (136 x 136, 148 kB)
    is read and written once per step from memory, beside its neighbours': on the
    default quench's 350 students that update cost about three times the gradients
    (profiled). In one network's own loop its H stays in the core's cache and no Python
    runs between steps. Networks are shared out to threads in batches of 16
    (:func:`relunet.fast.stack.run_threads`); ``progress(done, M)`` is called after each
    batch of batches.
    """
    from .quench import DescentResult, _descent_start
    W = _descent_start(W, max_step, max_iter=max_iter, patience=patience)
    _check_wolfe(c1, c2)
    M, P = W.shape
    L, G = np.empty(M), np.empty((M, P))
    iters, evals, code = (np.zeros(M, np.int64) for _ in range(3))
    threads = _threads(M) if threads is None else threads
    rows = _rows_kernel(module)
    step = max(64, 16 * threads)
    for c0 in range(0, M, step):
        c1_ = min(M, c0 + step)

        def part(W, L, G, iters, evals, code, m0, m1, c0=c0):
            rows(*data_args, W[c0:], L[c0:], G[c0:], iters[c0:], evals[c0:],
                       code[c0:], max_iter, max_step, gtol, patience, c1, c2, m0, m1)
        run_threads(part, (W, L, G, iters, evals, code), c1_ - c0, threads)
        if progress is not None:
            progress(c1_, M)
    reason = np.array([stop_reason(int(k), max_iter, patience) for k in code]).astype(str)
    return DescentResult(W=W, loss=L, iterations=iters, evaluations=evals, reason=reason)
