"""Balancing a network: the minimal-norm rescaling as a convex problem, solved by Newton.

Rescaling hidden unit k of a ReLU network by exp(u_k) (:mod:`relunet.symmetry`)
turns the squared norm of the parameters into

    F(u) = sum_p w_p^2 exp(2 a_p . u),     a_p = +1 at the unit p feeds,
                                                 -1 at the unit p comes from,

a sum of exponentials of linear forms, hence convex, with

    dF/du_k = 2 (In_k - Out_k)     (In_k / Out_k: squared norm of unit k's
                                    rescaled incoming weights+bias / outgoing weights)

    d2F/du_k^2 = 4 (In_k + Out_k),    d2F/du_k du_m = -4 w^2 for units joined by w.

Units are joined only across neighbouring layers, so the Hessian is block
tridiagonal over layers, with diagonal blocks diag(4 (In + Out)) (N x N) and
off-diagonal blocks -4 (W_{l+1})^2; :func:`block_tridiag_solve` solves a Newton
system by block elimination (the block Thomas algorithm), K N^3 work per
network instead of (K N)^3. :func:`newton` takes Newton steps with Armijo
backtracking, vectorised over a stack of networks, until the largest relative
imbalance max_k |In_k - Out_k| / (In_k + Out_k) is at most ``gtol`` (about
6-13 iterations for Glorot-initialised 5x5 networks; W_f takes 9). Dead units
(:func:`relunet.symmetry.dead_units`) are held at u = 0.
"""
from __future__ import annotations

import numpy as np

__all__ = ["unit_sums", "block_tridiag_solve", "newton"]


def unit_sums(Q, u):
    """Rescaled squares. Q: squared blocks; u (M', K, N). Returns (F, In, Out, V):
    F (M',), In/Out (M', K, N), V[l] rescaled squared W_{l+1} (for the Hessian)."""
    K = u.shape[1]
    e2u = np.exp(2.0 * u)
    In, Out, V, F = np.empty_like(u), np.empty_like(u), [], 0.0
    for layer, (Qw, Qb) in enumerate(Q):
        Vw = Qw.copy()
        if layer < K:
            Vw *= e2u[:, layer, :, None]
            Vb = Qb * e2u[:, layer, :]
        else:
            Vb = Qb
        if layer > 0:
            Vw /= e2u[:, layer - 1, None, :]
            Out[:, layer - 1, :] = Vw.sum(axis=1)
        if layer < K:
            In[:, layer, :] = Vw.sum(axis=2) + Vb
        V.append(Vw)
        F = F + Vw.sum(axis=(1, 2)) + Vb.sum(axis=1)
    return F, In, Out, V


def block_tridiag_solve(diag, off, g):
    """Solve H x = g for the Newton Hessian, per network (block Thomas algorithm).

    H is block tridiagonal over layers: diagonal blocks diag(diag[:, l]) (M', N, N),
    block (l, l-1) = off[l-1] (M', N, N), block (l-1, l) its transpose. Every
    Schur complement of the positive definite H is positive definite. Costs
    K N^3 per network instead of (K N)^3, and keeps LAPACK calls tiny.
    """
    K, N = diag.shape[1:]
    D = diag[:, :, :, None] * np.eye(N)                   # (M', K, N, N)
    schur, y = [D[:, 0]], [g[:, 0]]                       # Schur complements, right sides
    for layer in range(1, K):
        Bt = np.swapaxes(off[layer - 1], 1, 2)
        Z = np.linalg.solve(schur[-1], np.concatenate([Bt, y[-1][:, :, None]], axis=2))
        schur.append(D[:, layer] - off[layer - 1] @ Z[:, :, :-1])
        y.append(g[:, layer] - (off[layer - 1] @ Z[:, :, -1:])[:, :, 0])
    x = [None] * K
    x[K - 1] = np.linalg.solve(schur[K - 1], y[K - 1][:, :, None])[:, :, 0]
    for layer in range(K - 2, -1, -1):
        r = y[layer] - (np.swapaxes(off[layer], 1, 2) @ x[layer + 1][:, :, None])[:, :, 0]
        x[layer] = np.linalg.solve(schur[layer], r[:, :, None])[:, :, 0]
    return np.stack(x, axis=1)


def newton(Q, dead, gtol, max_iter):
    """Minimise F(u) for every network; returns u, converged, iterations, rel. gradient."""
    M, K, N = dead.shape
    u = np.zeros((M, K, N))
    it = np.zeros(M, dtype=int)
    conv = np.zeros(M, dtype=bool)
    rel = np.full(M, np.inf)
    act = np.arange(M)
    live = ~dead
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(max_iter + 1):
            if act.size == 0:
                break
            Qa = [(Qw[act], Qb[act]) for Qw, Qb in Q]
            F, In, Out, V = unit_sums(Qa, u[act])
            g = 2.0 * (In - Out)                                   # dF/du
            tot = In + Out
            r = np.where(live[act], np.abs(In - Out) / np.where(tot > 0, tot, 1.0), 0.0)
            rel[act] = r.reshape(act.size, -1).max(axis=1)
            done = rel[act] <= gtol
            conv[act[done]] = True
            if it[act].max(initial=0) >= max_iter:
                break
            keep = ~done
            act, F, g, V, tot = act[keep], F[keep], g[keep], [v[keep] for v in V], tot[keep]
            Qa = [(Qw[keep], Qb[keep]) for Qw, Qb in Qa]
            if act.size == 0:
                break
            m = act.size
            diag = np.where(live[act], 4.0 * tot, 1.0)    # dead units: step 0
            d = -block_tridiag_solve(diag, [-4.0 * v for v in V[1:K]], g).reshape(m, K * N)
            g = g.reshape(m, K * N)
            slope = np.einsum("mi,mi->m", g, d)
            t = np.ones(m)
            pending = np.arange(m)
            for _ls in range(60):                           # Armijo backtracking
                uu = u[act[pending]] + t[pending, None, None] * d[pending].reshape(-1, K, N)
                Ft = unit_sums([(Qw[pending], Qb[pending]) for Qw, Qb in Qa], uu)[0]
                ok = Ft <= F[pending] + 1e-4 * t[pending] * slope[pending] \
                    + 1e-13 * F[pending]
                t[pending[~ok]] *= 0.5
                pending = pending[~ok]
                if pending.size == 0:
                    break
            t[pending] = 0.0                      # line search failed: stop, unconverged
            u[act] += t[:, None, None] * d.reshape(m, K, N)
            it[act] += 1
            act = act[t > 0]
    return u, conv, it, rel
