"""Compiled loops of :mod:`relunet.kinks` (read that module first).

The quench's Newton stage calls these thousands of times on a few points or a
few hundred kinks at a time, where NumPy's per-call costs (thirty-odd small
batched products per masked pass, one Python round per kink family) were most
of its time. Each is a plain loop over the same quantities as the NumPy code it
replaced; ``tests/test_kinks.py`` holds them to NumPy twins. Strict floating
point (:mod:`relunet._numba`): the same bits whichever CPU of one type runs them.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ._numba import STRICT
from .net import block_offset

__all__ = ["masked_sums_kernel", "piece_changes", "greedy_families"]


@njit(cache=True, fastmath=STRICT)
def masked_sums_kernel(W, X, T, masks, scale, K, N, n_in, n_out, want_c, loss, G, C):
    """:func:`masked_sums`, one network at a time, a layer at a time over the points:
    the plain kernels' passes (``relunet.kernels._forward_one``, ``_backward_one``)
    with h_l = m_l * z_l in place of relu, the masks real (blends of pieces) and
    dL/dh_l kept when ``want_c``."""
    M, S = W.shape[0], X.shape[1]
    H = np.zeros((K + 1, max(N, n_in), S))       # h_0 = x, h_1 .. h_K
    dh = np.empty((N, S))
    dz = np.empty((N, S))
    dy = np.empty((n_out, S))
    for m in range(M):
        w, g = W[m], G[m]
        for i in range(n_in):
            for s in range(S):
                H[0, i, s] = X[i, s]
        for layer in range(K):
            fan = n_in if layer == 0 else N
            off = block_offset(layer + 1, N, n_in)
            b = off + N * fan
            for j in range(N):
                for s in range(S):
                    z = 0.0
                    for k in range(fan):
                        z += w[off + j * fan + k] * H[layer, k, s]
                    H[layer + 1, j, s] = masks[m, layer, j, s] * (z + w[b + j])
        out = block_offset(K + 1, N, n_in)        # Wout (n_out, N), then bout
        acc = 0.0
        for o in range(n_out):
            for s in range(S):
                y = 0.0
                for k in range(N):
                    y += w[out + o * N + k] * H[K, k, s]
                r = y + w[out + n_out * N + o] - T[o, s]
                acc += r * r
                dy[o, s] = 2.0 * r / scale
        loss[m] = acc / scale
        for o in range(n_out):
            gb = 0.0
            for s in range(S):
                gb += dy[o, s]
            g[out + n_out * N + o] = gb
            for k in range(N):
                a = 0.0
                for s in range(S):
                    a += dy[o, s] * H[K, k, s]
                g[out + o * N + k] = a
        for j in range(N):
            for s in range(S):
                a = 0.0
                for o in range(n_out):
                    a += w[out + o * N + j] * dy[o, s]
                dh[j, s] = a                      # dL/dh_K
        for layer in range(K - 1, -1, -1):
            fan = n_in if layer == 0 else N
            off = block_offset(layer + 1, N, n_in)
            b = off + N * fan
            if want_c:
                for j in range(N):
                    for s in range(S):
                        C[m, layer, j, s] = dh[j, s]
            for j in range(N):
                gb = 0.0
                for s in range(S):
                    dz[j, s] = dh[j, s] * masks[m, layer, j, s]
                    gb += dz[j, s]
                g[b + j] = gb
                for k in range(fan):
                    a = 0.0
                    for s in range(S):
                        a += dz[j, s] * H[layer, k, s]
                    g[off + j * fan + k] = a
            if layer > 0:
                for k in range(N):
                    for s in range(S):
                        a = 0.0
                        for j in range(N):
                            a += w[off + j * fan + k] * dz[j, s]
                        dh[k, s] = a              # dL/dh_{l-1}


@njit(cache=True, fastmath=STRICT)
def piece_changes(w, X, T, base, cols, ptr, ent, scale, K, N, n_in, n_out, dL, dG):
    """The change of loss and gradient from the piece ``base`` (K, N, S) to piece k,
    which switches on the entries ent[ptr[k]:ptr[k + 1]] (rows: layer - 1, unit,
    index into ``cols``): summed over those entries' points only, point by point
    (every other point's share is the same on both pieces and drops out exactly)."""
    n_cols, P = cols.size, w.size
    w1 = w.reshape(1, P)
    x1, t1 = np.empty((n_in, 1)), np.empty((n_out, 1))
    m1 = np.empty((1, K, N, 1))
    l1, g1, c1 = np.empty(1), np.empty((1, P)), np.empty((0, 0, 0, 0))
    l0, g0 = np.empty(n_cols), np.empty((n_cols, P))    # the base piece's share per point
    for i in range(n_cols):
        x1[:, 0], t1[:, 0], m1[0, :, :, 0] = X[:, cols[i]], T[:, cols[i]], base[:, :, cols[i]]
        masked_sums_kernel(w1, x1, t1, m1, scale, K, N, n_in, n_out, False, l1, g1, c1)
        l0[i], g0[i] = l1[0], g1[0]
    for k in range(ptr.size - 1):
        dL[k] = 0.0
        dG[k, :] = 0.0
        for i in range(n_cols):                   # the points this piece switches, in order
            hit = False
            for e in range(ptr[k], ptr[k + 1]):
                hit = hit or ent[e, 2] == i
            if not hit:
                continue
            x1[:, 0], t1[:, 0], m1[0, :, :, 0] = X[:, cols[i]], T[:, cols[i]], base[:, :, cols[i]]
            for e in range(ptr[k], ptr[k + 1]):
                if ent[e, 2] == i:
                    m1[0, ent[e, 0], ent[e, 1], 0] = 1.0
            masked_sums_kernel(w1, x1, t1, m1, scale, K, N, n_in, n_out, False, l1, g1, c1)
            dL[k] += l1[0] - l0[i]
            for p in range(P):
                dG[k, p] += g1[0, p] - g0[i, p]


@njit(cache=True, fastmath=STRICT)
def greedy_families(U, threshold):
    """Greedy families of the unit normals U (E, P): entry i, if in none yet, founds
    one with every later free entry whose cosine with it exceeds ``threshold``.
    Returns the family of each entry, numbered in order of their first entries."""
    E, P = U.shape
    label = np.full(E, -1, dtype=np.int64)
    n = 0
    for i in range(E):
        if label[i] >= 0:
            continue
        label[i] = n
        for k in range(i + 1, E):
            if label[k] < 0:
                c = 0.0
                for p in range(P):
                    c += U[k, p] * U[i, p]
                if c > threshold:
                    label[k] = n
        n += 1
    return label
