"""Hessian-vector products of the MSE of K x N ReLU networks: R-operator kernels.

Implementation half of :mod:`relunet.hessian` (the method, equations and
conventions are taught there). Here: the NumPy twin :func:`hvp_ref` (batched
matmuls, obviously correct), and the numba kernels that apply Pearlmutter's
R-operator to the forward and backward pass of :mod:`relunet.kernels`.

Layout is that of ``kernels.py``: points innermost, ``A[l, j, s]`` = h_l (unit
j of layer l at point s, layer 0 the input). What the forward/backward pass
keeps for the R-pass:

    A[l, j, s]   h_l                  (l = 0..K)
    DZ[l, j, s]  dL/dz_l              (l = 1..K; DZ[0] unused)
    DY[o, s]     dL/dy = scale (y - t),  scale = 2 / (S n_out)

and the R-pass itself keeps RA[l, j, s] = R{h_l}. ReLU'(z) is [h > 0], i.e.
relu'(0) = 0, exactly as in ``kernels.py``.

Parallelism: :func:`rop_kernel` runs one ``prange`` iteration per (network,
block of directions); each iteration recomputes its network's forward/backward
pass (cheap next to a block of HVPs) and writes only its own rows H[m, p0:p1].
No shared accumulators, so the result is bit-identical for any thread count
and any block size.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba import STRICT
from .kernels import _forward_one, _forward_ref_acts, check_data
from .net import Arch, block_offset, check_stack

__all__ = ["prepare", "hvp_ref", "hessian_ref", "rop_kernel"]


# =============================================================================
# Input checks (float64 throughout: the Hessian is a float64 object)
# =============================================================================
def prepare(W, arch, x, t, V=None):
    """Validate; return W (M, P), X (n_in, S), T (n_out, S), V (M, P) or None, float64."""
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W = np.ascontiguousarray(check_stack(W, arch), dtype=np.float64)
    X, T = check_data(arch, x, t, np.float64)
    if T is None:
        raise ValueError("t must be given: the Hessian is that of the loss on (x, t)")
    if not np.all(np.isfinite(W)):
        raise ValueError("W contains non-finite values (NaN or inf)")
    if V is not None:
        V = np.asarray(V)
        if V.dtype.kind not in "fiu":
            raise ValueError(f"V must be a real numeric array, got dtype {V.dtype}")
        V = np.ascontiguousarray(V[None, :] if V.ndim == 1 else V, dtype=np.float64)
        if V.shape != W.shape:
            raise ValueError(f"V must have shape {W.shape} (one direction per network, "
                             f"like W), got {np.shape(V)}")
        if not np.all(np.isfinite(V)):
            raise ValueError("V contains non-finite values (NaN or inf)")
    return W, X, T, V


# =============================================================================
# NumPy twin: batched over the stack with matmuls
# =============================================================================
def hvp_ref(W, arch, x, t, V) -> np.ndarray:
    """NumPy twin of :func:`relunet.hessian.hvp`: H(w_m) v_m for every network m.

    W, V : (M, P) (or (P,));  x : (S,) or (S, n_in);  t : (S,) or (S, n_out).
    Returns HV : (M, P) float64.
    """
    W, X, T, V = prepare(W, arch, x, t, V)
    v, r = arch.unpack(W), arch.unpack(V)
    acts, y = _forward_ref_acts(W, arch, X)            # h_l (M, N_l, S), y (M, n_out, S)
    masks = [None] + [acts[layer] > 0 for layer in range(1, arch.K + 1)]  # relu'(z_l) = [h_l > 0]
    scale = 2.0 / (X.shape[1] * arch.n_out)

    def tr(a):
        return np.transpose(a, (0, 2, 1))

    # ---- forward pass and its R-image: R{z_l} = V_l h_{l-1} + W_l R{h_{l-1}} + c_l
    Racts = [np.zeros_like(acts[0])]
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        Rz = r[wn] @ acts[layer - 1] + v[wn] @ Racts[-1] + r[bn][:, :, None]
        Racts.append(Rz * masks[layer])                # R{relu(z)} = relu'(z) R{z}
    Ry = r["Wout"] @ acts[-1] + v["Wout"] @ Racts[-1] + r["bout"][:, :, None]
    # ---- backward pass and its R-image
    HV = np.zeros_like(W)
    hv = arch.unpack(HV)
    dy = scale * (y - T)                               # dL/dy      (M, n_out, S)
    Rdy = scale * Ry                                   # R{dL/dy}
    hv["Wout"][...] = Rdy @ tr(acts[-1]) + dy @ tr(Racts[-1])
    hv["bout"][...] = Rdy.sum(axis=2)
    dh = tr(v["Wout"]) @ dy                            # dL/dh_K
    Rdh = tr(r["Wout"]) @ dy + tr(v["Wout"]) @ Rdy
    for layer in range(arch.K, 0, -1):
        wn, bn = arch.layer_blocks(layer)
        dz, Rdz = dh * masks[layer], Rdh * masks[layer]
        hv[wn][...] = Rdz @ tr(acts[layer - 1]) + dz @ tr(Racts[layer - 1])
        hv[bn][...] = Rdz.sum(axis=2)
        dh = tr(v[wn]) @ dz
        Rdh = tr(r[wn]) @ dz + tr(v[wn]) @ Rdz
    return HV


def hessian_ref(W, arch, x, t) -> np.ndarray:
    """Full Hessians (M, P, P) from :func:`hvp_ref` along all P unit vectors.

    Row p of H[m] is (H e_p)^T; not symmetrised. Memory ~ M P^2 S: small M only.
    """
    W, X, T, _ = prepare(W, arch, x, t)
    M, P = W.shape
    Wrep = np.repeat(W, P, axis=0)                      # (M P, P): network m, P times
    E = np.tile(np.eye(P), (M, 1))                      # (M P, P): unit directions
    return hvp_ref(Wrep, arch, X.T, T.T, E).reshape(M, P, P)


# =============================================================================
# numba: forward/backward pass that keeps dL/dz of every layer
# =============================================================================
@njit(cache=True, fastmath=STRICT)
def _backward_keep(w, A, Y, T, K, N, n_in, n_out, DY, DZ):
    """Fills DY[o, s] = dL/dy and DZ[l, j, s] = dL/dz_l (l = 1..K)."""
    S = T.shape[1]
    scale = 2.0 / (S * n_out)
    off = block_offset(K + 1, N, n_in)                   # Wout
    for o in range(n_out):
        for s in range(S):
            DY[o, s] = scale * (Y[o, s] - T[o, s])
    for i in range(N):                                   # dL/dh_K = Wout^T dy
        for s in range(S):
            DZ[K, i, s] = 0.0
        for o in range(n_out):
            woi = w[off + o * N + i]
            for s in range(S):
                DZ[K, i, s] += woi * DY[o, s]
    for layer in range(K, 0, -1):
        for j in range(N):                               # dz_l = dh_l * relu'(z_l)
            for s in range(S):
                if A[layer, j, s] <= 0.0:
                    DZ[layer, j, s] = 0.0
        if layer > 1:                                    # dh_{l-1} = W_l^T dz_l
            off = block_offset(layer, N, n_in)
            for i in range(N):
                for s in range(S):
                    DZ[layer - 1, i, s] = 0.0
                for j in range(N):
                    wji = w[off + j * N + i]
                    for s in range(S):
                        DZ[layer - 1, i, s] += wji * DZ[layer, j, s]


@njit(cache=True, fastmath=STRICT)
def _first_nonzero_layer(v, K, N, n_in):
    """First affine map (1..K+1) whose block of v is nonzero; K+2 if v == 0."""
    first = block_offset(2, N, n_in)                 # end of layer 1's block
    hidden = block_offset(K + 1, N, n_in) - first    # layers 2..K
    for p in range(v.shape[0]):
        if v[p] != 0.0:
            if p < first:
                return 1
            if p < first + hidden:
                return 2 + (p - first) // (N * N + N)
            return K + 1
    return K + 2


# =============================================================================
# numba: the R-pass (one direction v of one network)
# =============================================================================
@njit(cache=True, fastmath=STRICT)
def _rop_one(w, v, A, DY, DZ, K, N, n_in, n_out, RA, RD, RDp, hv):
    """hv[P] = H v, given the kept A, DY, DZ of network w. Buffers RA (K+1, width,
    S); RD, RDp (width, S). Layers before the first nonzero block of v have
    R{h} = 0 and are skipped (this is what makes unit directions cheap)."""
    S = DY.shape[1]
    scale = 2.0 / (S * n_out)
    lo = _first_nonzero_layer(v, K, N, n_in)
    # ---- R-forward: R{z_l} = V_l h_{l-1} + W_l R{h_{l-1}} + c_l; R{h_l} = relu' R{z_l}
    for layer in range(1, K + 1):
        fan_in = n_in if layer == 1 else N
        off = block_offset(layer, N, n_in)
        boff = off + N * fan_in
        for j in range(N):
            if layer < lo:
                for s in range(S):
                    RA[layer, j, s] = 0.0
                continue
            c = v[boff + j]
            for s in range(S):
                RA[layer, j, s] = c
            for i in range(fan_in):
                vji = v[off + j * fan_in + i]
                if vji != 0.0:
                    for s in range(S):
                        RA[layer, j, s] += vji * A[layer - 1, i, s]
                if layer > lo:                           # R{h_{l-1}} = 0 for l <= lo
                    wji = w[off + j * fan_in + i]
                    for s in range(S):
                        RA[layer, j, s] += wji * RA[layer - 1, i, s]
            for s in range(S):
                if A[layer, j, s] <= 0.0:
                    RA[layer, j, s] = 0.0
    # ---- R{y} and R{dL/dy} = scale R{y}, into RD[o, s]
    off = block_offset(K + 1, N, n_in)
    boff = off + n_out * N
    for o in range(n_out):
        c = v[boff + o]
        for s in range(S):
            RD[o, s] = c
        for i in range(N):
            voi = v[off + o * N + i]
            if voi != 0.0:
                for s in range(S):
                    RD[o, s] += voi * A[K, i, s]
            if K >= lo:                                  # else R{h_K} = 0
                woi = w[off + o * N + i]
                for s in range(S):
                    RD[o, s] += woi * RA[K, i, s]
        for s in range(S):
            RD[o, s] *= scale
    # ---- output layer: R{dWout} = R{dy} h_K^T + dy R{h_K}^T, R{dbout} = sum R{dy}
    for o in range(n_out):
        acc = 0.0
        for s in range(S):
            acc += RD[o, s]
        hv[boff + o] = acc
        for i in range(N):
            acc = 0.0
            for s in range(S):
                acc += RD[o, s] * A[K, i, s] + DY[o, s] * RA[K, i, s]
            hv[off + o * N + i] = acc
    # R{dL/dh_K} = Vout^T dy + Wout^T R{dy}, into RDp
    for i in range(N):
        for s in range(S):
            RDp[i, s] = 0.0
        for o in range(n_out):
            voi = v[off + o * N + i]
            woi = w[off + o * N + i]
            for s in range(S):
                RDp[i, s] += voi * DY[o, s] + woi * RD[o, s]
    RD, RDp = RDp, RD
    # ---- hidden layers K..1 (RD holds R{dL/dh_l} on entry)
    for layer in range(K, 0, -1):
        fan_in = n_in if layer == 1 else N
        off = block_offset(layer, N, n_in)
        boff = off + N * fan_in
        for j in range(N):          # R{dz} = R{dh} * relu'(z), in place
            acc = 0.0
            for s in range(S):
                if A[layer, j, s] <= 0.0:
                    RD[j, s] = 0.0
                acc += RD[j, s]
            hv[boff + j] = acc
            for i in range(fan_in):     # R{dW_l} = R{dz} h_{l-1}^T + dz R{h_{l-1}}^T
                acc = 0.0
                if layer > lo:
                    for s in range(S):
                        acc += (RD[j, s] * A[layer - 1, i, s]
                                + DZ[layer, j, s] * RA[layer - 1, i, s])
                else:
                    for s in range(S):
                        acc += RD[j, s] * A[layer - 1, i, s]
                hv[off + j * fan_in + i] = acc
        if layer > 1:               # R{dh_{l-1}} = V_l^T dz_l + W_l^T R{dz_l}, into RDp
            for i in range(fan_in):
                for s in range(S):
                    RDp[i, s] = 0.0
                for j in range(N):
                    vji = v[off + j * fan_in + i]
                    wji = w[off + j * fan_in + i]
                    if vji != 0.0:
                        for s in range(S):
                            RDp[i, s] += vji * DZ[layer, j, s]
                    for s in range(S):
                        RDp[i, s] += wji * RD[j, s]
            RD, RDp = RDp, RD


# =============================================================================
# numba: batched kernels
# =============================================================================
@njit(cache=True, parallel=True, fastmath=STRICT)
def rop_kernel(W, X, T, V, unit, K, N, block):
    """HV[m, d] = H(W[m]) v_d for every network m and direction d: (M, D, P).

    unit=False: v_d = V[m, d], V (M, D, P).  unit=True: v_d = e_d, all D = P unit
    vectors (V is not read), so HV[m] holds the rows (H e_p)^T of the Hessian,
    not symmetrised. One prange iteration per (network, block of ``block``
    directions); each recomputes its network's forward/backward pass.
    (One kernel for both uses: every parallel kernel costs seconds of compilation.)
    """
    M, P = W.shape
    n_in, S = X.shape
    n_out = T.shape[0]
    width = max(N, n_in, n_out)
    nd = P if unit else V.shape[1]
    nb = (nd + block - 1) // block
    HV = np.empty((M, nd, P), dtype=W.dtype)
    for it in prange(M * nb):
        m = it // nb
        d0 = (it % nb) * block
        d1 = min(nd, d0 + block)
        A = np.empty((K + 1, width, S), dtype=W.dtype)
        DZ = np.empty((K + 1, width, S), dtype=W.dtype)
        RA = np.zeros((K + 1, width, S), dtype=W.dtype)
        Y = np.empty((n_out, S), dtype=W.dtype)
        DY = np.empty((n_out, S), dtype=W.dtype)
        RD = np.empty((width, S), dtype=W.dtype)
        RDp = np.empty((width, S), dtype=W.dtype)
        e = np.zeros(P, dtype=W.dtype)
        _forward_one(W[m], X, A, K, N, n_in, n_out, Y)
        _backward_keep(W[m], A, Y, T, K, N, n_in, n_out, DY, DZ)
        for d in range(d0, d1):     # one call site: inlining it twice doubles compile time
            if unit:
                e[d] = 1.0
            else:
                e[:] = V[m, d]
            _rop_one(W[m], e, A, DY, DZ, K, N, n_in, n_out, RA, RD, RDp, HV[m, d])
            if unit:
                e[d] = 0.0
    return HV
