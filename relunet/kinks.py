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
  :mod:`relunet.kernels`, which the tests hold it to).
* :func:`preactivation_grads`: gradients dz_a/dw of chosen pre-activations.
* :func:`jumps`: the jump of the loss gradient across kink a,
  J_a = c_a dz_a/dw with c_a = dL/dh_a (the backpropagated error arriving at
  unit j of layer l from point s). Switching unit a from off to on (all other
  masks fixed) changes the gradient by exactly J_a, because only point s's
  path through a changes and relu(0) = 0 leaves every other quantity as it is.
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

When a point s has kinks in two layers at once the pieces are not linear in
the masks; :func:`clarke_measure` then reports ``coupled`` and the caller
must not certify.

Everything here is NumPy, batched over networks where it matters; it is the
slow, readable side of the quench (the smooth descent uses the numba kernels).
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import lsq_linear

from .kernels import check_data
from .net import Arch, check_stack

__all__ = ["preactivations", "masked_loss_and_grad", "preactivation_grads", "jumps",
           "clarke_measure", "ClarkeResult"]


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
    v = arch.unpack(W)
    if masks is None:
        masks = preactivations(W, arch, x) > 0.0
    masks = np.asarray(masks, dtype=np.float64)
    if masks.shape != (M, arch.K, arch.N, S):
        raise ValueError(f"masks must have shape {(M, arch.K, arch.N, S)}, got {masks.shape}")
    hs = [np.broadcast_to(X, (M,) + X.shape)]
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        hs.append(masks[:, layer - 1] * (v[wn] @ hs[-1] + v[bn][:, :, None]))
    y = v["Wout"] @ hs[-1] + v["bout"][:, :, None]
    r = y - T
    loss = np.mean(r * r, axis=(1, 2))
    G = np.zeros_like(W)
    g = arch.unpack(G)
    dy = 2.0 * r / (S * arch.n_out)
    g["Wout"][...] = dy @ np.swapaxes(hs[-1], 1, 2)
    g["bout"][...] = dy.sum(axis=2)
    dh = np.swapaxes(v["Wout"], 1, 2) @ dy
    C = np.empty((M, arch.K, arch.N, S)) if return_adjoint else None
    for layer in range(arch.K, 0, -1):
        if return_adjoint:
            C[:, layer - 1] = dh
        wn, bn = arch.layer_blocks(layer)
        dz = dh * masks[:, layer - 1]
        g[wn][...] = dz @ np.swapaxes(hs[layer - 1], 1, 2)
        g[bn][...] = dz.sum(axis=2)
        dh = np.swapaxes(v[wn], 1, 2) @ dz
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


class ClarkeResult(dict):
    """Result of :func:`clarke_measure` (a dict with attribute access).

    measure : dist(0, hull of the one-sided gradients);  lam : (E,) the weights
    of the nearest point (in [0, 1]);  g_min : (P,) that nearest point;
    g_off : gradient with every listed kink off;  J, c, Nz : as in :func:`jumps`;
    coupled : True when a point has kinks in two layers (then not a certificate);
    rank : rank of the kink normals (full rank = every side pattern occurs).
    """

    __getattr__ = dict.__getitem__


def clarke_measure(w, arch: Arch, x, t, entries, masks=None) -> ClarkeResult:
    """Distance from 0 to the Clarke subdifferential at a point on the kinks ``entries``.

    ``masks`` fixes the pieces elsewhere (default [z > 0] at w). Solves
    min_{lam in [0,1]^E} ||g_off + J lam|| by BVLS (see the module docstring).
    """
    entries = np.asarray(entries, dtype=np.int64).reshape(-1, 3)
    w = np.asarray(w, dtype=np.float64)
    if masks is None:
        masks = preactivations(w[None], arch, x)[0] > 0.0
    masks = np.array(masks, dtype=np.float64)
    masks[entries[:, 0] - 1, entries[:, 1], entries[:, 2]] = 0.0
    _, G = masked_loss_and_grad(w[None], arch, x, t, masks[None])
    g_off = G[0]
    if len(entries) == 0:
        return ClarkeResult(measure=float(np.linalg.norm(g_off)), lam=np.zeros(0),
                            g_min=g_off, g_off=g_off, J=np.zeros((0, w.size)),
                            c=np.zeros(0), Nz=np.zeros((0, w.size)), coupled=False, rank=0)
    J, c, Nz = jumps(w, arch, x, t, entries, masks)
    layers_at_point = np.unique(entries[:, [2, 0]], axis=0)[:, 0]     # (s, l) pairs -> s
    _, counts = np.unique(layers_at_point, return_counts=True)
    res = lsq_linear(J.T, -g_off, bounds=(0.0, 1.0), method="bvls", tol=1e-14)
    lam = np.clip(res.x, 0.0, 1.0)
    g_min = g_off + lam @ J
    rank = int(np.linalg.matrix_rank(Nz)) if len(Nz) else 0
    return ClarkeResult(measure=float(np.linalg.norm(g_min)), lam=lam, g_min=g_min,
                        g_off=g_off, J=J, c=c, Nz=Nz, coupled=bool(np.any(counts > 1)),
                        rank=rank)
