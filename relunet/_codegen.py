"""Source generator for the fused training kernels (one module per N, n_in, n_out, dtype).

A loop whose trip count comes from an array shape is not a constant to numba,
so a generic kernel cannot unroll the N x N products of a layer or keep a
layer's outputs in registers. This module writes the kernel out as Python
source with every unit loop unrolled (``a1 = vfma(wt, h3_1, a1)`` ...), saves
it in a cache folder and imports it, so numba compiles it with ``cache=True``
like any hand-written module. The folder sits with numba's cache: under
``numba.config.CACHE_DIR`` (``NUMBA_CACHE_DIR``, or the fallback of a read-only
install) when that is set, else ``relunet/__pycache__/generated``. A module's
name carries a digest of its source, so an edit makes a new one; the stale
ones of the same sizes, and numba's cache files of them, are pruned when a new
one is written (if older than an hour: another version sharing the cache may
still use them). The number of layers K stays a run-time
argument: the K - 1 hidden layers share one loop body for the forward pass,
one for the weight gradient and one for the backpropagated delta. Everything
is written out inside ONE function (``train_range``): numba's own inlining,
nested calls and ``prange`` each made the compile several seconds longer
(now about 4 s for 5x5) without making the code faster; the networks are
shared out to threads by ``train.py`` instead (the kernel releases the GIL).

Per network, one training step is, for each chunk of points (``fused.py``)::

    forward   h_l = relu(W_l h_{l-1} + b_l), stored (K*N rows);  y, r = (y - t) valid,
              loss += r^2 ;  dy = (2 / (S n_out)) r
    backward  per layer, top down:
              grad   G_l += dz_l h_{l-1}^T, gb_l += sum dz_l     (register tiles)
              delta  dz_{l-1} = [h_{l-1} > 0] (W_l^T dz_l)

Register blocking (16 ymm registers on AVX2), each choice measured on a
5x5 layer in isolation, as a fraction of the core's FMA issue rate:

* forward: blocks of UF = 2 vectors (8 float64 / 16 float32 points); the N
  inputs of the block stay in registers while the outputs are formed one unit
  at a time, so each weight (a pre-broadcast vector in ``buf``) is loaded once
  per block and feeds 2 FMAs (89%; 1 vector per block: 70%);
* delta: blocks of UD = 2 vectors; dz of one unit at a time into up to 5
  output accumulators x 2 vectors, so consecutive FMAs are independent (85%;
  one output at a time: 77%);
* grad: a tile of up to 12 accumulators (for N = 5: 5 units x 2 columns, the
  bias being a column of ones), each a vector of per-lane partial sums carried
  through the chunk: the 30 sums of a layer cost 3 passes over the points and
  no horizontal reduction until the end of the step (85%; 2 x 6 tiles: 75%).

Every sum has the order written here (the kernel and the optimizer update,
``fused.apply_update``, are compiled without fast-math flags), so results do
not depend on the thread count or on which other networks share the stack.

Scratch buffer of one network (element offsets, L = lanes, CM = row stride)::

    WS  [P * L]   weights, each broadcast to a vector     (w_k of this step)
    GA  [P * L]   gradient accumulators, per lane
    LS  [L]       loss accumulator, per lane
    H   [K*N*CM]  h_1 .. h_K of the current chunk, row (l-1)*N + j
    DY  [n_out*CM]   DZ0, DZ1 [N*CM]   dL/dy and two delta buffers
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
import time

import numpy as np

__all__ = ["CM", "block_points", "kernel_module", "generate"]

GEN_VERSION = 1
CM = 352        # row stride: 341 points in one chunk (float64: 344, float32: 352)
UF = 2          # vectors per forward block
UD = 2          # vectors per delta block
NMAX = 16       # widest layer the generator unrolls (code grows like N^2)


def block_points(dtype) -> int:
    """Points per block: chunk lengths are multiples of this."""
    return (32 // np.dtype(dtype).itemsize) * max(UF, UD)


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
# Emitters of the phases of one chunk. Names used by the emitted code:
#   buf (scratch), data (points), clen (points in the chunk), b (block start),
#   and offsets set just before: hin/hout (activation rows), ws (weights of
#   the layer in WS), ga (its gradient accumulators), doff/dout (delta rows).
# Weight (j, i) of a layer with fan-in fi, fan-out fo sits at ws + (j*fi+i)*L,
# bias j at ws + (fo*fi + j)*L: the order of net.py's flat vector, times L.
# =============================================================================
def _emit_forward(e, L, fi, fo, src):
    """hout[j] = relu(b_j + sum_i W[j,i] hin[i]), UF vectors of points per block."""
    e(0, f"for b in range(0, clen, {L * UF}):")
    if fi * UF + UF + 1 <= 15:          # the block's inputs all stay in registers
        for i in range(fi):
            for u in range(UF):
                e(1, f"h{i}_{u} = vload({src}, hin + {i * CM + u * L} + b)")
        for j in range(fo):
            e(1, f"bj = vload(buf, ws + {(fo * fi + j) * L})")
            for u in range(UF):
                e(1, f"a{u} = bj")
            for i in range(fi):
                e(1, f"wt = vload(buf, ws + {(j * fi + i) * L})")
                for u in range(UF):
                    e(1, f"a{u} = vfma(wt, h{i}_{u}, a{u})")
            for u in range(UF):
                e(1, f"vstore(buf, hout + {j * CM + u * L} + b, vrelu(a{u}))")
    else:                               # wide layers: 5 outputs at a time
        for js in _groups(fo, 5):
            for j in js:
                e(1, f"bj = vload(buf, ws + {(fo * fi + j) * L})")
                for u in range(UF):
                    e(1, f"a{j}_{u} = bj")
            for i in range(fi):
                for u in range(UF):
                    e(1, f"h{u} = vload({src}, hin + {i * CM + u * L} + b)")
                for j in js:
                    e(1, f"wt = vload(buf, ws + {(j * fi + i) * L})")
                    for u in range(UF):
                        e(1, f"a{j}_{u} = vfma(wt, h{u}, a{j}_{u})")
            for j in js:
                for u in range(UF):
                    e(1, f"vstore(buf, hout + {j * CM + u * L} + b, vrelu(a{j}_{u}))")


def _emit_output(e, L, N, n_in, n_out):
    """y = Wout h_K + bout; r = (y - t) valid; loss lanes += r^2; DY = scale r."""
    e(0, "lacc = vload(buf, LS)")
    e(0, f"for b in range(0, clen, {L}):")
    for i in range(N):
        e(1, f"h{i} = vload(buf, hin + {i * CM} + b)")
    e(1, f"val = vload(data, db + {(n_in + n_out) * CM} + b)")
    for o in range(n_out):
        e(1, f"a = vload(buf, ws + {(n_out * N + o) * L})")
        for i in range(N):
            e(1, f"a = vfma(vload(buf, ws + {(o * N + i) * L}), h{i}, a)")
        e(1, f"r = vmul(vsub(a, vload(data, db + {(n_in + o) * CM} + b)), val)")
        e(1, "lacc = vfma(r, r, lacc)")
        e(1, f"vstore(buf, DY + {o * CM} + b, vmul(r, vscale))")
    e(0, "vstore(buf, LS, lacc)")


def _emit_grad(e, L, fi, fo, src):
    """G[j,i] += sum_s D[j,s] A[i,s] over the chunk (column i = fi: bias, A = 1).

    Register tiles of tj units x ti columns (<= 12 accumulators, each a vector
    of per-lane partial sums kept in GA between chunks)."""
    tj = min(fo, 6)
    ti = min(fi + 1, max(1, 12 // tj))

    def gidx(j, i):
        return (j * fi + i) if i < fi else (fo * fi + j)
    for js in _groups(fo, tj):
        for cols in _groups(fi + 1, ti):
            for j in js:
                for i in cols:
                    e(0, f"g{j}_{i} = vload(buf, ga + {gidx(j, i) * L})")
            e(0, f"for b in range(0, clen, {L}):")
            for j in js:
                e(1, f"d{j} = vload(buf, doff + {j * CM} + b)")
            for i in cols:
                if i < fi:
                    e(1, f"x = vload({src}, hin + {i * CM} + b)")
                    for j in js:
                        e(1, f"g{j}_{i} = vfma(d{j}, x, g{j}_{i})")
                else:
                    for j in js:
                        e(1, f"g{j}_{i} = vadd(g{j}_{i}, d{j})")
            for j in js:
                for i in cols:
                    e(0, f"vstore(buf, ga + {gidx(j, i) * L}, g{j}_{i})")


def _emit_delta(e, L, fi, fo):
    """dout[i] = [hin[i] > 0] sum_j W[j,i] doff[j]  (back through W, then ReLU')."""
    e(0, f"for b in range(0, clen, {L * UD}):")
    for iis in _groups(fi, 5):
        for j in range(fo):
            for u in range(UD):
                e(1, f"d{u} = vload(buf, doff + {j * CM + u * L} + b)")
            for i in iis:
                e(1, f"wt = vload(buf, ws + {(j * fi + i) * L})")
                for u in range(UD):
                    first = f"vmul(wt, d{u})"
                    e(1, f"a{i}_{u} = " + (first if j == 0 else f"vfma(wt, d{u}, a{i}_{u})"))
        for i in iis:
            for u in range(UD):
                mask = f"vload(buf, hin + {i * CM + u * L} + b)"
                e(1, f"vstore(buf, dout + {i * CM + u * L} + b, vmask(a{i}_{u}, {mask}))")


# =============================================================================
# The kernel: one function, the phases written out inside the step loop
# =============================================================================
_HEAD = """
@njit(cache=True, nogil=True, error_model="numpy")
def train_range(W, S1, S2, data, K, nchunks, clen, steps, record_every, opt,
                lr, hp1, hp2, hp3, scale, inv_count, hist, status, done, final, m0, m1):
    \"\"\"Train networks m0 .. m1-1 of the stack in place, one after the other.

    Step k computes the loss and gradient at w_k (all chunks), records the
    loss, then updates w. A last pass k == steps only computes the final loss.
    \"\"\"
    P = W.shape[1]
    zero = scale - scale
    vz = vsplat(zero)
    vscale = vsplat(scale)
    GA = P * L                      # gradient accumulators
    LS = 2 * P * L                  # loss accumulator
    H = LS + L                      # activations h_1 .. h_K
    DY = H + K * (N * CM)
    DZ0 = DY + N_OUT * CM
    DZ1 = DZ0 + N * CM
    HK = H + (K - 1) * (N * CM)
    WOUT = (N * N_IN + N + (K - 1) * (N * N + N)) * L
    buf = np.empty(DZ1 + N * CM, dtype=W.dtype)
    g = np.empty(P, dtype=W.dtype)
    # private copies of the network's weights and state: the rows of W, S1, S2
    # of neighbouring networks share cache lines, and another thread may own them
    w = np.empty(P, dtype=W.dtype)
    s1 = np.empty(S1.shape[1], dtype=W.dtype)
    s2 = np.empty(S2.shape[1], dtype=W.dtype)
    for m in range(m0, m1):
        w[:] = W[m]
        s1[:] = S1[m]
        s2[:] = S2[m]
        st = 0
        dn = steps
        loss = zero
        for k in range(steps + 1):
            for p in range(P):
                vstore(buf, p * L, vsplat(w[p]))
                vstore(buf, GA + p * L, vz)
            vstore(buf, LS, vz)
            for c in range(nchunks):
                db = c * ((N_IN + N_OUT + 1) * CM)
"""

_TAIL = """            loss = vhsum(vload(buf, LS)) * inv_count
            if k == steps:
                break
            if not np.isfinite(loss):
                st = 1
                dn = k
                break
            if k % record_every == 0:
                hist[m, k // record_every] = loss
            for p in range(P):
                g[p] = vhsum(vload(buf, GA + p * L))
            if not apply_update(w, g, s1, s2, opt, lr, hp1, hp2, hp3):
                for p in range(P):          # back to this step's (finite) weights
                    w[p] = buf[p * L]
                st = 1
                dn = k
                break
        W[m] = w
        S1[m] = s1
        S2[m] = s2
        status[m] = st
        done[m] = dn
        final[m] = loss
"""


def generate(N: int, n_in: int, n_out: int, dtype) -> str:
    """Source text of the kernel module for width N, n_in inputs, n_out outputs."""
    dtype = np.dtype(dtype)
    L = 32 // dtype.itemsize
    NCM, LW = N * CM, (N * N + N) * L
    e = _Src()
    e(0, f'"""Generated by relunet._codegen v{GEN_VERSION}: N={N}, n_in={n_in}, '
         f'n_out={n_out}, {dtype.name}. Do not edit."""')
    e(0, "import numpy as np")
    e(0, "from numba import njit")
    e(0)
    e(0, "from relunet import _numba  # noqa: F401  (numba cache folder)")
    e(0, "from relunet.fused import (apply_update, vadd, vfma, vhsum, vload, vmask, vmul,")
    e(0, "                           vrelu, vsplat, vstore, vsub)")
    e(0)
    e(0, f"N, N_IN, N_OUT, L, CM = {N}, {n_in}, {n_out}, {L}, {CM}")
    e.lines.extend(_HEAD.rstrip("\n").split("\n"))
    e.base = 4
    e(0, "# forward, layer 1 (from the inputs)")
    e(0, "hin = db")
    e(0, "hout = H")
    e(0, "ws = 0")
    _emit_forward(e, L, n_in, N, "data")
    e(0, f"ws = {(N * n_in + N) * L}")
    e(0, "for l in range(1, K):")
    e.base = 5
    e(0, "# forward, hidden layer l + 1")
    e(0, f"hin = H + (l - 1) * {NCM}")
    e(0, f"hout = hin + {NCM}")
    _emit_forward(e, L, N, N, "buf")
    e(0, f"ws += {LW}")
    e.base = 4
    e(0, "# output layer: residuals, loss, DY; its gradient; delta into DZ0")
    e(0, "hin = HK")
    _emit_output(e, L, N, n_in, n_out)
    e(0, "ga = GA + WOUT")
    e(0, "doff = DY")
    _emit_grad(e, L, N, n_out, "buf")
    e(0, "dout = DZ0")
    _emit_delta(e, L, N, n_out)
    e(0, "doff = DZ0")
    e(0, "dout = DZ1")
    e(0, "for l in range(K - 1, 0, -1):")
    e.base = 5
    e(0, "# hidden layer l + 1: gradient, then delta of layer l")
    e(0, f"ws -= {LW}")
    e(0, f"hin = H + (l - 1) * {NCM}")
    e(0, "ga = GA + ws")
    _emit_grad(e, L, N, N, "buf")
    _emit_delta(e, L, N, N)
    e(0, "doff, dout = dout, doff")
    e.base = 4
    e(0, "# layer 1: gradient against the inputs")
    e(0, "hin = db")
    e(0, "ga = GA")
    _emit_grad(e, L, n_in, N, "data")
    e.base = 0
    return e.text() + _TAIL


# =============================================================================
# Writing, importing and memoising the generated modules
# =============================================================================
_LOCK = threading.Lock()
_MODULES: dict = {}


PRUNE_AGE = 3600.0           # seconds: stale generated modules younger than this stay


def _gen_dir() -> str:
    """Folder for the generated sources, with numba's cache (module docstring)."""
    import numba
    pkg = os.path.dirname(os.path.abspath(__file__))
    user = getattr(os, "getuid", lambda: 0)()
    cache = numba.config.CACHE_DIR
    first = (os.path.join(cache, "relunet-generated") if cache
             else os.path.join(pkg, "__pycache__", "generated"))
    for d in (first, os.path.join(tempfile.gettempdir(), f"relunet-generated-{user}")):
        try:
            os.makedirs(d, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=d, delete=True)
            probe.close()
            return d
        except OSError:
            continue
    raise OSError("no writable folder for the generated kernels")


def _prune(directory: str, prefix: str, keep: str, now: float | None = None) -> list[str]:
    """Delete generated modules ``prefix*.py`` other than ``keep`` (older than
    PRUNE_AGE) and numba's cache files of them; returns the deleted paths."""
    import glob

    import numba
    now = time.time() if now is None else now
    gone = []
    for path in glob.glob(os.path.join(glob.escape(directory), glob.escape(prefix) + "*.py")):
        stem = os.path.basename(path)[:-3]
        if stem == keep:
            continue
        try:
            if now - os.path.getmtime(path) < PRUNE_AGE:
                continue
        except OSError:
            continue
        caches = [os.path.join(directory, "__pycache__")]
        if numba.config.CACHE_DIR:
            caches += glob.glob(os.path.join(glob.escape(numba.config.CACHE_DIR), "*"))
        victims = [path] + [f for c in caches
                            for f in glob.glob(os.path.join(glob.escape(c),
                                                            glob.escape(stem) + ".*"))]
        for f in victims:
            try:
                os.unlink(f)
                gone.append(f)
            except OSError:
                pass
    return gone


def kernel_module(N: int, n_in: int, n_out: int, dtype):
    """The imported kernel module for these sizes (generated on first use)."""
    dtype = np.dtype(dtype)
    key = (int(N), int(n_in), int(n_out), dtype.name)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is not None:
            return mod
        src = generate(*key)
        # numba's cache does not see changes in imported modules: key the file
        # on the source of the helpers it calls as well
        h = hashlib.sha256(src.encode())
        for dep in ("fused.py", "_numba.py"):
            with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), dep), "rb") as f:
                h.update(f.read())
        digest = h.hexdigest()[:12]
        name = f"relunet_fused_n{N}_i{n_in}_o{n_out}_{dtype.name}_{digest}"
        path = os.path.join(_gen_dir(), name + ".py")
        if not os.path.exists(path):
            # create once and never rewrite: a new mtime would invalidate
            # numba's cache. Hard-linking a complete temporary file is atomic
            # and fails if another process got there first.
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "w") as f:
                f.write(src)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            except OSError:                  # no hard links on this filesystem
                os.replace(tmp, path)
            if os.path.exists(tmp):
                os.unlink(tmp)
            _prune(os.path.dirname(path), name[:-len(digest)], name)
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        _MODULES[key] = mod
        return mod
