"""SIMD vectors for numba: the building blocks of the generated training kernels.

Why explicit vectors
--------------------
The work of one training step is a handful of tiny matrix products per layer
(5x5 weights against 341 points). Left to itself LLVM vectorises the loops
over points but then keeps every reduction (a weight gradient is a sum over
points) in its own vector register, runs out of the 16 AVX2 registers and
spills; with runtime row strides it also gives up on loops that store many
rows (too many run-time alias checks). So the generated kernels
(``codegen.py``) are written with the explicit vector type below: one value
of type ``Vec`` is one vector register, holding L values of consecutive
training points: 4 float64 / 8 float32 in a 256-bit AVX2 register (``vload``,
``vsplat``), 8 float64 / 16 float32 in a 512-bit AVX-512 register
(``vload512``, ``vsplat512``; the other intrinsics take their width from their
arguments). ``vload``/``vstore`` move such a register from/to ``arr[i:i+L]``;
``vfma`` is one ``vfmadd...pd`` instruction. Nothing
is left to the auto-vectoriser, so the register blocking of the kernels is the
one written in the generator, and the order of every floating-point sum is
fixed by the code (no fast-math reassociation is needed for speed).

Each intrinsic lowers to a few LLVM instructions and is inlined; numba caches
functions that use them (``cache=True``) like any other.

Which width
-----------
``vector_bits()`` is the width the training kernels use: 512 where the CPU
numba compiles for has AVX-512 (``avx512f``), else 256; the environment
variable ``RELUNET_VECTOR_BITS`` (256 or 512) or ``train_stack``'s
``vector_bits`` argument overrides it. Every operation is lane by lane, so the
width changes only the order of the sums over points (how many per-lane
partial sums there are): the two widths give results that differ in their last
bits, and each width gives the same bits on every run. A 512-bit kernel on a
CPU without AVX-512 is correct but slow (LLVM splits every vector in two).
"""
from __future__ import annotations

import os

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import default_manager
from numba.extending import intrinsic, models, register_model

__all__ = ["Vec", "BITS", "ENV", "lanes", "native_bits", "vector_bits", "vload", "vload512",
           "vstore", "vsplat", "vsplat512", "vfma", "vadd", "vsub", "vmul", "vrelu", "vmask",
           "vhsum"]

BITS = (256, 512)                 #: the vector widths the kernels are generated for
ENV = "RELUNET_VECTOR_BITS"       #: environment override of the width


# =============================================================================
# The width: from the CPU numba compiles for, or overridden
# =============================================================================
def _cpu_has_avx512() -> bool:
    """Whether numba's code may use AVX-512: numba compiles with the features
    of ``NUMBA_CPU_FEATURES`` when that is set (e.g. with ``NUMBA_CPU_NAME``
    for a portable cache), else with the host CPU's."""
    import numba
    from llvmlite import binding
    if numba.config.CPU_FEATURES is not None:
        return "+avx512f" in numba.config.CPU_FEATURES.split(",")
    global _HOST_AVX512
    if _HOST_AVX512 is None:          # asking LLVM costs ~150 us: once per process
        _HOST_AVX512 = bool(binding.get_host_cpu_features().get("avx512f", False))
    return _HOST_AVX512


_HOST_AVX512 = None


def native_bits() -> int:
    """512 where the CPU numba compiles for has AVX-512 (avx512f), else 256."""
    return 512 if _cpu_has_avx512() else 256


def vector_bits(bits=None) -> int:
    """The vector width to use: ``bits`` if given, else ``$RELUNET_VECTOR_BITS``
    if set, else :func:`native_bits`. One of :data:`BITS`."""
    source = "vector_bits"
    if bits is None and os.environ.get(ENV, "").strip():
        bits, source = os.environ[ENV].strip(), ENV
    if bits is None:
        return native_bits()
    try:
        value = int(bits)
    except (TypeError, ValueError):
        value = None
    if isinstance(bits, bool) or value not in BITS:
        raise ValueError(f"{source} must be 256 or 512 (bits per vector), got {bits!r}")
    return value


# =============================================================================
# The vector type: one register of 256 or 512 bits
# =============================================================================
def lanes(dtype, bits: int = 256) -> int:
    """Values per vector register: bits / 64 for float64, bits / 32 for float32."""
    return bits // 8 // np.dtype(dtype).itemsize


class Vec(types.Type):
    """A vector of ``width`` values of a float ``dtype`` (numba type)."""

    def __init__(self, dtype, width):
        self.dtype = dtype
        self.width = width
        super().__init__(name=f"Vec({dtype}x{width})")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        elem = dmm.lookup(fe_type.dtype).get_value_type()
        super().__init__(dmm, fe_type, ir.VectorType(elem, fe_type.width))


_DATA_FIELD = default_manager.lookup(types.float64[::1])._fields.index("data")


def _vec_of(dtype, bits=256):
    return Vec(dtype, bits // dtype.bitwidth)


def _vec_ptr(context, builder, aryty, ary, idx, vecty):
    # the data pointer straight from the array struct (no alloca: keeps the IR
    # of a few thousand loads small, which matters for compile time)
    data = builder.extract_value(ary, _DATA_FIELD)
    ptr = builder.gep(data, [idx])
    return builder.bitcast(ptr, ir.PointerType(context.get_value_type(vecty)))


# =============================================================================
# Intrinsics (each a few LLVM instructions, no checks: the generator owns the
# index arithmetic and the buffers are sized by it)
# =============================================================================
def _make_vload(bits):
    def vload(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
            return None
        vt = _vec_of(arr.dtype, bits)

        def codegen(context, builder, sig, args):
            ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
            return builder.load(ptr, align=arr.dtype.bitwidth // 8)
        return vt(arr, idx), codegen
    vload.__name__ = vload.__qualname__ = f"vload{bits}"
    return intrinsic(vload)


vload = _make_vload(256)
vload.__doc__ = "arr[idx : idx + L] as one 256-bit vector (unaligned load)."
vload512 = _make_vload(512)
vload512.__doc__ = "arr[idx : idx + L] as one 512-bit vector (unaligned load)."


@intrinsic
def vstore(typingctx, arr, idx, v):
    """arr[idx : idx + L] = v."""
    if not isinstance(v, Vec) or not isinstance(arr, types.Array) or arr.dtype != v.dtype:
        return None

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], sig.args[2])
        builder.store(args[2], ptr, align=arr.dtype.bitwidth // 8)
        return context.get_dummy_value()
    return types.none(arr, idx, v), codegen


def _make_vsplat(bits):
    def vsplat(typingctx, x):
        if x not in (types.float32, types.float64):
            return None
        vt = _vec_of(x, bits)

        def codegen(context, builder, sig, args):
            llt = context.get_value_type(vt)
            undef = ir.Constant(llt, ir.Undefined)
            v = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
            mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.width), [0] * vt.width)
            return builder.shuffle_vector(v, undef, mask)
        return vt(x), codegen
    vsplat.__name__ = vsplat.__qualname__ = f"vsplat{bits}"
    return intrinsic(vsplat)


vsplat = _make_vsplat(256)
vsplat.__doc__ = "A 256-bit vector with every lane equal to the scalar x (float32 or float64)."
vsplat512 = _make_vsplat(512)
vsplat512.__doc__ = "A 512-bit vector with every lane equal to the scalar x."


def _make_vhsum_block(bits):
    def vhsum_block(typingctx, arr, idx):
        if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
            return None
        vt = _vec_of(arr.dtype, bits)
        L = vt.width
        i32 = ir.IntType(32)
        even = ir.Constant(ir.VectorType(i32, L), [2 * i for i in range(L)])
        odd = ir.Constant(ir.VectorType(i32, L), [2 * i + 1 for i in range(L)])

        def codegen(context, builder, sig, args):
            vecs = []
            for j in range(L):
                at = builder.add(args[1], ir.Constant(args[1].type, j * L))
                ptr = _vec_ptr(context, builder, sig.args[0], args[0], at, vt)
                vecs.append(builder.load(ptr, align=arr.dtype.bitwidth // 8))
            # level by level: pair consecutive vectors, add even and odd lanes of the
            # pair; after log2(L) levels lane j holds vector j's lane sum, added in
            # exactly vhsum's pairwise order ((v0+v1)+(v2+v3))+...
            while len(vecs) > 1:
                vecs = [builder.fadd(builder.shuffle_vector(vecs[k], vecs[k + 1], even),
                                     builder.shuffle_vector(vecs[k], vecs[k + 1], odd))
                        for k in range(0, len(vecs), 2)]
            return vecs[0]
        return vt(arr, idx), codegen
    vhsum_block.__name__ = vhsum_block.__qualname__ = f"vhsum_block{bits}"
    return intrinsic(vhsum_block)


vhsum_block = _make_vhsum_block(256)
vhsum_block.__doc__ = ("The lane sums of the L vectors at arr[idx + j L], j < L, as one 256-bit "
                       "vector (lane j: vector j's sum, bit for bit vhsum's); one transposed "
                       "reduction instead of L horizontal ones.")
vhsum_block512 = _make_vhsum_block(512)
vhsum_block512.__doc__ = "vhsum_block for 512-bit vectors."


def _binary(op):
    def typer(typingctx, a, b):
        if not isinstance(a, Vec) or a != b:
            return None

        def codegen(context, builder, sig, args):
            return getattr(builder, op)(args[0], args[1])
        return a(a, b), codegen
    return typer


vadd = intrinsic(_binary("fadd"))
vadd.__doc__ = "a + b, lane by lane."
vsub = intrinsic(_binary("fsub"))
vsub.__doc__ = "a - b, lane by lane."
vmul = intrinsic(_binary("fmul"))
vmul.__doc__ = "a * b, lane by lane."


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c with a single rounding (llvm.fma: one vfmadd instruction)."""
    if not isinstance(a, Vec) or not (a == b == c):
        return None

    def codegen(context, builder, sig, args):
        llt = args[0].type
        name = f"llvm.fma.v{a.width}f{a.dtype.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llt, [llt] * 3), name)
        return builder.call(fn, list(args))
    return a(a, b, c), codegen


@intrinsic
def vrelu(typingctx, z):
    """max(z, 0) that propagates NaN (z < 0 ? 0 : z), like numpy.maximum."""
    if not isinstance(z, Vec):
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered("<", args[0], zero), zero, args[0])
    return z(z), codegen


@intrinsic
def vmask(typingctx, d, h):
    """d where h > 0, else 0: the ReLU derivative (0 at the kink) applied to d."""
    if not isinstance(d, Vec) or d != h:
        return None

    def codegen(context, builder, sig, args):
        zero = ir.Constant(args[0].type, None)
        return builder.select(builder.fcmp_ordered(">", args[1], zero), args[0], zero)
    return d(d, h), codegen


@intrinsic
def vhsum(typingctx, v):
    """Sum of the lanes, pairwise in a fixed order: ((v0+v1)+(v2+v3))+..."""
    if not isinstance(v, Vec):
        return None

    def codegen(context, builder, sig, args):
        parts = [builder.extract_element(args[0], ir.Constant(ir.IntType(32), k))
                 for k in range(v.width)]
        while len(parts) > 1:
            parts = [builder.fadd(parts[k], parts[k + 1]) for k in range(0, len(parts), 2)]
        return parts[0]
    return v.dtype(v), codegen
