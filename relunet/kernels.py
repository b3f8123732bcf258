"""Forward and backward passes for stacks of K x N ReLU networks.

Reference implementation, readable first: every numba kernel has a plain NumPy
twin (``*_ref``) directly above it, and the tests hold the two together. The
numba kernels parallelise across networks only (one network per ``prange``
iteration, each iteration writing only its own rows), so results do not depend
on the number of threads.

Notation (see ``net.py``): W[M, P] stack, x[S] inputs, t[S] targets. Inside a
kernel the activations of one network are kept "points innermost" (structure
of arrays): ``A[l, j, s]`` is unit j of layer l at point s, with layer 0 the
input. Loops over points then run over contiguous memory; sums over points
keep the order the source states (no fast-math, ``_numba.py``).

Forward pass (G&W Sec. 2), at each point s::

    h_0 = x,   z_l = W_l h_{l-1} + b_l,   h_l = relu(z_l)   (l = 1..K)
    y = W_out h_K + b_out

Loss: the mean squared error over the training set (G&W Sec. 3.1)::

    L(w) = 1/(S n_out) sum_s sum_o (y_o(x_s; w) - t_o,s)^2

Backward pass (the chain rule, written out by hand): with dy = dL/dy and
dz_l = dL/dz_l at each point, and the sums over the S points giving the
gradient::

    dy        = 2 (y - t) / (S n_out)
    dL/dW_out = sum_s dy h_K^T          dL/db_out = sum_s dy
    dh_K      = W_out^T dy
    for l = K, ..., 1:
        dz_l      = dh_l * relu'(z_l)         relu'(z) = [z > 0] = [h_l > 0]
        dL/dW_l   = sum_s dz_l h_{l-1}^T     dL/db_l = sum_s dz_l
        dh_{l-1}  = W_l^T dz_l                (l > 1)

ReLU's derivative at 0 is taken as 0 (a unit exactly at its kink is treated
as off), the same in every kernel and reference. Where these equations live:
``loss_and_grad_ref`` (NumPy, batched matmuls), ``_forward_one`` and
``_backward_one`` (numba, one network), the fused training kernel of
``relunet/fast`` (one emitter per line above), and their R-operator for
Hessian-vector products in ``hvp_kernels.py``. Parameter offsets inside the
numba kernels come from ``net.block_offset``.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._numba import STRICT
from .fast.codegen import NMAX
from .fast.stack import bound_loss_and_grad
from .fast.stack import loss as fast_loss
from .fast.stack import loss_and_grad as fast_loss_and_grad
from .net import Arch, block_offset, check_stack

__all__ = ["forward", "forward_ref", "loss", "loss_ref", "loss_and_grad",
           "loss_and_grad_ref", "check_data"]


# =============================================================================
# Input checks shared by all kernels
# =============================================================================
def _as_points(a, name: str, width: int, dtype) -> np.ndarray:
    """(S,) or (S, width) -> C-contiguous (width, S) array of ``dtype``."""
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    if a.ndim == 1 and width == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[1] != width:
        raise ValueError(f"{name} must have shape (S,) or (S, {width}), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: the training set needs at least one point")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return np.ascontiguousarray(a.T, dtype=dtype)


def check_data(arch: Arch, x, t=None, dtype=np.float64):
    """Validate inputs x and targets t; return (X[n_in, S], T[n_out, S] or None)."""
    X = _as_points(x, "x", arch.n_in, dtype)
    if t is None:
        return X, None
    T = _as_points(t, "t", arch.n_out, dtype)
    if T.shape[1] != X.shape[1]:
        raise ValueError(f"x and t must have the same number of points, "
                         f"got {X.shape[1]} and {T.shape[1]}")
    return X, T


def _prepare(W, arch, x, t=None):
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    W = check_stack(W, arch)
    X, T = check_data(arch, x, t, W.dtype)
    return W, X, T


# =============================================================================
# NumPy references (batched over the stack with matmul; obviously correct)
# =============================================================================
def _forward_ref_acts(W, arch, X):
    """Returns list of activations h_l[M, N_l, S] (l = 0..K) and y[M, n_out, S]."""
    v = arch.unpack(W)
    h = np.broadcast_to(X, (W.shape[0],) + X.shape)
    acts = [h]
    for layer in range(1, arch.K + 1):
        wn, bn = arch.layer_blocks(layer)
        h = np.maximum(v[wn] @ h + v[bn][:, :, None], 0.0)
        acts.append(h)
    y = v["Wout"] @ h + v["bout"][:, :, None]
    return acts, y


def forward_ref(W, arch: Arch, x) -> np.ndarray:
    """NumPy twin of :func:`forward`."""
    W, X, _ = _prepare(W, arch, x)
    _, y = _forward_ref_acts(W, arch, X)
    return y[:, 0, :] if arch.n_out == 1 else np.transpose(y, (0, 2, 1))


def loss_ref(W, arch: Arch, x, t) -> np.ndarray:
    """NumPy twin of :func:`loss`."""
    W, X, T = _prepare(W, arch, x, t)
    _, y = _forward_ref_acts(W, arch, X)
    return np.mean((y - T) ** 2, axis=(1, 2))


def loss_and_grad_ref(W, arch: Arch, x, t):
    """NumPy twin of :func:`loss_and_grad`: backprop with batched matmuls."""
    W, X, T = _prepare(W, arch, x, t)
    v = arch.unpack(W)
    acts, y = _forward_ref_acts(W, arch, X)
    r = y - T                                   # (M, n_out, S) residuals
    loss = np.mean(r ** 2, axis=(1, 2))
    G = np.zeros_like(W)
    g = arch.unpack(G)
    dy = 2.0 * r / (X.shape[1] * arch.n_out)    # dL/dy
    g["Wout"][...] = dy @ np.transpose(acts[-1], (0, 2, 1))
    g["bout"][...] = dy.sum(axis=2)
    dh = np.transpose(v["Wout"], (0, 2, 1)) @ dy       # (M, N, S)
    for layer in range(arch.K, 0, -1):
        wn, bn = arch.layer_blocks(layer)
        dz = dh * (acts[layer] > 0)                    # relu'(z) = [z > 0]
        g[wn][...] = dz @ np.transpose(acts[layer - 1], (0, 2, 1))
        g[bn][...] = dz.sum(axis=2)
        dh = np.transpose(v[wn], (0, 2, 1)) @ dz
    return loss, G


# =============================================================================
# numba kernels: one network per prange iteration
# =============================================================================
@njit(cache=True, fastmath=STRICT)
def _forward_one(w, X, A, K, N, n_in, n_out, Y):
    """Forward pass of one network. Keeps A[l, j, s] = h_l (A[0] = inputs) for
    the backward pass; writes outputs Y[o, s]."""
    S = X.shape[1]
    for i in range(n_in):
        for s in range(S):
            A[0, i, s] = X[i, s]
    for layer in range(1, K + 1):
        fan_in = n_in if layer == 1 else N
        off = block_offset(layer, N, n_in)
        boff = off + N * fan_in
        for j in range(N):
            b = w[boff + j]
            for s in range(S):
                A[layer, j, s] = b
            for i in range(fan_in):
                wji = w[off + j * fan_in + i]
                for s in range(S):
                    A[layer, j, s] += wji * A[layer - 1, i, s]
            for s in range(S):
                if A[layer, j, s] < 0.0:
                    A[layer, j, s] = 0.0
    off = block_offset(K + 1, N, n_in)
    boff = off + n_out * N
    for o in range(n_out):
        b = w[boff + o]
        for s in range(S):
            Y[o, s] = b
        for i in range(N):
            woi = w[off + o * N + i]
            for s in range(S):
                Y[o, s] += woi * A[K, i, s]


@njit(cache=True, fastmath=STRICT)
def _loss_one(Y, T):
    n_out, S = T.shape
    acc = 0.0
    for o in range(n_out):
        for s in range(S):
            r = Y[o, s] - T[o, s]
            acc += r * r
    return acc / (S * n_out)


@njit(cache=True, fastmath=STRICT)
def _backward_one(w, A, Y, T, K, N, n_in, n_out, D, Dp, g):
    """Backward pass of one network. Overwrites g[P] with dL/dw.

    Scratch buffers D, Dp (both (width, S), width = max(N, n_in, n_out)):
    dL/dy goes into Dp[o, s]; dL/dh_K into D; in each hidden layer l = K..1,
    dL/dz_l is formed in place in D (zeroed where h_l = 0), then for l > 1
    dL/dh_{l-1} goes into Dp and the two names are swapped, so D always holds
    the current layer.
    The caller's D and Dp are not restored: both are scratch.

    Parameter offsets come from ``net.block_offset`` (numba cannot read
    ``Arch.table``; a test holds the two together)."""
    S = T.shape[1]
    scale = 2.0 / (S * n_out)
    # output layer: Wout (n_out, N), bout (n_out,)
    off = block_offset(K + 1, N, n_in)
    boff = off + n_out * N
    for o in range(n_out):
        db = 0.0
        for s in range(S):
            d = scale * (Y[o, s] - T[o, s])
            Dp[o, s] = d
            db += d
        g[boff + o] = db
        for i in range(N):
            acc = 0.0
            for s in range(S):
                acc += Dp[o, s] * A[K, i, s]
            g[off + o * N + i] = acc
    # dL/dh_K
    for i in range(N):
        for s in range(S):
            D[i, s] = 0.0
        for o in range(n_out):
            woi = w[off + o * N + i]
            for s in range(S):
                D[i, s] += woi * Dp[o, s]
    # hidden layers K..1
    for layer in range(K, 0, -1):
        fan_in = n_in if layer == 1 else N
        off = block_offset(layer, N, n_in)
        boff = off + N * fan_in
        for j in range(N):          # dz = dh * relu'(z), in place in D
            db = 0.0
            for s in range(S):
                if A[layer, j, s] <= 0.0:
                    D[j, s] = 0.0
                db += D[j, s]
            g[boff + j] = db
            for i in range(fan_in):
                acc = 0.0
                for s in range(S):
                    acc += D[j, s] * A[layer - 1, i, s]
                g[off + j * fan_in + i] = acc
        if layer > 1:                # dh_{l-1} = W_l^T dz, into Dp, then swap
            for i in range(fan_in):
                for s in range(S):
                    Dp[i, s] = 0.0
                for j in range(N):
                    wji = w[off + j * fan_in + i]
                    for s in range(S):
                        Dp[i, s] += wji * D[j, s]
            D, Dp = Dp, D


@njit(cache=True, parallel=True, fastmath=STRICT)
def _forward_kernel(W, X, K, N, n_out):
    M = W.shape[0]
    n_in, S = X.shape
    Yall = np.empty((M, n_out, S), dtype=W.dtype)
    for m in prange(M):
        A = np.empty((K + 1, max(N, n_in), S), dtype=W.dtype)
        _forward_one(W[m], X, A, K, N, n_in, n_out, Yall[m])
    return Yall


@njit(cache=True, parallel=True, fastmath=STRICT)
def _loss_kernel(W, X, T, K, N):
    M = W.shape[0]
    n_in, S = X.shape
    n_out = T.shape[0]
    out = np.empty(M, dtype=W.dtype)
    for m in prange(M):
        A = np.empty((K + 1, max(N, n_in), S), dtype=W.dtype)
        Y = np.empty((n_out, S), dtype=W.dtype)
        _forward_one(W[m], X, A, K, N, n_in, n_out, Y)
        out[m] = _loss_one(Y, T)
    return out


@njit(cache=True, parallel=True, fastmath=STRICT)
def _loss_and_grad_kernel(W, X, T, K, N):
    M, P = W.shape
    n_in, S = X.shape
    n_out = T.shape[0]
    out = np.empty(M, dtype=W.dtype)
    G = np.empty((M, P), dtype=W.dtype)
    width = max(N, n_in, n_out)
    for m in prange(M):
        A = np.empty((K + 1, width, S), dtype=W.dtype)
        Y = np.empty((n_out, S), dtype=W.dtype)
        D = np.empty((width, S), dtype=W.dtype)
        Dp = np.empty((width, S), dtype=W.dtype)
        _forward_one(W[m], X, A, K, N, n_in, n_out, Y)
        out[m] = _loss_one(Y, T)
        _backward_one(W[m], A, Y, T, K, N, n_in, n_out, D, Dp, G[m])
    return out, G


# =============================================================================
# Public API
# =============================================================================
def forward(W, arch: Arch, x) -> np.ndarray:
    """Outputs of every network of the stack at every input.

    Parameters
    ----------
    W : (M, P) or (P,) float32/float64 stack.
    arch : the networks' :class:`~relunet.net.Arch`.
    x : (S,) or (S, n_in) inputs.

    Returns
    -------
    y : (M, S) for one output, else (M, S, n_out); dtype of W.
    """
    W, X, _ = _prepare(W, arch, x)
    Y = _forward_kernel(W, X, arch.K, arch.N, arch.n_out)
    return Y[:, 0, :] if arch.n_out == 1 else np.transpose(Y, (0, 2, 1))


def _which(kernel, arch):
    if kernel not in ("auto", "fast", "plain"):
        raise ValueError(f"kernel must be 'auto', 'fast' or 'plain', got {kernel!r}")
    if kernel == "auto":
        kernel = "fast" if arch.N <= NMAX else "plain"
    if kernel == "fast" and arch.N > NMAX:
        raise ValueError(f"kernel='fast' supports N <= {NMAX}, got N={arch.N}")
    return kernel


def loss(W, arch: Arch, x, t, kernel="auto") -> np.ndarray:
    """Mean squared error of every network on (x, t): array (M,). ``kernel``
    as in :func:`loss_and_grad`, whose loss this is, bit for bit."""
    W, X, T = _prepare(W, arch, x, t)
    if _which(kernel, arch) == "fast":
        return fast_loss(W, arch.K, arch.N, X, T)
    return _loss_kernel(W, X, T, arch.K, arch.N)


def loss_and_grad(W, arch: Arch, x, t, kernel="auto"):
    """MSE and its exact gradient for every network of the stack.

    ``kernel``: 'plain' runs ``_loss_and_grad_kernel`` above (one network per
    thread, the loops of ``_forward_one`` / ``_backward_one``); 'fast' the
    generated vector kernel of the training fast path
    (``relunet.fast.stack.loss_and_grad``: the forward and backward pass of a
    training step without its update, 5-10x faster on a stack of networks);
    'auto' (default) 'fast' when N <= ``fast.NMAX``. The two agree to
    rounding (their sums over points run in different orders); each is
    deterministic and a row's result does not depend on the other rows.

    Returns
    -------
    loss : (M,) ;  grad : (M, P), both of the dtype of W.
    """
    W, X, T = _prepare(W, arch, x, t)
    if _which(kernel, arch) == "fast":
        return fast_loss_and_grad(W, arch.K, arch.N, X, T)
    return _loss_and_grad_kernel(W, X, T, arch.K, arch.N)


def loss_and_grad_fn(arch: Arch, x, t, dtype=np.float64, kernel="auto"):
    """:func:`loss_and_grad` on fixed data, as a callable W (M, P) -> (loss, grad):
    the data checked and the kernel looked up once, then the same numbers bit for
    bit on every call. Made for the thousands of small calls of a descent's line
    searches (relunet.quench.descend), where those per-call lookups cost as much as
    the kernel."""
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    dt = np.dtype(dtype)
    X, T = check_data(arch, x, t, dt)
    fast = _which(kernel, arch) == "fast"
    run = bound_loss_and_grad(arch.K, arch.N, X, T) if fast else None

    def efun(W):
        W = np.asarray(W)
        if W.dtype != dt or W.ndim != 2 or W.shape[1] != arch.P or not W.flags.c_contiguous:
            W = check_stack(W, arch).astype(dt, copy=False)
        return run(W) if fast else _loss_and_grad_kernel(W, X, T, arch.K, arch.N)
    return efun
