"""Calling the generated kernels over a stack of networks: threads, and the
loss-and-gradient and Hessian-vector-product entry points of the landscape
instruments.

``run_threads`` shares the networks of a stack out to worker threads (the
generated kernels are serial and release the GIL); ``loss_and_grad`` is the
fast twin of :func:`relunet.kernels.loss_and_grad` (same contract, same
numbers to rounding: its sums over points run in the vector kernel's order),
which that function calls for every width the generator handles.
"""
from __future__ import annotations

import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from .build import kernel_module
from .codegen import CM, block_points, pack_points
from .simd import vector_bits

__all__ = ["bound_loss_and_grad", "hvp", "kernel_and_data", "loss", "loss_and_grad",
           "run_threads", "thread_pool"]


def run_threads(kernel, args, M: int, threads: int) -> None:
    """Call ``kernel(*args, m0, m1)`` over batches of networks from ``threads``
    threads: the caller and ``threads - 1`` threads of a pool kept for the
    process (starting threads on every call cost ~0.1 ms, which the
    instruments, with thousands of small calls, paid thousands of times). The
    kernels are serial and release the GIL; every network is computed by
    exactly the same code whichever thread takes it, so the result does not
    depend on the number of threads or the batching."""
    if threads <= 1 or M == 1:
        kernel(*args, 0, M)
        return
    batch = max(1, min(16, M // (4 * threads)))      # small batches: balance
    nbatch = -(-M // batch)
    counter = itertools.count()                      # next() is atomic in CPython

    def worker():
        while True:
            i = next(counter)
            if i >= nbatch:
                return
            kernel(*args, i * batch, min(M, (i + 1) * batch))

    helpers = [thread_pool(threads - 1).submit(worker) for _ in range(min(threads, nbatch) - 1)]
    try:
        worker()
    finally:
        for f in helpers:
            f.result()


_POOL = [None, 0, 0]     # the process's helper pool, its size, the pid that made it


def thread_pool(n: int) -> ThreadPoolExecutor:
    """A pool of at least n threads, made once per process (a forked or spawned
    child makes its own: threads do not survive a fork). The kernels' callers share
    it: the energy kernels here, and NEB's and the string method's band arithmetic
    between energy calls."""
    pool, size, pid = _POOL
    if pool is None or size < n or pid != os.getpid():
        pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="relunet-kernel")
        _POOL[:] = [pool, n, os.getpid()]
    return pool


_PACKED = {}       # (bytes of X and T, dtype, bits) -> packed points (a few kept)


def _packed(X, T, bits):
    key = (X.tobytes(), T.tobytes(), X.shape, T.shape, X.dtype.name, bits)
    hit = _PACKED.get(key)
    if hit is None:
        hit = pack_points(X, T, CM, block_points(X.dtype, bits))
        if len(_PACKED) >= 8:
            _PACKED.clear()
        _PACKED[key] = hit
    return hit


def loss(W, K: int, N: int, X, T, bits=None, threads=None):
    """MSE of every network of the stack (the contract of :func:`loss_and_grad`;
    bit for bit its loss)."""
    return _call(W, K, N, X, T, bits, threads, grad=False)[0]


def loss_and_grad(W, K: int, N: int, X, T, bits=None, threads=None):
    """MSE and gradient of every network of the C-contiguous stack ``W``
    (M, P) on points X (n_in, S), targets T (n_out, S) of W's dtype (as
    ``kernels.check_data`` returns them), by the generated kernel of width N.
    Rows are independent: a network's result does not depend on the others
    in the stack or on the thread count. Returns (loss (M,), grad (M, P))."""
    return _call(W, K, N, X, T, bits, threads, grad=True)


def hvp(W, V, K: int, N: int, X, T, bits=None, threads=None):
    """Hessian-vector products H(W[m]) V[m] of the MSE, for every row of the
    C-contiguous float64 stacks W and V (M, P), by the generated R-operator pass
    (``hvp_range``: the contract of :func:`relunet.hessian.hvp`, the same
    numbers to rounding). Rows are independent, as in :func:`loss_and_grad`."""
    mod, data_args = _module_and_data(W.dtype, K, N, X, T, bits)
    HV = np.empty(W.shape, dtype=W.dtype)
    if len(W):
        threads = (numba.get_num_threads() if len(W) >= 16 else 1) if threads is None \
            else threads                                # an HVP row is ~3 gradients' work
        run_threads(mod.hvp_range, (W, V) + data_args + (HV,), len(W), threads)
    return HV


def _module_and_data(dtype, K, N, X, T, bits):
    """The generated module for these sizes, width and the weights' dtype, and the
    arguments every kernel of it takes after the weights: (data, K, nchunks, clen,
    dy_scale, inv_count)."""
    bits = vector_bits(bits)
    n_in, S = X.shape
    n_out = T.shape[0]
    mod = kernel_module(N, n_in, n_out, np.dtype(dtype), bits)
    data, nchunks, clen = _packed(X, T, bits)
    cast = np.dtype(dtype).type
    return mod, (data, K, nchunks, clen, cast(2.0 / (S * n_out)), cast(1.0 / (S * n_out)))


def kernel_and_data(K: int, N: int, X, T, bits=None):
    """The generated module for these sizes and X's dtype, and the arguments its kernels
    take after the weights (see :func:`_module_and_data`): for callers that run
    ``module.loss_grad_range`` inside compiled loops of their own, one network at a
    time (:func:`relunet.bfgs.bfgs_networks`), and for :func:`bound_loss_and_grad`."""
    X, T = np.ascontiguousarray(X), np.ascontiguousarray(T, dtype=X.dtype)
    return _module_and_data(X.dtype, K, N, X, T, bits)


def bound_loss_and_grad(K: int, N: int, X, T, bits=None):
    """:func:`loss_and_grad` with its kernel module and packed points looked up once:
    a callable W -> (loss, grad) for C-contiguous stacks of X's dtype, the same
    numbers bit for bit. For callers that make thousands of small calls on one data
    set (the line searches of a descent: there the lookup, ~30 us with its checks,
    was a third of a call)."""
    mod, data_args = kernel_and_data(K, N, X, T, bits)

    def efun(W, threads=None):
        return _run(mod, data_args, W, threads, True)
    return efun


def _call(W, K, N, X, T, bits, threads, grad):
    mod, data_args = _module_and_data(W.dtype, K, N, X, T, bits)
    return _run(mod, data_args, W, threads, grad)


def _run(mod, data_args, W, threads, grad):
    M, P = W.shape
    E = np.empty(M, dtype=W.dtype)
    G = np.empty((M, P) if grad else (0, 0), dtype=W.dtype)
    if M == 0:
        return E, G
    if threads is None:
        # one thread below 64 networks: the threshold dates from when every call started
        # its threads (~0.2 ms); with the shared pool it has not been re-measured
        threads = numba.get_num_threads() if M >= 64 else 1
    args = (W,) + data_args + (E,)
    if grad:
        run_threads(mod.loss_grad_range, args + (G,), M, threads)
    else:
        run_threads(mod.loss_range, args, M, threads)
    return E, G
