"""Source generator of the fused training kernel (one module per N, n_in, n_out, dtype, width).

Why generate source
-------------------
A loop whose trip count comes from an array shape is not a constant to numba,
so a generic kernel cannot unroll the N x N products of a layer or keep a
layer's outputs in registers. ``generate`` writes the kernel out as Python
source with every unit loop unrolled (``z0 = vfma(w_ji, h3_0, z0)`` ...);
``build.kernel_module`` saves it and imports it, so numba compiles it with
``cache=True`` like any hand-written module. The number of layers K stays a
run-time argument: the K - 1 hidden layers share one loop body for the forward
pass, one for the weight gradient and one for the backpropagated delta.
Everything is written out inside ONE function (``train_range``): numba's own
inlining, nested calls and ``prange`` each made the compile several times
longer without making the code faster; the networks are shared out to
threads by ``train.py`` instead (the kernel releases the GIL). One generated
module is committed for reading: ``exhibit_5x5_float64.py``.

One training step of one network, for each chunk of points (the phases the
generated code writes out, each under a comment with its equation)::

    forward   h_l = relu(W_l h_{l-1} + b_l), stored (K*N rows);  y = W_out h_K + b_out
              r = (y - t) valid ;  loss += r^2 ;  dy = (2 / (S n_out)) r
    backward  per layer, top down:
              grad   G_l += dz_l h_{l-1}^T, g_b_l += sum_s dz_l      (register tiles)
              delta  dz_{l-1} = [h_{l-1} > 0] (W_l^T dz_l)
    update    after the last chunk: w <- rule(w, g, state)  (optim.apply_update)

Vector width: ``bits`` = 256 (L = 4 float64 / 8 float32 lanes, AVX2) or 512
(L = 8 / 16, AVX-512), chosen by ``simd.vector_bits`` from the CPU. The code
for both widths is the same text with another L (and ``vload512`` /
``vsplat512`` imported as ``vload`` / ``vsplat``), so the two differ only in
how many per-lane partial sums a sum over points has: their results differ in
the last bits, and each is deterministic.

Register blocking (tuned for the 16 ymm registers of AVX2; the 512-bit kernels
use the same blocking in zmm registers). Each choice was the fastest of the
variants tried on a 5x5 layer in isolation:

* forward: blocks of UF = 2 vectors (2L points: 8 float64 at 256 bits); the N
  inputs of the block stay in registers while the outputs are formed one unit
  at a time, so each weight (a pre-broadcast vector in ``buf``) is loaded once
  per block and feeds 2 FMAs (better than 1 vector per block);
* delta: blocks of UD = 2 vectors; dz of one unit at a time into up to 5
  output accumulators x 2 vectors, so consecutive FMAs are independent
  (better than one output at a time);
* grad: a tile of up to 12 accumulators (for N = 5: 5 units x 2 columns, the
  bias being a column of ones), each a vector of per-lane partial sums carried
  through the chunk: the 30 sums of a layer cost 3 passes over the points and
  no horizontal reduction until the end of the step (better than 2 x 6 tiles);
* the end of a step reduces the P gradient vectors L at a time
  (``simd.vhsum_block``: a transposed pairwise tree of shuffles and adds, the
  same order as one vector's ``vhsum``, so the same bits) instead of one
  horizontal sum per parameter: with 16 float32 lanes the per-parameter sums
  had cost about a quarter of a step (float32 training 1.09M -> 1.40M
  model-steps/s on 2 threads, float64 1 thread +7%; bits unchanged, checked).

Every sum has the order written here (the kernel and the optimizer update,
``optim.apply_update``, are compiled without fast-math flags), so results do
not depend on the thread count or on which other networks share the stack.
Changing the emitted arithmetic or its order changes trained weights in their
last bits; renaming emitted variables or comments does not.

Point layout (structure of arrays, in chunks)
---------------------------------------------
The S training points are cut into ``nchunks`` chunks of ``clen`` points
(``clen`` a multiple of the block width, the last points padded). Chunk c of
the data array holds ``n_in`` input rows, ``n_out`` target rows and one row of
weights ``valid`` (1 for real points, 0 for padding), each row ``CM`` values
long (``CM`` >= clen is a compile-time constant of the kernel, so every row
offset in the generated code is a constant)::

    data[(c * (n_in + n_out + 1) + row) * CM + s]      s < clen

Padding points copy the last real input, so they never produce a value the
real points would not; their residual is multiplied by 0.

Scratch buffer ``buf`` of one network (element offsets, L = lanes)::

    0         [P * L]     weights, each broadcast to a vector (w_k of this step)
    G_ACC     [P * L]     gradient accumulators, per lane
    LOSS_ACC  [L]         loss accumulator, per lane
    H         [K*N*CM]    h_1 .. h_K of the current chunk, row (l-1)*N + j
    DY        [n_out*CM]  dL/dy;  DZ_A, DZ_B [N*CM]: dL/dz of two layers

Parameter offsets are net.py's layout times L: ``w_at`` = ``net.block_offset``
of the layer times L, weight (j, i) of a layer with fan-in n_i and fan-out n_o
at ``w_at + (j*n_i + i)*L``, bias j at ``w_at + (n_o*n_i + j)*L``.

Hessian-vector products (``hvp_range``, :func:`relunet.fast.stack.hvp`):
the same phases with Pearlmutter's R-operator applied to each (the equations
of :mod:`relunet.hessian`): after each forward phase its tangent R{h}, after
the output its tangent R{dL/dy}, and top down the tangent of the weight
gradient (which is H v) and of the deltas. The scratch buffer adds the
direction v (broadcast like the weights, at ``VW``), the R{grad} accumulators
(``GD_ACC``), the rows R{h_1..K} (``HD``), R{dy} (``DYD``) and R{dz}
(``DZD_A``, ``DZD_B``). One direction per row of the stack: a full Hessian is
P rows per network; each row recomputes its network's forward pass (simpler
than sharing it, and 2.5-3x faster than the plain R-operator loops all the same:
``benchmarks/bench_hessian.py``).

One subject, the emitted kernel, one emitter per phase, a little past 300
lines because each phase carries its equation.
"""
from __future__ import annotations

import numpy as np

from ..net import block_offset

__all__ = ["CM", "NMAX", "GEN_VERSION", "block_points", "generate", "pack_points"]

GEN_VERSION = 6
CM = 352        # row stride: 341 points in one chunk (a multiple of every block width)
UF = 2          # vectors per forward block
UD = 2          # vectors per delta block
GRAD_ACC_512 = 25   # gradient accumulators per tile at 512 bits (32 zmm registers)
NMAX = 16       # widest layer the generator unrolls (code grows like N^2)


def block_points(dtype, bits: int = 256) -> int:
    """Points per block of the kernel of this dtype and vector width: chunk
    lengths are multiples of this."""
    return (bits // 8 // np.dtype(dtype).itemsize) * max(UF, UD)


def pack_points(X, T, CM: int, block: int):
    """Lay out the training set in chunks for the generated kernels.

    Parameters
    ----------
    X : (n_in, S), T : (n_out, S) arrays of the working dtype (from
        ``kernels.check_data``).
    CM : row stride of a chunk (compile-time constant of the kernel).
    block : points per block of the kernel; ``clen`` is a multiple of it.

    Returns
    -------
    data : (nchunks * (n_in + n_out + 1) * CM,) flat array, layout in the
        module docstring;  nchunks, clen : ints.
    """
    n_in, S = X.shape
    n_out = T.shape[0]
    nchunks = -(-S // (CM // block * block))
    clen = -(-(-(-S // nchunks)) // block) * block      # ceil(S / nchunks) up to a block
    if clen > CM:
        raise AssertionError("chunk length exceeds the row stride")
    total = nchunks * clen
    rows = np.empty((n_in + n_out + 1, total), dtype=X.dtype)
    rows[:n_in, :S] = X
    rows[:n_in, S:] = X[:, -1:]                         # padding repeats the last point
    rows[n_in:n_in + n_out, :S] = T
    rows[n_in:n_in + n_out, S:] = T[:, -1:]
    rows[-1, :S] = 1
    rows[-1, S:] = 0
    size = nchunks * (n_in + n_out + 1) * CM
    raw = np.zeros(size + 64 // X.itemsize, dtype=X.dtype)
    start = (-raw.ctypes.data % 64) // X.itemsize         # 64-byte aligned rows:
    data = raw[start:start + size]                         # no cache-line splits
    data.reshape(nchunks, n_in + n_out + 1, CM)[:, :, :clen] = \
        rows.reshape(n_in + n_out + 1, nchunks, clen).transpose(1, 0, 2)
    return data, nchunks, clen


class _Src:
    """Lines of source; ``e(rel, text)`` writes at ``base + rel`` indentation."""

    def __init__(self):
        self.lines = []
        self.base = 0

    def __call__(self, rel: int, text: str = ""):
        self.lines.append("    " * (self.base + rel) + text if text else "")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def _groups(n: int, size: int):
    return [list(range(a, min(n, a + size))) for a in range(0, n, size)]


# =============================================================================
# Emitters of the phases of one chunk. Names the emitted code uses:
#   buf (scratch), data (points), clen (points in the chunk), s (first point
#   of a block), and row offsets set just before: h_in / h_out (activation
#   rows), w_at (the layer's first parameter in buf), g_at (its gradient
#   accumulators), dz_at / dz_below (dL/dz rows of this layer and the one below).
# Generator names: n_i / n_o fan-in / fan-out of the layer, i an input unit,
# j an output unit, u a vector of a block.
# =============================================================================
def _emit_forward(e, L, n_i, n_o, src):
    """h_out[j] = relu(b[j] + sum_i W[j, i] h_in[i]), UF vectors of points per block."""
    e(0, "# forward: h_out[j] = relu(b[j] + sum_i W[j, i] h_in[i])")
    e(0, f"for s in range(0, clen, {L * UF}):")
    if n_i * UF + UF + 1 <= 15:         # the block's inputs all stay in registers
        for i in range(n_i):
            for u in range(UF):
                e(1, f"h{i}_{u} = vload({src}, h_in + {i * CM + u * L} + s)")
        for j in range(n_o):
            e(1, f"b_j = vload(buf, w_at + {(n_o * n_i + j) * L})")
            for u in range(UF):
                e(1, f"z{u} = b_j")
            for i in range(n_i):
                e(1, f"w_ji = vload(buf, w_at + {(j * n_i + i) * L})")
                for u in range(UF):
                    e(1, f"z{u} = vfma(w_ji, h{i}_{u}, z{u})")
            for u in range(UF):
                e(1, f"vstore(buf, h_out + {j * CM + u * L} + s, vrelu(z{u}))")
    else:                               # wide layers: 5 outputs at a time
        for units in _groups(n_o, 5):
            for j in units:
                e(1, f"b_j = vload(buf, w_at + {(n_o * n_i + j) * L})")
                for u in range(UF):
                    e(1, f"z{j}_{u} = b_j")
            for i in range(n_i):
                for u in range(UF):
                    e(1, f"h_{u} = vload({src}, h_in + {i * CM + u * L} + s)")
                for j in units:
                    e(1, f"w_ji = vload(buf, w_at + {(j * n_i + i) * L})")
                    for u in range(UF):
                        e(1, f"z{j}_{u} = vfma(w_ji, h_{u}, z{j}_{u})")
            for j in units:
                for u in range(UF):
                    e(1, f"vstore(buf, h_out + {j * CM + u * L} + s, vrelu(z{j}_{u}))")


def _emit_output(e, L, N, n_in, n_out):
    """y = W_out h_K + b_out; r = (y - t) valid; loss lanes += r^2; DY = dy_scale r."""
    e(0, "# output: y = W_out h_K + b_out ;  r = (y - t) valid ;  loss += r^2")
    e(0, "#         dy = dL/dy = 2 r / (S n_out)")
    e(0, "loss_lanes = vload(buf, LOSS_ACC)")
    e(0, f"for s in range(0, clen, {L}):")
    for i in range(N):
        e(1, f"h{i} = vload(buf, h_in + {i * CM} + s)")
    e(1, f"valid = vload(data, chunk + {(n_in + n_out) * CM} + s)")
    for o in range(n_out):
        e(1, f"y = vload(buf, w_at + {(n_out * N + o) * L})")
        for i in range(N):
            e(1, f"y = vfma(vload(buf, w_at + {(o * N + i) * L}), h{i}, y)")
        e(1, f"r = vmul(vsub(y, vload(data, chunk + {(n_in + o) * CM} + s)), valid)")
        e(1, "loss_lanes = vfma(r, r, loss_lanes)")
        e(1, f"vstore(buf, DY + {o * CM} + s, vmul(r, v_dy_scale))")
    e(0, "vstore(buf, LOSS_ACC, loss_lanes)")


def _emit_grad(e, L, n_i, n_o, src, acc=12):
    """G[j, i] += sum_s dz[j, s] h_in[i, s] over the chunk (column i = n_i: the
    bias, h_in = 1).

    Register tiles of up to 6 units x up to ``acc // units`` columns (<= acc
    accumulators, each a vector of per-lane partial sums kept in G_ACC between
    chunks; acc = 12 of the 16 ymm registers, GRAD_ACC_512 of the 32 zmm). Which
    pass computes a sum does not change its order, so the tiling does not
    change results."""
    tile_units = min(n_o, 6)
    tile_cols = min(n_i + 1, max(1, acc // tile_units))

    def gidx(j, i):
        return (j * n_i + i) if i < n_i else (n_o * n_i + j)
    e(0, "# grad: G[j, i] += sum_s dz[j, s] h_in[i, s] ;  g_b[j] += sum_s dz[j, s]")
    for units in _groups(n_o, tile_units):
        for cols in _groups(n_i + 1, tile_cols):
            for j in units:
                for i in cols:
                    e(0, f"g{j}_{i} = vload(buf, g_at + {gidx(j, i) * L})")
            e(0, f"for s in range(0, clen, {L}):")
            for j in units:
                e(1, f"dz{j} = vload(buf, dz_at + {j * CM} + s)")
            for i in cols:
                if i < n_i:
                    e(1, f"h = vload({src}, h_in + {i * CM} + s)")
                    for j in units:
                        e(1, f"g{j}_{i} = vfma(dz{j}, h, g{j}_{i})")
                else:
                    for j in units:
                        e(1, f"g{j}_{i} = vadd(g{j}_{i}, dz{j})")
            for j in units:
                for i in cols:
                    e(0, f"vstore(buf, g_at + {gidx(j, i) * L}, g{j}_{i})")


def _emit_delta(e, L, n_i, n_o):
    """dz_below[i] = [h_in[i] > 0] sum_j W[j, i] dz[j]  (back through W, then ReLU')."""
    e(0, "# delta: dz_below[i] = [h_in[i] > 0] sum_j W[j, i] dz[j]")
    e(0, f"for s in range(0, clen, {L * UD}):")
    for inputs in _groups(n_i, 5):
        for j in range(n_o):
            for u in range(UD):
                e(1, f"dz_{u} = vload(buf, dz_at + {j * CM + u * L} + s)")
            for i in inputs:
                e(1, f"w_ji = vload(buf, w_at + {(j * n_i + i) * L})")
                for u in range(UD):
                    first = f"vmul(w_ji, dz_{u})"
                    e(1, f"dh{i}_{u} = " + (first if j == 0 else f"vfma(w_ji, dz_{u}, dh{i}_{u})"))
        for i in inputs:
            for u in range(UD):
                mask = f"vload(buf, h_in + {i * CM + u * L} + s)"
                e(1, f"vstore(buf, dz_below + {i * CM + u * L} + s, vmask(dh{i}_{u}, {mask}))")


# =============================================================================
# The R-operator (Hessian-vector products): tangents of the same phases
# (Pearlmutter 1994; the equations are relunet.hessian's). Extra names: v_at =
# VW + w_at (the direction's block of the layer, laid out like the weights),
# hd_in / hd_out (tangent activation rows R{h}), dzd_at / dzd_below (R{dz}).
# =============================================================================
def _emit_forward_tangent(e, L, n_i, n_o, src, first):
    """hd_out[j] = [h_out[j] > 0] (v_b[j] + sum_i V[j, i] h_in[i] + W[j, i] hd_in[i]);
    for layer 1 (``first``) the inputs carry no tangent."""
    e(0, "# R-forward: hd_out[j] = [h_out[j] > 0] zd[j],")
    e(0, "#            zd[j] = v_b[j] + sum_i V[j,i] h_in[i] + W[j,i] hd_in[i]")
    e(0, f"for s in range(0, clen, {L}):")
    for i in range(n_i):
        e(1, f"h{i} = vload({src}, h_in + {i * CM} + s)")
        if not first:
            e(1, f"hd{i} = vload(buf, hd_in + {i * CM} + s)")
    for j in range(n_o):
        e(1, f"zd = vload(buf, VW + w_at + {(n_o * n_i + j) * L})")
        for i in range(n_i):
            e(1, f"zd = vfma(vload(buf, VW + w_at + {(j * n_i + i) * L}), h{i}, zd)")
            if not first:
                e(1, f"zd = vfma(vload(buf, w_at + {(j * n_i + i) * L}), hd{i}, zd)")
        e(1, f"vstore(buf, hd_out + {j * CM} + s, vmask(zd, vload(buf, h_out + {j * CM} + s)))")


def _emit_output_tangent(e, L, N, n_in, n_out):
    """yd = V_out h_K + W_out hd_K + v_b_out ;  dyd = R{dL/dy} = dy_scale valid yd."""
    e(0, "# R-output: yd = v_b_out + sum_i V_out[o,i] h_K[i] + W_out[o,i] hd_K[i]")
    e(0, "#           dyd = R{dL/dy} = dy_scale valid yd")
    e(0, f"for s in range(0, clen, {L}):")
    for i in range(N):
        e(1, f"h{i} = vload(buf, h_in + {i * CM} + s)")
        e(1, f"hd{i} = vload(buf, hd_in + {i * CM} + s)")
    e(1, f"valid = vload(data, chunk + {(n_in + n_out) * CM} + s)")
    for o in range(n_out):
        e(1, f"yd = vload(buf, VW + w_at + {(n_out * N + o) * L})")
        for i in range(N):
            e(1, f"yd = vfma(vload(buf, VW + w_at + {(o * N + i) * L}), h{i}, yd)")
            e(1, f"yd = vfma(vload(buf, w_at + {(o * N + i) * L}), hd{i}, yd)")
        e(1, f"vstore(buf, DYD + {o * CM} + s, vmul(vmul(yd, valid), v_dy_scale))")


def _emit_grad_tangent(e, L, n_i, n_o, src, first):
    """Hv[j, i] += sum_s dzd[j, s] h_in[i, s] + dz[j, s] hd_in[i, s];  Hv_b[j] += sum_s dzd[j, s]
    (per-lane accumulators, one output unit at a time)."""
    def gidx(j, i):
        return (j * n_i + i) if i < n_i else (n_o * n_i + j)
    e(0, "# R-grad: Hv[j,i] += sum_s dzd[j] h_in[i] + dz[j] hd_in[i]; Hv_b[j] += sum_s dzd[j]")
    for j in range(n_o):
        for i in range(n_i + 1):
            e(0, f"g{i} = vload(buf, g_at + {gidx(j, i) * L})")
        e(0, f"for s in range(0, clen, {L}):")
        e(1, f"dzd = vload(buf, dzd_at + {j * CM} + s)")
        if not first:
            e(1, f"dz = vload(buf, dz_at + {j * CM} + s)")
        for i in range(n_i):
            e(1, f"g{i} = vfma(dzd, vload({src}, h_in + {i * CM} + s), g{i})")
            if not first:
                e(1, f"g{i} = vfma(dz, vload(buf, hd_in + {i * CM} + s), g{i})")
        e(1, f"g{n_i} = vadd(g{n_i}, dzd)")
        for i in range(n_i + 1):
            e(0, f"vstore(buf, g_at + {gidx(j, i) * L}, g{i})")


def _emit_delta_tangent(e, L, n_i, n_o):
    """dzd_below[i] = [h_in[i] > 0] sum_j (W[j, i] dzd[j] + V[j, i] dz[j])."""
    e(0, "# R-delta: dzd_below[i] = [h_in[i] > 0] sum_j (W[j, i] dzd[j] + V[j, i] dz[j])")
    e(0, f"for s in range(0, clen, {L}):")
    for j in range(n_o):
        e(1, f"dz{j} = vload(buf, dz_at + {j * CM} + s)")
        e(1, f"dzd{j} = vload(buf, dzd_at + {j * CM} + s)")
    for i in range(n_i):
        for j in range(n_o):
            w = f"vload(buf, w_at + {(j * n_i + i) * L})"
            v = f"vload(buf, VW + w_at + {(j * n_i + i) * L})"
            e(1, "a = " + (f"vmul({w}, dzd{j})" if j == 0 else f"vfma({w}, dzd{j}, a)"))
            e(1, f"a = vfma({v}, dz{j}, a)")
        e(1, f"vstore(buf, dzd_below + {i * CM} + s, vmask(a, vload(buf, h_in + {i * CM} + s)))")


# =============================================================================
# The kernel: one function, the phases written out inside the step loop
# =============================================================================
_SCALARS = """    P = W.shape[1]
    zero = dy_scale - dy_scale
    v_zero = vsplat(zero)
    v_dy_scale = vsplat(dy_scale)
"""


def _aligned_buf(size: str) -> str:
    """The scratch buffer ``buf`` of ``size`` elements (an expression), on a 64-byte boundary."""
    return (f"    buf_raw = np.empty({size} + 64 // W.itemsize, dtype=W.dtype)\n"
            f"    first = (-buf_raw.ctypes.data % 64) // W.itemsize\n"
            f"    buf = buf_raw[first:first + {size}]\n")


_SETUP = _SCALARS + """    G_ACC = P * L                   # gradient accumulators
    LOSS_ACC = 2 * P * L            # loss accumulator
    H = LOSS_ACC + L                # activations h_1 .. h_K
    DY = H + K * (N * CM)
    DZ_A = DY + N_OUT * CM
    DZ_B = DZ_A + N * CM
    H_K = H + (K - 1) * (N * CM)
    W_OUT = block_offset(K + 1, N, N_IN) * L
    # buf starts on a 64-byte boundary (numba aligns to 32): every vector of it
    # then sits in one cache line
""" + _aligned_buf("DZ_B + N * CM")

_HEAD = """
@njit(cache=True, nogil=True, error_model="numpy")
def train_range(W, state1, state2, data, K, nchunks, clen, steps, record_every, opt,
                lr, hyper1, hyper2, hyper3, dy_scale, inv_count, hist, status, done, final, m0, m1):
    \"\"\"Train networks m0 .. m1-1 of the stack in place, one after the other.

    Step k computes the loss and gradient at w_k (all chunks), records the
    loss, then updates w. A last pass k == steps only computes the final loss.
    dy_scale = 2 / (S n_out), inv_count = 1 / (S n_out); hyper1..3: the
    optimizer's scalars (``optim.apply_update``'s h1..h3).
    \"\"\"
""" + _SETUP + """    g = np.empty(-(-P // L) * L, dtype=W.dtype)     # whole vectors (vhsum_block)
    # private copies of the network's weights and state: the rows of W, state1,
    # state2 of neighbouring networks share cache lines, and another thread may own them
    w = np.empty(P, dtype=W.dtype)
    state1_m = np.empty(state1.shape[1], dtype=W.dtype)
    state2_m = np.empty(state2.shape[1], dtype=W.dtype)
    for m in range(m0, m1):
        w[:] = W[m]
        state1_m[:] = state1[m]
        state2_m[:] = state2[m]
        status_m = 0
        done_m = steps
        loss = zero
        for k in range(steps + 1):
            for p in range(P):
                vstore(buf, p * L, vsplat(w[p]))
                vstore(buf, G_ACC + p * L, v_zero)
            vstore(buf, LOSS_ACC, v_zero)
            for c in range(nchunks):
                chunk = c * ((N_IN + N_OUT + 1) * CM)
"""

_TAIL = """            # loss = (sum of the loss lanes) / (S n_out);  g[p] = sum of its lanes
            loss = vhsum(vload(buf, LOSS_ACC)) * inv_count
            if k == steps:
                break
            if not np.isfinite(loss):
                status_m = 1
                done_m = k
                break
            if k % record_every == 0:
                hist[m, k // record_every] = loss
            for p in range(0, P, L):        # L sums at a time (same order as vhsum)
                vstore(g, p, vhsum_block(buf, G_ACC + p * L))
            # update: momentum or Adadelta (optim.py), w and state in place
            if not apply_update(w, g, state1_m, state2_m, opt, lr, hyper1, hyper2, hyper3):
                for p in range(P):          # back to this step's (finite) weights
                    w[p] = buf[p * L]
                status_m = 1
                done_m = k
                break
        W[m] = w
        state1[m] = state1_m
        state2[m] = state2_m
        status[m] = status_m
        done[m] = done_m
        final[m] = loss
"""


_LG_HEAD = """

@njit(cache=True, nogil=True, error_model="numpy")
def loss_grad_range(W, data, K, nchunks, clen, dy_scale, inv_count, E, G, m0, m1):
    \"\"\"Loss E[m] and gradient G[m] at the weights W[m] of networks m0 .. m1-1:
    the forward and backward pass of one ``train_range`` step (the same
    arithmetic in the same order, so E[m] is bit for bit the loss that step
    records), without the update. Used by the landscape instruments (quench,
    bands, basin), whose energy is this function of a stack of points.
    \"\"\"
""" + _SETUP + """    g = np.empty(-(-P // L) * L, dtype=W.dtype)
    for m in range(m0, m1):
        for p in range(P):
            vstore(buf, p * L, vsplat(W[m, p]))
            vstore(buf, G_ACC + p * L, v_zero)
        vstore(buf, LOSS_ACC, v_zero)
        for c in range(nchunks):
            chunk = c * ((N_IN + N_OUT + 1) * CM)
"""

_LG_TAIL = """        E[m] = vhsum(vload(buf, LOSS_ACC)) * inv_count
        for p in range(0, P, L):            # L sums at a time (same order as vhsum)
            vstore(g, p, vhsum_block(buf, G_ACC + p * L))
        for p in range(P):
            G[m, p] = g[p]
"""

_SETUP_NO_GRAD = _SETUP.replace(           # the gradient's offsets unused: say so to the linter
    "P * L                   # gradient accumulators",
    "P * L                   # noqa: F841 (no gradient here)").replace(
    "block_offset(K + 1, N, N_IN) * L", "block_offset(K + 1, N, N_IN) * L   # noqa: F841")

_L_HEAD = """

@njit(cache=True, nogil=True, error_model="numpy")
def loss_range(W, data, K, nchunks, clen, dy_scale, inv_count, E, m0, m1):
    \"\"\"Loss E[m] at the weights W[m] of networks m0 .. m1-1: the forward pass
    of ``loss_grad_range`` alone (bit for bit its E).\"\"\"
""" + _SETUP_NO_GRAD + """    for m in range(m0, m1):
        for p in range(P):
            vstore(buf, p * L, vsplat(W[m, p]))
        vstore(buf, LOSS_ACC, v_zero)
        for c in range(nchunks):
            chunk = c * ((N_IN + N_OUT + 1) * CM)
"""

_L_TAIL = """        E[m] = vhsum(vload(buf, LOSS_ACC)) * inv_count
"""


def _emit_pass(e, base, N, n_in, n_out, L, acc, backward=True):
    """The forward and (if ``backward``) backward pass over one chunk (the body
    of the chunk loop), written at indentation ``base``: shared by
    ``train_range``, ``loss_grad_range`` and ``loss_range``, so all three
    compute the same numbers."""
    offset = block_offset.py_func                   # net.py's layout (the plain function)
    NCM, LW = N * CM, (offset(3, N, n_in) - offset(2, N, n_in)) * L    # LW: one hidden layer
    e.base = base
    e(0, "# ---- forward pass, layer 1 (from the inputs x): h_1 = relu(W_1 x + b_1)")
    e(0, "h_in = chunk")
    e(0, "h_out = H")
    e(0, "w_at = 0")
    _emit_forward(e, L, n_in, N, "data")
    e(0, f"w_at = {offset(2, N, n_in) * L}")
    e(0, "for layer in range(1, K):")
    e.base = base + 1
    e(0, "# ---- forward pass, hidden layer l = layer + 1: h_l = relu(W_l h_{l-1} + b_l)")
    e(0, f"h_in = H + (layer - 1) * {NCM}")
    e(0, f"h_out = h_in + {NCM}")
    _emit_forward(e, L, N, N, "buf")
    e(0, f"w_at += {LW}")
    e.base = base
    e(0, "# ---- output layer: residuals and loss, then its gradient and dz_K into DZ_A")
    e(0, "h_in = H_K")
    _emit_output(e, L, N, n_in, n_out)
    if not backward:
        return
    e(0, "g_at = G_ACC + W_OUT")
    e(0, "dz_at = DY")
    _emit_grad(e, L, N, n_out, "buf", acc)
    e(0, "dz_below = DZ_A")
    _emit_delta(e, L, N, n_out)
    e(0, "dz_at = DZ_A")
    e(0, "dz_below = DZ_B")
    e(0, "for layer in range(K - 1, 0, -1):")
    e.base = base + 1
    e(0, "# ---- backward, hidden layer l = layer + 1: grad of W_l, b_l; then dz_{l-1}")
    e(0, f"w_at -= {LW}")
    e(0, f"h_in = H + (layer - 1) * {NCM}")
    e(0, "g_at = G_ACC + w_at")
    _emit_grad(e, L, N, N, "buf", acc)
    _emit_delta(e, L, N, N)
    e(0, "dz_at, dz_below = dz_below, dz_at")
    e.base = base
    e(0, "# ---- backward, layer 1: G_1 += dz_1 x^T")
    e(0, "h_in = chunk")
    e(0, "g_at = G_ACC")
    _emit_grad(e, L, n_in, N, "data", acc)


_HVP_SETUP = _SCALARS + """\
    VW = P * L                      # the direction v, broadcast like the weights
    GD_ACC = 2 * P * L              # accumulators of R{grad} = H v, per lane
    LOSS_ACC = 3 * P * L            # the loss the pass also sums (not returned)
    H = LOSS_ACC + L                # h_1 .. h_K
    HD = H + K * (N * CM)           # R{h_1} .. R{h_K}
    DY = HD + K * (N * CM)
    DYD = DY + N_OUT * CM
    DZ_A = DYD + N_OUT * CM
    DZ_B = DZ_A + N * CM
    DZD_A = DZ_B + N * CM
    DZD_B = DZD_A + N * CM
    H_K = H + (K - 1) * (N * CM)
    HD_K = HD + (K - 1) * (N * CM)
    W_OUT = block_offset(K + 1, N, N_IN) * L
""" + _aligned_buf("DZD_B + N * CM")

_HVP_HEAD = """

@njit(cache=True, nogil=True, error_model="numpy")
def hvp_range(W, V, data, K, nchunks, clen, dy_scale, inv_count, HV, m0, m1):
    \"\"\"Hessian-vector products HV[m] = H(W[m]) V[m] of networks m0 .. m1-1: the
    forward and backward pass of ``loss_grad_range`` with the R-operator applied
    to every phase (relunet.hessian's equations), one direction per network.
    \"\"\"
""" + _HVP_SETUP + """    g = np.empty(-(-P // L) * L, dtype=W.dtype)
    for m in range(m0, m1):
        for p in range(P):
            vstore(buf, p * L, vsplat(W[m, p]))
            vstore(buf, VW + p * L, vsplat(V[m, p]))
            vstore(buf, GD_ACC + p * L, v_zero)
        vstore(buf, LOSS_ACC, v_zero)
        for c in range(nchunks):
            chunk = c * ((N_IN + N_OUT + 1) * CM)
"""

_HVP_TAIL = """        for p in range(0, P, L):            # L sums at a time (same order as vhsum)
            vstore(g, p, vhsum_block(buf, GD_ACC + p * L))
        for p in range(P):
            HV[m, p] = g[p]
"""


def _emit_pass_hvp(e, base, N, n_in, n_out, L):
    """The R-operator pass over one chunk: each forward phase followed by its
    tangent, the output and its tangent, then top down the tangent of the weight
    gradient (the HVP) and the deltas with their tangents."""
    offset = block_offset.py_func
    NCM, LW = N * CM, (offset(3, N, n_in) - offset(2, N, n_in)) * L
    e.base = base
    e(0, "# ---- layer 1: h_1 and R{h_1}")
    e(0, "h_in = chunk")
    e(0, "h_out = H")
    e(0, "hd_out = HD")
    e(0, "w_at = 0")
    _emit_forward(e, L, n_in, N, "data")
    _emit_forward_tangent(e, L, n_in, N, "data", True)
    e(0, f"w_at = {offset(2, N, n_in) * L}")
    e(0, "for layer in range(1, K):")
    e.base = base + 1
    e(0, "# ---- hidden layer l = layer + 1: h_l and R{h_l}")
    e(0, f"h_in = H + (layer - 1) * {NCM}")
    e(0, f"h_out = h_in + {NCM}")
    e(0, f"hd_in = HD + (layer - 1) * {NCM}")
    e(0, f"hd_out = hd_in + {NCM}")
    _emit_forward(e, L, N, N, "buf")
    _emit_forward_tangent(e, L, N, N, "buf", False)
    e(0, f"w_at += {LW}")
    e.base = base
    e(0, "# ---- output layer: dy and R{dy}, then R{grad} of W_out, b_out; dz_K, R{dz_K}")
    e(0, "h_in = H_K")
    e(0, "hd_in = HD_K")
    _emit_output(e, L, N, n_in, n_out)
    _emit_output_tangent(e, L, N, n_in, n_out)
    e(0, "g_at = GD_ACC + W_OUT")
    e(0, "dz_at = DY")
    e(0, "dzd_at = DYD")
    _emit_grad_tangent(e, L, N, n_out, "buf", False)
    e(0, "dz_below = DZ_A")
    e(0, "dzd_below = DZD_A")
    _emit_delta(e, L, N, n_out)
    _emit_delta_tangent(e, L, N, n_out)
    e(0, "dz_at = DZ_A")
    e(0, "dz_below = DZ_B")
    e(0, "dzd_at = DZD_A")
    e(0, "dzd_below = DZD_B")
    e(0, "for layer in range(K - 1, 0, -1):")
    e.base = base + 1
    e(0, "# ---- hidden layer l = layer + 1: R{grad} of W_l, b_l; then dz_{l-1}, R{dz_{l-1}}")
    e(0, f"w_at -= {LW}")
    e(0, f"h_in = H + (layer - 1) * {NCM}")
    e(0, f"hd_in = HD + (layer - 1) * {NCM}")
    e(0, "g_at = GD_ACC + w_at")
    _emit_grad_tangent(e, L, N, N, "buf", False)
    _emit_delta(e, L, N, N)
    _emit_delta_tangent(e, L, N, N)
    e(0, "dz_at, dz_below = dz_below, dz_at")
    e(0, "dzd_at, dzd_below = dzd_below, dzd_at")
    e.base = base
    e(0, "# ---- layer 1: R{grad} of W_1, b_1 (the inputs carry no tangent)")
    e(0, "h_in = chunk")
    e(0, "g_at = GD_ACC")
    _emit_grad_tangent(e, L, n_in, N, "data", True)


def generate(N: int, n_in: int, n_out: int, dtype, bits: int = 256) -> str:
    """Source text of the kernel module for width N, n_in inputs, n_out outputs,
    vectors of ``bits`` bits (256 or 512)."""
    dtype = np.dtype(dtype)
    if bits not in (256, 512):
        raise ValueError(f"bits must be 256 or 512, got {bits!r}")
    L = bits // 8 // dtype.itemsize
    acc = 12 if bits == 256 else GRAD_ACC_512
    e = _Src()
    e(0, f'"""Generated by relunet.fast.codegen v{GEN_VERSION}: N={N}, n_in={n_in}, '
         f'n_out={n_out}, {dtype.name}, {bits} bits. Do not edit."""')
    e(0, "import numpy as np")
    e(0, "from numba import njit")
    e(0)
    e(0, "from relunet import _numba  # noqa: F401  (numba cache folder)")
    if bits == 256:
        e(0, "from relunet.fast.simd import (")
        for name in ("vadd", "vfma", "vhsum", "vhsum_block", "vload", "vmask", "vmul", "vrelu",
                     "vsplat", "vstore", "vsub"):
            e(1, f"{name},")
        e(0, ")")
    else:
        e(0, "from relunet.fast.simd import vadd, vfma, vhsum, vmask, vmul, vrelu, vstore, vsub")
        e(0, f"from relunet.fast.simd import vhsum_block{bits} as vhsum_block")
        e(0, f"from relunet.fast.simd import vload{bits} as vload, vsplat{bits} as vsplat")
    e(0, "from relunet.net import block_offset")
    e(0, "from relunet.optim import apply_update")
    e(0)
    e(0, f"N, N_IN, N_OUT, L, CM = {N}, {n_in}, {n_out}, {L}, {CM}")
    e.lines.extend(_HEAD.rstrip("\n").split("\n"))
    _emit_pass(e, 4, N, n_in, n_out, L, acc)
    e.base = 0
    e.lines.extend(_TAIL.rstrip("\n").split("\n"))
    e.lines.extend(_LG_HEAD.rstrip("\n").split("\n"))
    _emit_pass(e, 3, N, n_in, n_out, L, acc)
    e.base = 0
    e.lines.extend(_LG_TAIL.rstrip("\n").split("\n"))
    e.lines.extend(_L_HEAD.rstrip("\n").split("\n"))
    _emit_pass(e, 3, N, n_in, n_out, L, acc, backward=False)
    e.base = 0
    e.lines.extend(_L_TAIL.rstrip("\n").split("\n"))
    e.lines.extend(_HVP_HEAD.rstrip("\n").split("\n"))
    _emit_pass_hvp(e, 3, N, n_in, n_out, L)
    e.base = 0
    return e.text() + _HVP_TAIL
