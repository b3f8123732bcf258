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
of type ``Vec`` is one AVX2 register, holding 4 float64 or 8 float32 values
of consecutive training points. ``vload``/``vstore`` move such a register
from/to ``arr[i:i+L]``; ``vfma`` is one ``vfmadd...pd`` instruction. Nothing
is left to the auto-vectoriser, so the register blocking of the kernels is the
one written in the generator, and the order of every floating-point sum is
fixed by the code (no fast-math reassociation is needed for speed).

Each intrinsic lowers to a few LLVM instructions and is inlined; numba caches
functions that use them (``cache=True``) like any other.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.core.datamodel import default_manager
from numba.extending import intrinsic, models, register_model

__all__ = ["Vec", "lanes", "vload", "vstore", "vsplat", "vfma", "vadd", "vsub", "vmul",
           "vrelu", "vmask", "vhsum"]


# =============================================================================
# The vector type: one AVX2 register (256 bits)
# =============================================================================
def lanes(dtype) -> int:
    """Values per vector register: 4 for float64, 8 for float32."""
    return 32 // np.dtype(dtype).itemsize


class Vec(types.Type):
    """A 256-bit vector of ``width`` values of a float ``dtype`` (numba type)."""

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


def _vec_of(dtype):
    return Vec(dtype, 256 // dtype.bitwidth)


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
@intrinsic
def vload(typingctx, arr, idx):
    """arr[idx : idx + L] as one vector (unaligned load)."""
    if not isinstance(arr, types.Array) or arr.dtype not in (types.float32, types.float64):
        return None
    vt = _vec_of(arr.dtype)

    def codegen(context, builder, sig, args):
        ptr = _vec_ptr(context, builder, sig.args[0], args[0], args[1], vt)
        return builder.load(ptr, align=arr.dtype.bitwidth // 8)
    return vt(arr, idx), codegen


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


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane equal to the scalar x (float32 or float64)."""
    if x not in (types.float32, types.float64):
        return None
    vt = _vec_of(x)

    def codegen(context, builder, sig, args):
        llt = context.get_value_type(vt)
        undef = ir.Constant(llt, ir.Undefined)
        v = builder.insert_element(undef, args[0], ir.Constant(ir.IntType(32), 0))
        mask = ir.Constant(ir.VectorType(ir.IntType(32), vt.width), [0] * vt.width)
        return builder.shuffle_vector(v, undef, mask)
    return vt(x), codegen


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
