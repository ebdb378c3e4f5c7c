"""TVM emitters for the integer ops (``lowbit.compiler.ops.integer``): Relax, bit-exact.

Each emitter widens its operands (``Emitter.wide``, which also subtracts a zero point),
computes exactly what the op's ``eval_*`` kernel computes, and casts the result to the op's
output dtype at the end. Rescaling (``requantize``, ``int_add``) and the I-BERT kernels run in
int64 as the reference does. Products (``int_linear``, ``int_conv``, ``int_matmul``) accumulate
in int32 when a static bound proves that no partial sum can leave int32 (TVM's signed
arithmetic must not overflow, see ``tvm_int_math``), else in int64; the reference's ``fit``
makes the final int32 cast exact either way.

``quantize`` divides in float64 and rounds half to even with explicit floors (portable across
targets: CUDA's ``round`` rounds half away from zero); ``dequantize`` is ``(q - zp)`` cast to
float32 times the float32 scale, as ``eval_dequantize``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, Operand
from lowbit.compiler.codegen.tvm_ibert import i_gelu, i_layernorm, i_softmax
from lowbit.compiler.codegen.tvm_int_math import clamp_cast, isqrt, rounding_shift, shift_left
from lowbit.compiler.dims import Sym
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan, layernorm_plan, softmax_plan

TvmEmitter = Callable[..., relax.Expr | tuple[relax.Expr, ...]]
INT_EMITTERS: dict[str, TvmEmitter] = {}

INT32_LIMIT = 1 << 31


def emitter(table: dict[str, TvmEmitter], op: str) -> Callable[[TvmEmitter], TvmEmitter]:
    """A decorator entering a TVM emitter for ``op`` into ``table``."""
    def register(fn: TvmEmitter) -> TvmEmitter:
        if op in table:
            raise ValueError(f"TVM emitter for {op} registered twice")
        table[op] = fn
        return fn
    return register


# -- boundary -----------------------------------------------------------------------------------
@emitter(INT_EMITTERS, "quantize")
def emit_quantize(em: Emitter, x: Operand, *, scale: float, zero_point: int, dtype: str
                  ) -> relax.Expr:
    lo, hi = INT_RANGES[dtype]
    value = em.emit(relax.op.divide(em.cast(x.expr, "float64"), em.const(scale, "float64")))
    codes = em.add(_round_half_to_even(em, value), float(zero_point))
    return em.cast(em.clip(codes, float(lo), float(hi)), dtype)


def _round_half_to_even(em: Emitter, v: relax.Expr) -> relax.Expr:
    """``np.rint`` in float64: ``v - floor(v)`` is exact, so ties are found exactly."""
    low = em.emit(relax.op.floor(v))
    frac = em.sub(v, low)
    half = em.mul(low, 0.5)
    odd = em.emit(relax.op.not_equal(em.emit(relax.op.floor(half)), half))  # low is odd
    tie_to_odd = em.emit(relax.op.logical_and(em.equal(frac, 0.5), odd))
    up = em.emit(relax.op.logical_or(em.greater(frac, 0.5), tie_to_odd))
    return em.add(low, em.cast(up, "float64"))


@emitter(INT_EMITTERS, "dequantize")
def emit_dequantize(em: Emitter, q: Operand, *, scale: float, zero_point: int) -> relax.Expr:
    return em.mul(em.cast(em.wide(q, zero_point), "float32"), np.float32(scale))


# -- accumulating products --------------------------------------------------------------------
def _magnitude(operand: Operand, zero_point: int = 0) -> int:
    """The largest ``|v - zero_point|`` over the operand's values (its dtype's range if it is
    not a constant)."""
    if operand.value is not None and operand.value.size:
        wide = operand.value.astype(np.int64) - zero_point
        return int(np.abs(wide).max())
    lo, hi = INT_RANGES[operand.dtype]
    return max(abs(lo - zero_point), abs(hi - zero_point))


def _accumulator(bound: int) -> str:
    """int32 where every partial sum is provably below 2^31 in magnitude, else int64."""
    return "int32" if bound < INT32_LIMIT else "int64"


def _bias(em: Emitter, acc: relax.Expr, b: Operand | None, shape: tuple[int, ...],
          dtype: str) -> relax.Expr:
    if b is None:
        return acc
    if b.value is not None:
        return em.add(acc, em.const(b.value.astype(np.int64).reshape(shape), dtype))
    return em.add(acc, em.emit(relax.op.reshape(em.cast(b.expr, dtype), shape)))


def _bias_magnitude(b: Operand | None) -> int:
    return 0 if b is None else _magnitude(b)


@emitter(INT_EMITTERS, "int_linear")
def emit_int_linear(em: Emitter, x: Operand, w: Operand, b: Operand | None, *,
                    x_zero_point: int) -> relax.Expr:
    features = int(w.shape[1])
    acc = _accumulator(features * _magnitude(x, x_zero_point) * _magnitude(w)
                       + _bias_magnitude(b))
    if w.value is not None:
        weight_t = em.const(w.value.astype(np.int64).T, acc)
    else:
        weight_t = em.emit(relax.op.permute_dims(em.wide(w, 0, acc), [1, 0]))
    product = em.emit(relax.op.matmul(em.wide(x, x_zero_point, acc), weight_t))
    return em.cast(_bias(em, product, b, (-1,), acc), "int32")


@emitter(INT_EMITTERS, "int_matmul")
def emit_int_matmul(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                    b_zero_point: int) -> relax.Expr:
    depth = int(a.shape[-1])
    acc = _accumulator(depth * _magnitude(a, a_zero_point) * _magnitude(b, b_zero_point))
    product = em.emit(relax.op.matmul(em.wide(a, a_zero_point, acc),
                                      em.wide(b, b_zero_point, acc)))
    return em.cast(product, "int32")


_CONVS = {1: (relax.op.nn.conv1d, "NCW", "OIW"), 2: (relax.op.nn.conv2d, "NCHW", "OIHW"),
          3: (relax.op.nn.conv3d, "NCDHW", "OIDHW")}


@emitter(INT_EMITTERS, "int_conv")
def emit_int_conv(em: Emitter, x: Operand, w: Operand, b: Operand | None, *,
                  x_zero_point: int, strides: tuple[int, ...], pads: tuple[int, ...],
                  dilations: tuple[int, ...], groups: int) -> relax.Expr:
    rank = x.type.rank - 2
    if rank not in _CONVS:
        raise ValueError(f"{rank}-d convolution has no Relax op")
    conv, data_layout, kernel_layout = _CONVS[rank]
    taps = int(np.prod([int(d) for d in w.shape[1:]]))  # per output: in/groups * kernel
    acc = _accumulator(taps * _magnitude(x, x_zero_point) * _magnitude(w) + _bias_magnitude(b))
    # Padding is the real zero: pad (x - zp) with 0, as eval_int_conv does.
    out = em.emit(conv(em.wide(x, x_zero_point, acc), em.wide(w, 0, acc), strides=list(strides),
                       padding=list(pads), dilation=list(dilations), groups=groups,
                       data_layout=data_layout, kernel_layout=kernel_layout, out_dtype=acc))
    return em.cast(_bias(em, out, b, (1, -1) + (1,) * rank, acc), "int32")


@emitter(INT_EMITTERS, "int_mul")
def emit_int_mul(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                 b_zero_point: int) -> relax.Expr:
    return em.cast(em.mul(em.wide(a, a_zero_point), em.wide(b, b_zero_point)), "int32")


@emitter(INT_EMITTERS, "int_sum")
def emit_int_sum(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool,
                 zero_point: int) -> relax.Expr:
    return em.cast(em.reduce_sum(em.wide(x, zero_point), axes, keepdims), "int32")


# -- requantization -----------------------------------------------------------------------------
@emitter(INT_EMITTERS, "requantize")
def emit_requantize(em: Emitter, acc: Operand, mult: Operand, shift: Operand,
                    offset: Operand | None, *, zero_point: int, dtype: str, qmin: int,
                    qmax: int) -> relax.Expr:
    rank = acc.type.rank
    scaled = em.mul(em.wide(acc), _scalar_or_wide(em, mult, rank))
    if offset is not None:
        scaled = em.add(scaled, _scalar_or_wide(em, offset, rank))
    amount = (_at_rank(shift.value.astype(np.int64), rank) if shift.value is not None
              else em.wide(shift))
    codes = em.add(rounding_shift(em, scaled, amount), zero_point)
    return clamp_cast(em, codes, qmin, qmax, dtype)


def _scalar_or_wide(em: Emitter, operand: Operand, rank: int) -> relax.Expr:
    """An int64 operand; a constant whose entries are all equal becomes a scalar constant, any
    other constant gets the rank of the tensor it scales (``_at_rank``)."""
    value = operand.value
    if value is None:
        return em.wide(operand)
    if value.size and np.all(value == value.flat[0]):
        return em.const(np.int64(value.flat[0]), "int64")
    return em.const(_at_rank(value.astype(np.int64), rank), "int64")


def _at_rank(value: np.ndarray, rank: int) -> np.ndarray:
    """``value`` with leading unit axes up to ``rank``: the same broadcast, but a per-channel
    constant now has an axis for each of the tensor's, which TVM's layout conversion
    (``tvm_layout``) needs to move it along with the channels."""
    return value.reshape((1,) * (rank - value.ndim) + value.shape)


@emitter(INT_EMITTERS, "int_add")
def emit_int_add(em: Emitter, a: Operand, b: Operand, *, a_zero_point: int,
                 b_zero_point: int, a_mult: int, b_mult: int, shift: int, zero_point: int,
                 dtype: str, qmin: int, qmax: int) -> relax.Expr:
    total = em.add(em.mul(em.wide(a, a_zero_point), a_mult),
                   em.mul(em.wide(b, b_zero_point), b_mult))
    return clamp_cast(em, em.add(rounding_shift(em, total, shift), zero_point), qmin, qmax,
                      dtype)


@emitter(INT_EMITTERS, "int_div")
def emit_int_div(em: Emitter, a: Operand, b: Operand, *, shift: int) -> relax.Expr:
    # divide truncates toward zero, as eval_int_div does; a zero divisor (an error in the
    # interpreter, a trap in integer hardware division) is replaced by 1.
    denominator = em.wide(b)
    safe = em.where(em.equal(denominator, 0), 1, denominator)
    return em.trunc_div(shift_left(em, em.wide(a), shift), safe)


# -- I-BERT nonlinearities ----------------------------------------------------------------------
@emitter(INT_EMITTERS, "int_softmax")
def emit_int_softmax(em: Emitter, x: Operand, *, axis: int, scale: float, out_bits: int
                     ) -> relax.Expr:
    out = i_softmax(em, softmax_plan(scale, out_bits), em.wide(x), axis)
    return em.cast(out, "uint8" if out_bits <= 8 else "int32")


@emitter(INT_EMITTERS, "int_gelu")
def emit_int_gelu(em: Emitter, x: Operand, *, zero_point: int, scale: float) -> relax.Expr:
    return i_gelu(em, gelu_plan(scale), em.wide(x, zero_point))


@emitter(INT_EMITTERS, "int_layernorm")
def emit_int_layernorm(em: Emitter, x: Operand, *, zero_point: int, scale: float, eps: float
                       ) -> relax.Expr:
    channels = x.shape[-1]
    if isinstance(channels, Sym):
        raise ValueError("normalizing over the batch axis is not supported")
    plan = layernorm_plan(scale, int(channels), eps)
    return em.cast(i_layernorm(em, plan, em.wide(x, zero_point)), "int32")


@emitter(INT_EMITTERS, "int_sqrt")
def emit_int_sqrt(em: Emitter, x: Operand) -> relax.Expr:
    return isqrt(em, em.wide(x))
