"""The training fast path: one fused numba kernel per layer width, generated as source.

``train.train_stack`` runs every step of forward pass, backward pass and
optimizer update for one network inside ONE numba call, with the network's
weights, state and activations in the core's caches. For N <= 16 that call
is a kernel generated for the sizes (N, n_in, n_out, dtype) and the vector
width: the unit loops are unrolled so a layer's outputs or a tile of gradient
sums stay in registers, and every value is an explicit vector of consecutive
training points, 8 x float64 / 16 x float32 (512 bits) where the CPU has
AVX-512, else 4 x float64 / 8 x float32 (256 bits, AVX2); ``vector_bits``
says which, and ``$RELUNET_VECTOR_BITS`` or ``train_stack(vector_bits=...)``
overrides it. The two widths sum over points in different orders, so their
results differ in the last bits; each is deterministic. Everything here is an optimisation of the
plain code elsewhere in the package, which is what to read first; the tests
hold the two together.

Each phase of a step: its equation (a K x N ReLU MLP with linear output, mean
squared error over S points; ``kernels.py`` derives them), its NumPy
reference, its plain numba kernel, and the emitter that writes it here::

    forward   h_0 = x,  h_l = relu(W_l h_{l-1} + b_l) (l = 1..K),  y = W_out h_K + b_out
              NumPy kernels.forward_ref | numba kernels._forward_one
              fast  codegen._emit_forward, codegen._emit_output
    loss      r = y - t,  L = sum r^2 / (S n_out),  dy = dL/dy = 2 r / (S n_out)
              NumPy kernels.loss_ref | numba kernels._loss_one | fast codegen._emit_output
    grad      dL/dW_l = dz_l h_{l-1}^T,  dL/db_l = sum_s dz_l   (dz_{K+1} = dy)
              NumPy kernels.loss_and_grad_ref | numba kernels._backward_one
              fast  codegen._emit_grad
    delta     dz_l = [h_l > 0] (W_{l+1}^T dz_{l+1})   (dL/dz_l, z_l the pre-activation)
              NumPy kernels.loss_and_grad_ref | numba kernels._backward_one
              fast  codegen._emit_delta
    update    momentum: v <- mu v - lr g, w <- w + v;  Adadelta: see optim.py
              NumPy optim.momentum_step, optim.adadelta_step | numba optim.apply_update
              fast  the same optim.apply_update, called by the generated kernel
    steps     forward, backward, update, ``steps`` times per network
              NumPy train.train_stack_ref | numba train._train_range_generic
              fast  the generated train_range (codegen._HEAD, _TAIL)
    instruments  loss and gradient of a stack, no update (quench, bands, ...)
              NumPy kernels.loss_and_grad_ref | numba kernels.loss_and_grad(kernel="plain")
              fast  the generated loss_grad_range / loss_range (the same
                    emitted pass, so the loss is bit for bit the training
                    step's), called through ``stack.loss_and_grad``: the
                    default of ``kernels.loss_and_grad`` for N <= 16

Files:

* ``simd.py``: the vector type and its intrinsics (``vload``, ``vfma``, ...), each a
  few LLVM instructions;
* ``codegen.py``: the source generator (one emitter per phase) and the chunked
  point layout the generated code reads (``pack_points``);
* ``build.py``: writes, imports and memoises the generated modules (``kernel_module``);
* ``stack.py``: calls them over a stack of networks from worker threads
  (``run_threads``) and is the instruments' entry (``loss_and_grad``, ``loss``);
* ``exhibit_5x5_float64.py``: the generated module for N = 5, float64 (the
  paper's network), 256-bit vectors (the AVX2 width; the 512-bit module is
  the same text with L = 8 and the 512-bit ``vload`` / ``vsplat``), committed
  for reading; a test regenerates it and compares it byte for byte.
  ``python -m relunet.fast N [--dtype float32] [--bits 512]`` prints the
  module for other sizes and widths.
"""
from __future__ import annotations

from .build import kernel_module
from .codegen import CM, NMAX, block_points, generate, pack_points
from .simd import BITS, native_bits, vector_bits

__all__ = ["BITS", "CM", "NMAX", "block_points", "generate", "kernel_module", "native_bits",
           "pack_points", "vector_bits"]
