"""Export rules for the integer ops (``lowbit.compiler.ops.integer``): standard ONNX, bit-exact.

Each rule widens its operands to int64 (``Emitter.int64``, which also subtracts a zero point),
computes exactly what the op's ``eval_*`` kernel computes, and casts the result to the op's
output dtype at the end. Integer results that the kernel checks with ``fit`` are exact in
ONNX too as long as they fit: int32 and int64 arithmetic wraps modulo ``2^32``/``2^64`` in
onnxruntime as in numpy, so an intermediate wrap never survives the final cast.

Products use onnxruntime's integer kernels where they apply: ``MatMulInteger`` and
``ConvInteger`` (int8 or uint8 operands, scalar zero points of the operand's dtype, int32
accumulation). Otherwise ``int_linear``/``int_matmul`` use int64 ``MatMul``, and ``int_conv``
splits its zero-point-shifted operands into 8-bit limbs and sums ``ConvInteger`` of each pair
of limbs, scaled by powers of 256 (onnxruntime has no ``Conv`` on integers).

``quantize`` is computed in float64 exactly as ``eval_quantize`` (``QuantizeLinear`` divides
in float32 and differs on near-ties whenever the scale is not a float32 power of two);
``dequantize`` is ``(q - zp)`` cast to float32 times the float32 scale, as ``eval_dequantize``.
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.dims import Sym, product
from lowbit.compiler.exporters.onnx_emit import Emitter, ExportRule, Operand, fits, registrar
from lowbit.compiler.exporters.onnx_ibert import i_gelu, i_layernorm, i_softmax
from lowbit.compiler.exporters.onnx_int_math import (byte_limbs, const_byte_limbs, exact_sum,
                                                     isqrt, rounding_shift, shift_left)
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan, layernorm_plan, softmax_plan

INT_RULES: dict[str, ExportRule] = {}
rule = registrar(INT_RULES)

_BYTE_DTYPES = ("int8", "uint8")


# -- boundary -----------------------------------------------------------------------------------
@rule("quantize")
def export_quantize(em: Emitter, x: Operand, *, scale: float, zero_point: int, dtype: str
                    ) -> str:
    lo, hi = INT_RANGES[dtype]
    wide = em.cast(em.use(x), "float64")
    codes = em.add(em.op("Round", em.div(wide, float(scale))), float(zero_point))  # half to even
    return em.cast(em.clip(codes, float(lo), float(hi)), dtype)


@rule("dequantize")
def export_dequantize(em: Emitter, q: Operand, *, scale: float, zero_point: int) -> str:
    return em.mul(em.cast(em.int64(q, zero_point), "float32"), np.float32(scale))


# -- accumulating products ------------------------------------------------------------------
def _byte_operand(operand: Operand, zero_point: int) -> bool:
    """Whether ``operand`` can feed MatMulInteger/ConvInteger with ``zero_point`` as is."""
    return operand.dtype in _BYTE_DTYPES and fits(np.array(zero_point), operand.dtype)


def _zero_point(em: Emitter, operand: Operand, zero_point: int) -> str:
    return em.const(np.array(zero_point), operand.dtype, "zero_point")


def _bias(em: Emitter, acc: str, b: Operand | None, shape: tuple[int, ...]) -> str:
    """``acc`` (int64) plus the bias ``b`` reshaped to ``shape`` (broadcasting)."""
    if b is None:
        return acc
    if b.value is not None:
        return em.add(acc, em.const(b.value.astype(np.int64).reshape(shape), "int64", "bias"))
    return em.add(acc, em.node("Reshape", [em.int64(b), em.const(np.array(shape), "int64")]))


def _transposed(em: Emitter, w: Operand, dtype: str) -> str:
    """The ``[out, in]`` weight as ``[in, out]`` in ``dtype`` (folded for a constant)."""
    if w.value is not None:
        return em.const(w.value.T, dtype, "weight_t")
    return em.cast(em.node("Transpose", [em.use(w)], perm=[1, 0]), dtype)


@rule("int_linear")
def export_int_linear(em: Emitter, x: Operand, w: Operand, b: Operand | None, *,
                      x_zero_point: int) -> str:
    if _byte_operand(x, x_zero_point) and w.dtype in _BYTE_DTYPES:
        acc = em.node("MatMulInteger", [em.use(x), _transposed(em, w, w.dtype),
                                        _zero_point(em, x, x_zero_point)], dtype="int32")
        acc = em.cast(acc, "int64")
    else:
        acc = em.node("MatMul", [em.int64(x, x_zero_point), _transposed(em, w, "int64")])
    return em.cast(_bias(em, acc, b, (-1,)), "int32")


@rule("int_matmul")
def export_int_matmul(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                      b_zero_point: int) -> str:
    if _byte_operand(a, a_zero_point) and _byte_operand(b, b_zero_point):
        return em.node("MatMulInteger", [em.use(a), em.use(b), _zero_point(em, a, a_zero_point),
                                         _zero_point(em, b, b_zero_point)], dtype="int32")
    acc = em.node("MatMul", [em.int64(a, a_zero_point), em.int64(b, b_zero_point)])
    return em.cast(acc, "int32")


def _conv_limbs(em: Emitter, operand: Operand, zero_point: int
                ) -> list[tuple[str, int, str | None]]:
    """``operand - zero_point`` as 8-bit limbs ``(limb, weight, limb zero point)``."""
    if _byte_operand(operand, zero_point):
        zp = _zero_point(em, operand, zero_point) if zero_point else None
        return [(em.use(operand), 1, zp)]
    if operand.value is not None:
        return [(em.const(limb, str(limb.dtype), "limb"), weight, None)
                for limb, weight in const_byte_limbs(operand.value.astype(np.int64) - zero_point)]
    lo, hi = INT_RANGES[operand.dtype]
    return [(limb, weight, None) for limb, weight in
            byte_limbs(em, em.int64(operand, zero_point), lo - zero_point, hi - zero_point)]


@rule("int_conv")
def export_int_conv(em: Emitter, x: Operand, w: Operand, b: Operand | None, *,
                    x_zero_point: int, strides: tuple[int, ...], pads: tuple[int, ...],
                    dilations: tuple[int, ...], groups: int) -> str:
    # ConvInteger pads with the input zero point, i.e. (x - zp) with 0, like eval_int_conv.
    attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dilations),
             "group": groups, "kernel_shape": [int(k) for k in w.shape[2:]]}
    acc: str | None = None
    for x_limb, x_weight, x_zp in _conv_limbs(em, x, x_zero_point):
        for w_limb, w_weight, _ in _conv_limbs(em, w, 0):
            inputs = [x_limb, w_limb] + ([x_zp] if x_zp else [])
            part = em.cast(em.node("ConvInteger", inputs, dtype="int32", **attrs), "int64")
            part = em.mul(part, x_weight * w_weight)
            acc = part if acc is None else em.add(acc, part)
    assert acc is not None
    return em.cast(_bias(em, acc, b, (1, -1) + (1,) * (x.type.rank - 2)), "int32")


@rule("int_mul")
def export_int_mul(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                   b_zero_point: int) -> str:
    return em.cast(em.mul(em.int64(a, a_zero_point), em.int64(b, b_zero_point)), "int32")


@rule("int_sum")
def export_int_sum(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool,
                   zero_point: int) -> str:
    lo, hi = INT_RANGES[x.dtype]
    count = product(tuple(x.shape[a] for a in axes))
    bound = None if isinstance(count, Sym) else count * max(abs(lo - zero_point),
                                                            abs(hi - zero_point))
    return em.cast(exact_sum(em, em.int64(x, zero_point), axes, keepdims, bound), "int32")


# -- requantization ---------------------------------------------------------------------------
def _shift_amount(em: Emitter, shift: Operand) -> np.ndarray | str:
    return shift.value.astype(np.int64) if shift.value is not None else em.int64(shift)


def _clamp(em: Emitter, codes: str, qmin: int, qmax: int, dtype: str) -> str:
    return em.cast(em.clip(codes, qmin, qmax), dtype)


@rule("requantize")
def export_requantize(em: Emitter, acc: Operand, mult: Operand, shift: Operand,
                      offset: Operand | None, *, zero_point: int, dtype: str, qmin: int,
                      qmax: int) -> str:
    scaled = em.mul(em.int64(acc), em.int64(mult))
    if offset is not None:
        scaled = em.add(scaled, em.int64(offset))
    codes = em.add(rounding_shift(em, scaled, _shift_amount(em, shift)), zero_point)
    return _clamp(em, codes, qmin, qmax, dtype)


@rule("int_add")
def export_int_add(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                   b_zero_point: int, a_mult: int, b_mult: int, shift: int, zero_point: int,
                   dtype: str, qmin: int, qmax: int) -> str:
    total = em.add(em.mul(em.int64(a, a_zero_point), a_mult),
                   em.mul(em.int64(b, b_zero_point), b_mult))
    return _clamp(em, em.add(rounding_shift(em, total, shift), zero_point), qmin, qmax, dtype)


@rule("int_div")
def export_int_div(em: Emitter, a: Operand, b: Operand, *, shift: int) -> str:
    # ONNX Div truncates toward zero, as eval_int_div does; a zero divisor (an error in the
    # interpreter) is replaced by 1 so that the exported model cannot trap.
    denominator = em.int64(b)
    safe = em.where(em.equal(denominator, 0), 1, denominator)
    return em.div(shift_left(em, em.int64(a), shift), safe)


# -- I-BERT nonlinearities --------------------------------------------------------------------
@rule("int_softmax")
def export_int_softmax(em: Emitter, x: Operand, *, axis: int, scale: float, out_bits: int
                       ) -> str:
    row = x.shape[axis]
    out = i_softmax(em, softmax_plan(scale, out_bits), em.int64(x), axis,
                    None if isinstance(row, Sym) else row)
    return em.cast(out, "uint8" if out_bits <= 8 else "int32")


@rule("int_gelu")
def export_int_gelu(em: Emitter, x: Operand, *, zero_point: int, scale: float) -> str:
    return i_gelu(em, gelu_plan(scale), em.int64(x, zero_point))


@rule("int_layernorm")
def export_int_layernorm(em: Emitter, x: Operand, *, zero_point: int, scale: float, eps: float
                         ) -> str:
    plan = layernorm_plan(scale, int(x.shape[-1]), eps)
    return em.cast(i_layernorm(em, plan, em.int64(x, zero_point)), "int32")


@rule("int_sqrt")
def export_int_sqrt(em: Emitter, x: Operand) -> str:
    return isqrt(em, em.int64(x))
