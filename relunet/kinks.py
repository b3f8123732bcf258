"""The kinks of a ReLU network's loss: pieces, one-sided gradients and the Clarke measure.

The MSE of a ReLU network is piecewise smooth. Fix every unit's on/off state
at every training point (a *mask* m[l, j, s] in {0, 1}); the network becomes
a polynomial in its weights and the loss is smooth. The pieces meet on the
*kink sets* {z_a = 0}, where a = (l, j, s) names the pre-activation of unit j
of layer l at training point s. Across a kink the gradient jumps; the value
does not (relu(0) = 0).

This module works with explicit masks, so that everything the quench
(:mod:`relunet.quench`) and the saddle search need can be computed on one
named piece, or on a blend of two pieces:

* :func:`masked_loss_and_grad`: the loss and gradient of the piece with masks
  ``m`` (real values allowed: m_a = lambda in [0, 1] gives the gradient of the
  blend that Clarke's subdifferential is made of, see below). With the masks
  [z > 0] it is the ordinary loss and gradient (relu'(0) = 0, as in
  :mod:`relunet.kernels`, which the tests hold it to). :func:`masked_sums` is
  the same on a subset of the points (their share of the loss and gradient),
  for pieces that differ from each other at a few points only.
* :func:`preactivation_grads`: gradients dz_a/dw of chosen pre-activations.
* :func:`jumps`: the jump of the loss gradient across kink a,
  J_a = c_a dz_a/dw with c_a = dL/dh_a (the backpropagated error arriving at
  unit j of layer l from point s). Switching unit a from off to on (all other
  masks fixed) changes the gradient by exactly J_a, because only point s's
  path through a changes and relu(0) = 0 leaves every other quantity as it is.
* :func:`kink_families`, :func:`kink_groups`, :func:`vertices`: kinks that
  switch together (parallel normals), kinks that interact (one point, several
  layers), and the gradient and value of every piece around a point.
* :func:`hull_qp`: the shortest vector of a Minkowski sum of hulls (a small
  quadratic program), used for the Clarke measure and the quench's step.
* :func:`clarke_measure`: the distance from 0 to the convex hull of the
  one-sided gradients around a point whose pre-activations in a set A sit on
  their kinks.

Clarke stationarity (Clarke 1983, "Optimization and Nonsmooth Analysis")
--------------------------------------------------------------------------
The Clarke subdifferential of a piecewise-smooth function is the convex hull
of the gradients of the pieces that meet at the point (Scholtes 2012,
"Introduction to Piecewise Differentiable Equations", Sec. 4.3). If each
training point has at most one kink in A, the gradient of the piece with
masks m_a (a in A) is g_off + sum_a m_a J_a (linear in each mask), so the hull
of all 2^|A| pieces is the zonotope

    { g_off + J lam : lam in [0, 1]^|A| },     J = [J_a] (P, |A|),

where g_off is the gradient with every a in A off. When the kink normals
dz_a/dw are linearly independent every sign pattern occurs arbitrarily close
to the point, so this zonotope IS the Clarke subdifferential, and

    dist(0, d_C L) = min_{lam in [0, 1]^|A|} || g_off + J lam ||

is a bounded-variable least-squares problem (Stark & Parker 1995, BVLS; scipy's
``lsq_linear(method="bvls")``). A point is Clarke stationary when it is 0. A
single autodiff gradient at a kink is one vertex of this set and measures
nothing there (Kakade & Lee 2018, NeurIPS; Bolte & Pauwels 2021, Math.
Program. 188); this measure is what replaces the gradient norm.

When a point s has kinks in several layers at once the pieces are not linear
in its masks; then that point's 2^m pieces are enumerated (:func:`vertices`)
and the subdifferential is the Minkowski sum, over points, of the hulls of
each point's pieces (:func:`hull_qp`). If the kink normals are linearly
dependent, some patterns never occur and the hull over all of them is too
large: the measure is then not a certificate.

Everything here is NumPy, batched over networks where it matters; it is the
slow, readable side of the quench (the smooth descent uses the numba kernels).
Three exceptions are compiled, each because the quench's Newton stage calls it
thousands of times on small arrays, where NumPy's per-call costs were most of
the time: the BVLS solver of :func:`hull_qp`, scipy's algorithm
(:mod:`relunet.bvls`); and, in :mod:`relunet.kink_kernels`, the masked forward
and backward pass of :func:`masked_sums` (also run point by point for the
pieces' changes in :func:`vertices`) and the greedy grouping of
:func:`kink_families`, both held to NumPy twins in ``tests/test_kinks.py``.

One subject, the geometry of the kinks, a little past 400 lines: the pieces,
the jumps and the certificate's convex hulls are read together.
"""
from __future__ import annotations

import numpy as np

from .bvls import bvls01, lstsq
from .kernels import check_data
from .kink_kernels import greedy_families, masked_sums_kernel, piece_changes
from .net import Arch, check_stack

__all__ = ["preactivations", "masked_loss_and_grad", "masked_sums", "preactivation_grads", "jumps",
           "kink_families", "kink_groups", "vertices", "hull_qp", "clarke_measure",
           "ClarkeResult", "MAX_GROUP"]


def _data(W, arch, x, t=None):
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W = np.asarray(check_stack(W, arch), dtype=np.float64)
    X, T = check_data(arch, x, t, np.float64)
    return W, X, T


def preactivations(W, arch: Arch, x) -> np.ndarray:
    """Pre-activations z[m, l-1, j, s] of every hidden unit at every point.

    Parameters
    ----------
    W : (M, P) or (P,) networks;  x : (S,) or (S, n_in) inputs.

    Returns
    -------
    Z : (M, K, N, S) float64 (layer l = 1..K stored at index l - 1).
    """
    W, X, _ = _data(W, arch, x)
    v = arch.unpack(W)
    h = np.broadcast_to(X, (W.shape[0],) + X.shape)
    Z = np.empty((W.shape[0], arch.K, arch.N, X.shape[1]))
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        Z[:, layer - 1] = v[wn] @ h + v[bn][:, :, None]
        h = np.maximum(Z[:, layer - 1], 0.0)
    return Z


def masked_loss_and_grad(W, arch: Arch, x, t, masks=None, return_adjoint: bool = False):
    """Loss and gradient of the piece selected by ``masks`` (h = m * z instead of relu).

    Parameters
    ----------
    W : (M, P) or (P,) networks;  x, t : data.
    masks : (M, K, N, S) real, or None for the masks [z > 0] of W itself
        (then the result is the ordinary loss and gradient, relu'(0) = 0).
    return_adjoint : also return C[m, l-1, j, s] = dL/dh_l[j, s], the
        backpropagated error arriving at each unit (the c_a of the jumps).

    Returns
    -------
    loss (M,), G (M, P) [, C (M, K, N, S)].
    """
    W, X, T = _data(W, arch, x, t)
    M, S = W.shape[0], X.shape[1]
    if masks is None:
        masks = preactivations(W, arch, x) > 0.0
    masks = np.asarray(masks, dtype=np.float64)
    if masks.shape != (M, arch.K, arch.N, S):
        raise ValueError(f"masks must have shape {(M, arch.K, arch.N, S)}, got {masks.shape}")
    return masked_sums(W, arch, X, T, masks, S, return_adjoint)


def masked_sums(W, arch: Arch, X, T, masks, n_points: int, return_adjoint: bool = False):
    """:func:`masked_loss_and_grad` on checked arrays, for a subset of the points:
    W (M, P), X (n_in, S), T (n_out, S), masks (M, K, N, S) float; the squared
    errors and their gradient summed over these S points and divided by
    ``n_points`` x n_out, so that the points' share of the whole training set's
    loss and gradient comes out (``n_points`` = S: the loss and gradient)."""
    M, S = W.shape[0], X.shape[1]
    loss, G = np.empty(M), np.empty((M, arch.P))
    C = np.empty((M, arch.K, arch.N, S)) if return_adjoint else np.empty((0, 0, 0, 0))
    masked_sums_kernel(np.ascontiguousarray(W, dtype=np.float64),
                        np.ascontiguousarray(X, dtype=np.float64),
                        np.ascontiguousarray(T, dtype=np.float64),
                        np.ascontiguousarray(masks, dtype=np.float64),
                        float(n_points * arch.n_out), arch.K, arch.N, arch.n_in, arch.n_out,
                        return_adjoint, loss, G, C)
    return (loss, G, C) if return_adjoint else (loss, G)


def preactivation_grads(w, arch: Arch, x, entries, masks=None) -> np.ndarray:
    """Gradients dz_a/dw of chosen pre-activations of ONE network.

    Parameters
    ----------
    w : (P,) network;  x : inputs.
    entries : (E, 3) integer rows (l, j, s): layer 1..K, unit, point.
    masks : (K, N, S) masks of the layers below (default [z > 0]).

    Returns
    -------
    Nz : (E, P); row e is the gradient of z_{l_e, j_e, s_e}.
    """
    w = np.asarray(w, dtype=np.float64)
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    W1, X, _ = _data(w[None], arch, x)
    v = arch.unpack(W1[0])
    if masks is None:
        masks = preactivations(W1, arch, x)[0] > 0.0
    hs = [X]
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        hs.append(masks[layer - 1] * (v[wn] @ hs[-1] + v[bn][:, None]))
    out = np.zeros((len(entries), arch.P))
    blocks = {n: (off, shape) for n, shape, off in arch.table}
    for layer in range(1, arch.K + 1):
        rows = np.flatnonzero(entries[:, 0] == layer)
        if rows.size == 0:
            continue
        j, s = entries[rows, 1], entries[rows, 2]
        wn, bn = arch.layer_blocks(layer)
        (woff, wshape), (boff, _) = blocks[wn], blocks[bn]
        fan_in = wshape[1]
        cols = woff + j[:, None] * fan_in + np.arange(fan_in)[None, :]
        out[rows[:, None], cols] = hs[layer - 1][:, s].T          # dz/dW_l[j, :]
        out[rows, boff + j] = 1.0                                # dz/db_l[j]
        u = v[wn][j]                                             # (E, fan_in) adjoint at h_{l-1}
        for k in range(layer - 1, 0, -1):
            dz = u * masks[k - 1][:, s].T                        # (E, N)
            kw, kb = arch.layer_blocks(k)
            (kwoff, kshape), (kboff, _) = blocks[kw], blocks[kb]
            out[rows, kwoff:kwoff + kshape[0] * kshape[1]] = (
                dz[:, :, None] * hs[k - 1][:, s].T[:, None, :]).reshape(len(rows), -1)
            out[rows, kboff:kboff + kshape[0]] = dz
            u = dz @ v[kw]
    return out


def jumps(w, arch: Arch, x, t, entries, masks=None):
    """Gradient jumps J_a = c_a dz_a/dw across the kinks ``entries`` of one network.

    Returns (J (E, P), c (E,), Nz (E, P)): the jump from the piece with a off to
    the piece with a on, the error c_a = dL/dh_a and the kink normals dz_a/dw.
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    w = np.asarray(w, dtype=np.float64)
    if masks is None:
        masks = preactivations(w[None], arch, x)[0] > 0.0
    _, _, C = masked_loss_and_grad(w[None], arch, x, t, masks[None], return_adjoint=True)
    c = C[0][entries[:, 0] - 1, entries[:, 1], entries[:, 2]]
    Nz = preactivation_grads(w, arch, x, entries, masks)
    return c[:, None] * Nz, c, Nz


MAX_GROUP = 6      #: a point with more kinks than this in several layers is not enumerated


def kink_families(w, arch: Arch, x, entries, masks=None):
    """Kinks that switch together, and the rank of what is left.

    Several pre-activations can share one kink normal: a unit whose inputs are
    all off at points s1..sk has z = b_j at each of them, so all k kinks are
    the single kink b_j = 0, on or off together. Such entries (normals
    parallel, cos > 1 - 1e-10) form one *family*; only families switch
    independently. Returns (families: list of index arrays into ``entries``,
    rank of the families' normals, Nz (E, P) the normals).
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    if len(entries) == 0:
        return [], 0, np.zeros((0, arch.P))
    Nz = preactivation_grads(w, arch, x, entries, masks)
    norm = np.linalg.norm(Nz, axis=1)
    U = Nz / np.where(norm > 0, norm, 1.0)[:, None]
    label = greedy_families(U, 1.0 - 1e-10)
    order = np.argsort(label, kind="stable")
    families = np.split(order, np.flatnonzero(np.diff(label[order])) + 1)
    reps = Nz[[f[0] for f in families]]
    return families, int(np.linalg.matrix_rank(reps)), Nz


def kink_groups(entries, families, second_order: bool = False):
    """Groups of families whose one-sided gradients add up independently.

    Kinks of different training points add (the loss is a sum over points),
    and so do kinks of one point in ONE layer (no path runs through two units
    of a layer). Families with kinks at one point in SEVERAL layers interact
    (a path through both switches only when both do): they are one group, whose
    pieces are all 2^m on/off patterns. Returns a list of arrays of family
    indices. With ``second_order`` the Hessians are to add up: then families
    with kinks at one point interact whatever their layers (the squared
    residual there couples the two units' contributions), and only different
    points add.
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    parent = list(range(len(families)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    fam_of = np.empty(len(entries), dtype=np.int64)
    for k, f in enumerate(families):
        fam_of[f] = k
    order = np.argsort(entries[:, 2], kind="stable")       # the entries point by point
    ends = np.flatnonzero(np.diff(entries[order, 2])) + 1
    for a, b in zip(np.r_[0, ends], np.r_[ends, len(order)]):
        if b - a < 2:                      # one kink at this point: nothing to couple
            continue
        idx = order[a:b]
        if second_order or np.unique(entries[idx, 0]).size > 1:
            fs = np.unique(fam_of[idx])
            for f in fs[1:]:
                parent[find(f)] = find(fs[0])
    roots = np.array([find(i) for i in range(len(families))], dtype=np.int64)
    return [np.flatnonzero(roots == r) for r in np.unique(roots)]


def vertices(w, arch: Arch, x, t, entries, masks=None, coupled: bool = True):
    """The pieces around a point with kinks ``entries``, relative to 'all of them off'.

    Returns (L0, g0, V, off, gid, info): loss and gradient with every listed
    kink off; for every group of families (:func:`kink_families`,
    :func:`kink_groups`) and every non-zero on/off pattern sigma of it, the
    gradient change V[k] = G(sigma) - g0 and the value change
    off[k] = L(sigma) - L0 (0 when the kinks sit exactly at z = 0), and gid[k]
    its group. A lone kink has one vertex, V = its jump J_a. ``info`` holds
    families, groups, rank (of the families' normals), Nz and, per vertex,
    the families switched on (``on``). With ``coupled=False`` every family is
    its own group (one vertex each: the jumps of independent kinks), which is
    what the quench's step uses.
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    w = np.ascontiguousarray(w, dtype=np.float64)         # piece_changes reshapes it
    if masks is None:
        masks = preactivations(w[None], arch, x)[0] > 0.0
    base = np.array(masks, dtype=np.float64)
    li, ji, si = entries[:, 0] - 1, entries[:, 1], entries[:, 2]
    base[li, ji, si] = 0.0
    families, rank, Nz = kink_families(w, arch, x, entries, base > 0)
    groups = kink_groups(entries, families) if coupled else \
        [np.array([f]) for f in range(len(families))]
    gid, on_list = [], []
    for k, grp in enumerate(groups):
        if grp.size > MAX_GROUP:
            raise ValueError(f"{grp.size} coupled kink families at one point; at most "
                             f"{MAX_GROUP} are enumerated")
        for code in range(1, 2 ** grp.size):
            on_list.append(grp[[(code >> b) & 1 == 1 for b in range(grp.size)]])
            gid.append(k)
    X, T = check_data(arch, x, t, np.float64)
    L0, g0 = masked_sums(w[None], arch, X, T, base[None], X.shape[1])
    # the pieces differ from the base only at the listed kinks' points: their changes
    # are summed over those points alone, point by point (the other points' shares,
    # equal on both pieces, drop out exactly)
    cols, col_of = np.unique(si, return_inverse=True)
    ent = [np.concatenate([families[f] for f in on]) for on in on_list]
    ptr = np.concatenate([[0], np.cumsum([e.size for e in ent])]).astype(np.int64)
    ent = np.concatenate(ent) if ent else np.zeros(0, np.int64)
    ent = np.stack([li[ent], ji[ent], col_of[ent]], axis=1).astype(np.int64)
    dL, dG = np.empty(len(on_list)), np.empty((len(on_list), arch.P))
    piece_changes(w, X, T, base, cols.astype(np.int64), ptr, ent,
                   float(X.shape[1] * arch.n_out), arch.K, arch.N, arch.n_in, arch.n_out,
                   dL, dG)
    info = dict(families=families, groups=groups, rank=rank, Nz=Nz, on=on_list)
    return L0[0], g0[0], dG, dL, np.array(gid, dtype=np.int64), info


def hull_qp(A, b, gid, lin=None):
    """min_u |A u + b|^2 / 2 - lin.u  subject to u >= 0 and, per group k, sum_{gid = k} u <= 1.

    First the box relaxation 0 <= u <= 1 is solved exactly by BVLS
    (:func:`relunet.bvls.bvls01`). Groups of
    one vertex make that the whole problem; if the relaxed solution also meets
    every group's sum it is the solution. Otherwise (coupled kinks) SLSQP
    starts from it (scaled to feasibility) and the result is made exactly
    feasible (clipped, group sums scaled to <= 1).
    """
    n = A.shape[1]
    if n == 0:
        return np.zeros(0)
    lin = np.zeros(n) if lin is None else lin
    if np.any(lin):
        # -lin.u = -v.(A u) needs A^T v = lin, solvable exactly only if A has full column
        # rank: a ridge of 1e-8 |A| rows (an extra 1e-16 |A|^2 |u|^2 / 2) makes it so
        eps = 1e-8 * max(np.abs(A).max(), 1e-300)
        A = np.vstack([A, eps * np.eye(n)])
        b = np.concatenate([b, np.zeros(n)])
        v = lstsq(A.T, lin)
        rhs = v - b
    else:
        rhs = -b
    # scipy's lsq_linear(A, rhs, (0, 1), method="bvls", tol=1e-14), compiled (relunet.bvls)
    u = np.clip(bvls01(A, rhs, tol=1e-14), 0.0, 1.0)
    G = np.zeros((gid.max() + 1, n))
    G[gid, np.arange(n)] = 1.0
    if np.all(G @ u <= 1.0):
        return u
    from scipy.optimize import minimize
    AtA, Atb = A.T @ A, A.T @ b
    u0 = u / np.maximum(G @ u, 1.0)[gid]
    res = minimize(lambda u: 0.5 * u @ AtA @ u + Atb @ u - lin @ u, u0,
                   jac=lambda u: AtA @ u + Atb - lin, method="SLSQP",
                   bounds=[(0.0, 1.0)] * n,
                   constraints=[{"type": "ineq", "fun": lambda u: 1.0 - G @ u,
                                 "jac": lambda u: -G}],
                   options={"ftol": 1e-22, "maxiter": 300})
    u = np.clip(res.x, 0.0, 1.0)
    return u / np.maximum(G @ u, 1.0)[gid]


class ClarkeResult(dict):
    """Result of :func:`clarke_measure` (a dict with attribute access).

    measure : dist(0, hull of the one-sided gradients);  g_min : (P,) the
    nearest point;  g_off : gradient with every listed kink off;  V, u, gid :
    the pieces' gradient changes (:func:`vertices`), their weights in g_min and
    their groups;  lam : (E,) total weight of the 'on' side of each kink;
    c : (E,) dL/dh_a;  coupled : a point has kinks in several layers (its
    pieces were enumerated);  rank : rank of the kink normals (equal to E:
    every on/off pattern occurs near w, so the hull IS the subdifferential).
    """

    __getattr__ = dict.__getitem__


def clarke_measure(w, arch: Arch, x, t, entries, masks=None) -> ClarkeResult:
    """Distance from 0 to the Clarke subdifferential at a point on the kinks ``entries``.

    ``masks`` fixes the pieces elsewhere (default [z > 0] at w). The
    subdifferential is g0 + sum over groups of the hull of each group's pieces
    (:func:`vertices`; a Minkowski sum, since groups add); for groups of one
    kink this is min_{lam in [0,1]} |g_off + J lam|, solved exactly by BVLS.
    The returned measure is |g0 + V u| at an exactly feasible u, so it is an
    upper bound of the distance whenever every piece occurs near w (``rank``
    equal to the number of kinks), and equal to it up to the solver's accuracy.
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    w = np.asarray(w, dtype=np.float64)
    if masks is None:
        masks = preactivations(w[None], arch, x)[0] > 0.0
    L0, g0, V, off, gid, info = vertices(w, arch, x, t, entries, masks)
    u = hull_qp(V.T, g0, gid)
    g_min = g0 + u @ V
    c = np.zeros(len(entries))
    if len(entries):
        m0 = np.array(masks, dtype=np.float64)
        m0[entries[:, 0] - 1, entries[:, 1], entries[:, 2]] = 0.0
        _, _, C = masked_loss_and_grad(w[None], arch, x, t, m0[None], return_adjoint=True)
        c = C[0][entries[:, 0] - 1, entries[:, 1], entries[:, 2]]
    # 'lam': the weight of the 'on' side of each kink (the sum over the vertices with it on)
    lam = np.zeros(len(entries))
    for k, on in enumerate(info["on"]):
        for f in on:
            lam[info["families"][f]] += u[k]
    families = info["families"]
    return ClarkeResult(measure=float(np.linalg.norm(g_min)), lam=lam, g_min=g_min,
                        g_off=g0, V=V, u=u, gid=gid, c=c, rank=info["rank"],
                        n_families=len(families), families=families,
                        coupled=any(g.size > 1 for g in info["groups"]),
                        n_groups=len(info["groups"]))
