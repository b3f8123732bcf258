"""Full-batch training of a stack of networks: ``train_stack``.

G&W Sec. 3.1: every step sees the whole training set; the optimizers are
gradient descent with momentum and Adadelta (``optim.py``). One call trains M
independent networks for ``steps`` steps. The whole loop (forward pass,
backpropagation and update, thousands of times) runs inside numba, one
network at a time per worker thread: the networks are handed out in small
batches to ``threads`` Python threads, and the kernel releases the GIL. A
network's weights, optimizer state and activations stay in its core's caches
for its whole run.

Why it is fast (details in ``relunet/fast/``, whose docstring maps each phase
of a step to its equation and its NumPy reference):

* points innermost (structure of arrays): the activations of a layer are N
  rows of points, so one vector register holds one unit at L consecutive
  points (512-bit AVX-512: 8 float64 / 16 float32; 256-bit AVX2: 4 / 8), and
  every layer is a small dense product done with FMA instructions (explicit
  vectors, ``fast/simd.py``);
* the kernel source is generated per (N, n_in, n_out, dtype, vector width) with the unit
  loops unrolled, so a whole layer's outputs for a block of points, or a tile
  of up to 12 weight-gradient sums, live in registers;
* all points of the W_f set (341) fit one chunk whose rows (K*N + 2N + 2 of
  them, about 100 KB in float64) stay in the core's L2 cache;
* nothing is allocated per step, and the only checks are two finiteness
  tests (the loss, and the new weights).

The throughput this reaches, beside NumPy's and the machine's matmul peak, is
in the README (section Performance), measured by ``benchmarks/bench_train.py``.

When several tasks train at once (e.g. dask worker threads), give each
``threads=1`` (or call ``numba.set_num_threads(1)`` in that thread), or the
threads multiply.

Semantics
---------
* ``history[m, h]`` is the loss at step ``h * record_every`` (counted from 0 in
  this call), i.e. the loss of that step's forward pass, at the weights BEFORE
  that step's update. ``loss[m]`` is the loss at the final weights (one extra
  forward pass), so after ``n`` steps it equals what step ``n`` would record.
* Divergence: if the loss of a step is not finite, or an update makes a weight
  non-finite, the network stops there with ``status = 1``; ``W`` keeps the
  LAST FINITE weights (those the failing step started from), ``steps_done`` is
  the number of updates applied, history entries from that step on are NaN
  and ``loss`` is the loss at the kept weights (possibly inf). Its optimizer
  state is left as the failed update wrote it and must not be resumed. The
  other networks of the stack are unaffected, bit for bit.
* ``state`` (in and out) is one array ``(n_state, M, P)`` (momentum: v;
  Adadelta: E[g^2], E[dx^2]); starting from zeros is the optimizers' own
  start. Training ``a`` steps and then ``b`` steps from the returned weights
  and state is bit-identical to ``a + b`` steps in one call (history is
  counted per call).
* Results do not depend on the number of threads or on how the networks are
  split into stacks. The fused kernel's results do depend, in their last
  bits, on its vector width (``vector_bits``: 512 where the CPU has AVX-512,
  else 256; ``fast.vector_bits``): a different width sums over the points in
  another order. The same width gives the same bits.

``train_stack_ref`` is the NumPy twin of ``train_stack``: the same contract,
written as the plain loop ``loss_and_grad_ref`` + an ``optim.py`` rule, step by
step, over the whole stack at once. The tests and ``benchmarks/bench_train.py``
hold the fast path to it (to rounding: its sums run in NumPy's order).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from numba import njit

from . import fast
from ._numba import STRICT
from .fast.stack import run_threads as _run_threads
from .kernels import _backward_one, _forward_one, _loss_one, check_data, loss_and_grad_ref
from .net import Arch, check_stack
from .optim import (
    OPT_CODES,
    Adadelta,
    Momentum,
    adadelta_step,
    apply_update,
    check_dtype,
    momentum_step,
)

__all__ = ["TrainResult", "train_stack", "train_stack_ref"]


@dataclass
class TrainResult:
    """Outcome of :func:`train_stack` for a stack of M networks."""

    W: np.ndarray            # (M, P) final weights (last finite ones if diverged)
    loss: np.ndarray         # (M,) loss at W
    history: np.ndarray      # (M, H) loss at steps 0, r, 2r, ... (NaN after divergence)
    status: np.ndarray       # (M,) int8: 0 ok, 1 diverged
    steps_done: np.ndarray   # (M,) int64: updates applied
    record_every: int = 1
    state: np.ndarray | None = None   # (n_state, M, P) if return_state


# =============================================================================
# Generic fallback (any width): the kernels.py building blocks in one loop
# =============================================================================
@njit(cache=True, nogil=True, fastmath=STRICT)
def _train_range_generic(W, state1, state2, X, T, K, N, steps, record_every, opt, lr, h1, h2, h3,
                         hist, status, done, final, m0, m1):
    """Same contract as the generated ``train_range``, for any N (slower)."""
    M, P = W.shape
    n_in, S = X.shape
    n_out = T.shape[0]
    width = max(N, n_in, n_out)
    A = np.empty((K + 1, width, S), dtype=W.dtype)
    Y = np.empty((n_out, S), dtype=W.dtype)
    D = np.empty((width, S), dtype=W.dtype)
    Dp = np.empty((width, S), dtype=W.dtype)
    g = np.empty(P, dtype=W.dtype)
    prev = np.empty(P, dtype=W.dtype)
    for m in range(m0, m1):
        w = W[m]
        st = 0
        dn = steps
        for k in range(steps):
            _forward_one(w, X, A, K, N, n_in, n_out, Y)
            loss = _loss_one(Y, T)
            if not np.isfinite(loss):
                st = 1
                dn = k
                break
            if k % record_every == 0:
                hist[m, k // record_every] = loss
            _backward_one(w, A, Y, T, K, N, n_in, n_out, D, Dp, g)
            prev[:] = w
            if not apply_update(w, g, state1[m], state2[m], opt, lr, h1, h2, h3):
                w[:] = prev
                st = 1
                dn = k
                break
        _forward_one(w, X, A, K, N, n_in, n_out, Y)
        final[m] = _loss_one(Y, T)
        status[m] = st
        done[m] = dn


# =============================================================================
# Public API
# =============================================================================
def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def train_stack(W0, arch: Arch, x, t, opt, steps, record_every=1000, dtype=None,
                state=None, return_state=False, kernel="auto", threads=None,
                vector_bits=None) -> TrainResult:
    """Train every network of the stack ``W0`` for ``steps`` full-batch steps.

    Parameters
    ----------
    W0 : (M, P) or (P,) initial weights (e.g. ``net.init_stack``); not modified.
    arch : the networks' :class:`~relunet.net.Arch`.
    x, t : (S,) or (S, n_in) inputs and (S,) or (S, n_out) targets.
    opt : :class:`~relunet.optim.Momentum` or :class:`~relunet.optim.Adadelta`.
    steps, record_every : integers >= 1; history has ceil(steps / record_every)
        columns.
    dtype : float64 or float32, the dtype of every computation; default: the
        dtype of W0 (float64 unless W0 is float32).
    state : optional (opt.n_state, M, P) optimizer state to continue from.
    return_state : also return the final optimizer state in ``result.state``.
    kernel : 'auto' (fused kernel when N <= 16, else generic), 'fused' or
        'generic' (the plain kernels.py loop; slower, for any size).
    threads : worker threads, one network at a time each; default
        ``numba.get_num_threads()`` (so ``numba.set_num_threads`` applies).
    vector_bits : 256 or 512, the fused kernel's vector width; default
        ``$RELUNET_VECTOR_BITS`` if set, else 512 where the CPU has AVX-512
        and 256 otherwise (``fast.vector_bits``). Widths differ in the last bits.

    Returns
    -------
    TrainResult (arrays of ``dtype``; see the module docstring for semantics).
    """
    if not isinstance(arch, Arch):
        raise ValueError(f"arch must be a relunet.Arch, got {type(arch).__name__}")
    if not isinstance(opt, (Momentum, Adadelta)):
        raise ValueError(f"opt must be a relunet.optim.Momentum or Adadelta, got {opt!r}")
    steps = _positive_int(steps, "steps")
    record_every = _positive_int(record_every, "record_every")
    W = check_stack(W0, arch, "W0")
    if dtype is None:
        dtype = W.dtype
    try:
        ok = np.dtype(dtype) in (np.float32, np.float64)
    except TypeError:            # np.dtype('foo'): not a dtype at all
        ok = False
    if not ok:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}")
    dtype = np.dtype(dtype)
    check_dtype(opt, dtype)      # hyper-parameters valid in the dtype computed in
    M, P = W.shape
    if M == 0:
        raise ValueError("W0 must hold at least one network, got shape (0, P)")
    if not np.all(np.isfinite(W)):
        raise ValueError("W0 contains non-finite values (NaN or inf)")
    W = np.array(W, dtype=dtype, order="C", copy=True)
    X, T = check_data(arch, x, t, dtype)
    if kernel not in ("auto", "fused", "generic"):
        raise ValueError(f"kernel must be 'auto', 'fused' or 'generic', got {kernel!r}")
    if kernel == "auto":
        kernel = "fused" if arch.N <= fast.NMAX else "generic"
    bits = fast.vector_bits(vector_bits)

    state1 = np.zeros((M, P), dtype=dtype)
    state2 = np.zeros((M, P) if opt.n_state == 2 else (M, 0), dtype=dtype)
    if state is not None:
        state = np.asarray(state)
        if state.shape != (opt.n_state, M, P):
            raise ValueError(f"state must have shape ({opt.n_state}, {M}, {P}) for "
                             f"{opt.name}, got {state.shape}")
        if not np.all(np.isfinite(state)):
            raise ValueError("state contains non-finite values (NaN or inf)")
        state1[...] = state[0]
        if opt.n_state == 2:
            state2[...] = state[1]

    cast = dtype.type
    if isinstance(opt, Momentum):
        hyper = (cast(opt.momentum), cast(0), cast(0))
    else:
        hyper = (cast(opt.rho), cast(opt.eps), cast(1.0 - opt.rho))
    code = OPT_CODES[opt.name]
    S, n_out = X.shape[1], T.shape[0]
    H = -(-steps // record_every)
    hist = np.full((M, H), np.nan, dtype=dtype)
    status = np.zeros(M, dtype=np.int8)
    done = np.zeros(M, dtype=np.int64)
    final = np.empty(M, dtype=dtype)

    if threads is None:
        threads = numba.get_num_threads()
    threads = _positive_int(threads, "threads")
    common = (steps, record_every, code, cast(opt.lr)) + hyper
    outputs = (hist, status, done, final)
    if kernel == "fused":
        if arch.N > fast.NMAX:
            raise ValueError(f"kernel='fused' supports N <= {fast.NMAX}, got N={arch.N}")
        mod = fast.kernel_module(arch.N, arch.n_in, arch.n_out, dtype, bits)
        data, nchunks, clen = fast.pack_points(X, T, fast.CM, fast.block_points(dtype, bits))
        args = (W, state1, state2, data, arch.K, nchunks, clen) + common \
            + (cast(2.0 / (S * n_out)), cast(1.0 / (S * n_out))) + outputs
        _run_threads(mod.train_range, args, M, threads)
    else:
        args = (W, state1, state2, X, T, arch.K, arch.N) + common + outputs
        _run_threads(_train_range_generic, args, M, threads)

    out_state = None
    if return_state:
        out_state = np.stack([state1, state2]) if opt.n_state == 2 else state1[None]
    return TrainResult(W=W, loss=final, history=hist, status=status, steps_done=done,
                       record_every=record_every, state=out_state)


def train_stack_ref(W0, arch: Arch, x, t, opt, steps, record_every=1, state=None,
                    loss_and_grad=loss_and_grad_ref) -> TrainResult:
    """NumPy twin of :func:`train_stack` (float64, whole stack at once, slow).

    Each step: ``loss, G = loss_and_grad(W, arch, x, t)`` (forward and backward
    pass, ``kernels.loss_and_grad_ref`` by default), then the optimizer's NumPy
    rule (``optim.momentum_step`` or ``optim.adadelta_step``) on every network
    still training. Same contract as ``train_stack``: history every
    ``record_every`` steps, ``loss`` at the final weights, a network whose loss
    or new weights are not finite stops with status 1 at its last finite
    weights. Returns a TrainResult with ``state`` (n_state, M, P).
    ``loss_and_grad`` may be another function of the same signature (a
    benchmark passes the numba kernel to make its start points faster).
    """
    steps = _positive_int(steps, "steps")
    record_every = _positive_int(record_every, "record_every")
    W = np.array(check_stack(W0, arch, "W0"), dtype=np.float64)
    M, P = W.shape
    st = np.zeros((opt.n_state, M, P)) if state is None else np.array(state, dtype=np.float64)
    hist = np.full((M, -(-steps // record_every)), np.nan)
    status = np.zeros(M, dtype=np.int8)
    done = np.full(M, steps, dtype=np.int64)
    live = np.arange(M)                              # networks still training
    for k in range(steps):
        if live.size == 0:
            break
        loss, G = loss_and_grad(W[live], arch, x, t)
        bad = ~np.isfinite(loss)
        status[live[bad]], done[live[bad]] = 1, k
        live, loss, G = live[~bad], loss[~bad], G[~bad]
        if k % record_every == 0:
            hist[live, k // record_every] = loss
        w, s = W[live], st[:, live]                  # copies: kept only if finite
        if isinstance(opt, Momentum):
            momentum_step(w, G, s[0], opt.lr, opt.momentum)
        else:
            adadelta_step(w, G, s[0], s[1], opt.lr, opt.rho, opt.eps)
        ok = np.all(np.isfinite(w), axis=1)
        W[live[ok]] = w[ok]
        st[:, live] = s
        status[live[~ok]], done[live[~ok]] = 1, k
        live = live[ok]
    final = loss_and_grad(W, arch, x, t)[0]
    return TrainResult(W=W, loss=final, history=hist, status=status, steps_done=done,
                       record_every=record_every, state=st)
