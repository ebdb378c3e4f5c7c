"""Integer rows of the op table: the vocabulary of lowered (integer-only) programs.

Semantics are exact integer arithmetic (numpy int64 inside). Zero points are attributes;
multipliers and shifts of requantizations are int64 constant inputs that broadcast against the
accumulator (per-channel requantization is a ``[C, 1, 1]`` or ``[C]`` constant). The I-BERT
ops (``int_softmax``, ``int_gelu``, ``int_layernorm``) carry their input scale as an attribute;
their integer constants are derived from it by the deterministic ``plan_*`` functions of
``lowbit.kernels``, the same in every backend. Every kernel checks that its result fits the
declared dtype and raises otherwise, so an overflow is an error naming the node, never a wrap.
Only ``quantize`` and ``dequantize`` touch floats; they stand at the graph's boundary.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from lowbit.compiler.dims import broadcast
from lowbit.compiler.ops.linalg import eval_conv, infer_conv, infer_linear, infer_matmul
from lowbit.compiler.ops.reduce import infer_reduce
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.types import TensorType
from lowbit.kernels import (apply_gelu, apply_layernorm, apply_softmax, isqrt, plan_gelu,
                            plan_layernorm, plan_softmax, rounding_shift)

INT_RANGES = {d: (int(np.iinfo(d).min), int(np.iinfo(d).max))
              for d in ("int8", "uint8", "int16", "int32", "int64")}


def fit(values: np.ndarray, dtype: str) -> np.ndarray:
    """Cast exact int64 results to ``dtype``; out-of-range values are an error, not a wrap."""
    lo, hi = INT_RANGES[dtype]
    if values.size and (values.min() < lo or values.max() > hi):
        raise ValueError(f"overflow: results in [{values.min()}, {values.max()}] do not fit "
                         f"{dtype}")
    return values.astype(dtype)


def _wide(x: np.ndarray, zero_point: int = 0) -> np.ndarray:
    return x.astype(np.int64) - zero_point


def _require_int(*types: TensorType | None) -> None:
    for t in types:
        if t is not None and t.dtype not in INT_RANGES:
            raise ValueError(f"integer op given a {t.dtype} operand")


# --- boundary ---------------------------------------------------------------------------------
def infer_quantize(x: TensorType, *, scale: float, zero_point: int, dtype: str) -> TensorType:
    if not x.dtype.startswith("float") or dtype not in INT_RANGES or scale <= 0:
        raise ValueError(f"quantize {x.dtype} to {dtype} with scale {scale}")
    return x.with_dtype(dtype)


def eval_quantize(x: np.ndarray, *, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    lo, hi = INT_RANGES[dtype]
    codes = np.rint(x.astype(np.float64) / scale) + zero_point  # half to even, like ONNX
    return np.clip(codes, lo, hi).astype(dtype)


register(OpSpec("quantize", "boundary: clamp(round_half_even(x / scale) + zero_point)",
                ("x",), infer_quantize, eval_quantize,
                attrs={"scale": REQUIRED, "zero_point": 0, "dtype": "int8"}))


def infer_dequantize(q: TensorType, *, scale: float, zero_point: int) -> TensorType:
    _require_int(q)
    return q.with_dtype("float32")


def eval_dequantize(q: np.ndarray, *, scale: float, zero_point: int) -> np.ndarray:
    return (_wide(q, zero_point).astype(np.float32) * np.float32(scale)).astype(np.float32)


register(OpSpec("dequantize", "boundary: (q - zero_point) * scale in float32", ("q",),
                infer_dequantize, eval_dequantize, attrs={"scale": REQUIRED, "zero_point": 0}))


# --- accumulating products -------------------------------------------------------------------
def infer_int_linear(x: TensorType, w: TensorType, b: TensorType | None, *,
                     x_zero_point: int) -> TensorType:
    _require_int(x, w, b)
    return infer_linear(x.with_dtype("int32"), w.with_dtype("int32"),
                        b.with_dtype("int32") if b else None)


def eval_int_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *,
                    x_zero_point: int) -> np.ndarray:
    acc = _wide(x, x_zero_point) @ _wide(w).T
    return fit(acc + b if b is not None else acc, "int32")


register(OpSpec("int_linear", "int32 (x - x_zero_point) @ w.T + b, w int8 [out, in]",
                ("x", "w", "b?"), infer_int_linear, eval_int_linear,
                attrs={"x_zero_point": 0}))


def infer_int_conv(x: TensorType, w: TensorType, b: TensorType | None, *, x_zero_point: int,
                   strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...],
                   groups: int) -> TensorType:
    _require_int(x, w, b)
    return infer_conv(x.with_dtype("int32"), w.with_dtype("int32"),
                      b.with_dtype("int32") if b else None, strides=strides, pads=pads,
                      dilations=dilations, groups=groups)


def eval_int_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, x_zero_point: int,
                  strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...],
                  groups: int) -> np.ndarray:
    # Padding is the real zero, i.e. the code x_zero_point: pad (x - zp) with 0.
    acc = eval_conv(_wide(x, x_zero_point), _wide(w), None, strides=strides, pads=pads,
                    dilations=dilations, groups=groups)
    if b is not None:
        acc = acc + b.astype(np.int64).reshape((1, -1) + (1,) * (x.ndim - 2))
    return fit(acc, "int32")


register(OpSpec("int_conv", "int32 convolution of (x - x_zero_point) with int8 w, plus b",
                ("x", "w", "b?"), infer_int_conv, eval_int_conv,
                attrs={"x_zero_point": 0, "strides": REQUIRED, "pads": REQUIRED,
                       "dilations": REQUIRED, "groups": 1}))


def infer_int_matmul(a: TensorType, b: TensorType, *, a_zero_point: int,
                     b_zero_point: int) -> TensorType:
    _require_int(a, b)
    return infer_matmul(a.with_dtype("int32"), b.with_dtype("int32"))


def eval_int_matmul(a: np.ndarray, b: np.ndarray, *, a_zero_point: int,
                    b_zero_point: int) -> np.ndarray:
    return fit(np.matmul(_wide(a, a_zero_point), _wide(b, b_zero_point)), "int32")


register(OpSpec("int_matmul", "int32 (a - a_zero_point) @ (b - b_zero_point), batched",
                ("a", "b"), infer_int_matmul, eval_int_matmul,
                attrs={"a_zero_point": 0, "b_zero_point": 0}))


def _infer_elementwise_int(a: TensorType, b: TensorType, dtype: str) -> TensorType:
    _require_int(a, b)
    return TensorType(dtype, broadcast(a.shape, b.shape))


def infer_int_mul(a: TensorType, b: TensorType, *, a_zero_point: int, b_zero_point: int
                  ) -> TensorType:
    return _infer_elementwise_int(a, b, "int32")


def eval_int_mul(a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int
                 ) -> np.ndarray:
    return fit(_wide(a, a_zero_point) * _wide(b, b_zero_point), "int32")


register(OpSpec("int_mul", "int32 (a - a_zero_point) * (b - b_zero_point), broadcasting",
                ("a", "b"), infer_int_mul, eval_int_mul,
                attrs={"a_zero_point": 0, "b_zero_point": 0}))


def infer_int_sum(x: TensorType, *, axes: tuple[int, ...], keepdims: bool, zero_point: int
                  ) -> TensorType:
    _require_int(x)
    return infer_reduce(x, axes=axes, keepdims=keepdims).with_dtype("int32")


def eval_int_sum(x: np.ndarray, *, axes: tuple[int, ...], keepdims: bool, zero_point: int
                 ) -> np.ndarray:
    return fit(_wide(x, zero_point).sum(axis=tuple(axes), keepdims=keepdims), "int32")


register(OpSpec("int_sum", "int32 sum of (x - zero_point) over axes", ("x",), infer_int_sum,
                eval_int_sum, attrs={"axes": REQUIRED, "keepdims": False, "zero_point": 0}))


# --- requantization ---------------------------------------------------------------------------
def infer_requantize(acc: TensorType, mult: TensorType, shift: TensorType,
                     offset: TensorType | None, *, zero_point: int, dtype: str, qmin: int,
                     qmax: int) -> TensorType:
    _require_int(acc, mult, shift, offset)
    shapes = [acc.shape, mult.shape, shift.shape] + ([offset.shape] if offset else [])
    if broadcast(*shapes) != acc.shape:
        raise ValueError("multiplier, shift or offset would broadcast the accumulator")
    lo, hi = INT_RANGES[dtype]
    if not lo <= qmin <= qmax <= hi:
        raise ValueError(f"clamp [{qmin}, {qmax}] outside {dtype}")
    return acc.with_dtype(dtype)


def eval_requantize(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray,
                    offset: np.ndarray | None, *, zero_point: int, dtype: str, qmin: int,
                    qmax: int) -> np.ndarray:
    product = _wide(acc) * mult.astype(np.int64)
    if offset is not None:
        product = product + offset.astype(np.int64)
    codes = rounding_shift(product, shift.astype(np.int64)) + zero_point
    return np.clip(codes, qmin, qmax).astype(dtype)


register(OpSpec("requantize",
                "clamp(rounding_shift(acc * mult + offset, shift) + zero_point, qmin, qmax): "
                "the dyadic rescale b / 2^c, rounding half up; ReLU/ReLU6 are the clamp",
                ("acc", "mult", "shift", "offset?"), infer_requantize, eval_requantize,
                attrs={"zero_point": 0, "dtype": "int8", "qmin": -128, "qmax": 127}))


def infer_int_add(a: TensorType, b: TensorType, *, a_zero_point: int, b_zero_point: int,
                  a_mult: int, b_mult: int, shift: int, zero_point: int, dtype: str,
                  qmin: int, qmax: int) -> TensorType:
    return _infer_elementwise_int(a, b, dtype)


def eval_int_add(a: np.ndarray, b: np.ndarray, *, a_zero_point: int, b_zero_point: int,
                 a_mult: int, b_mult: int, shift: int, zero_point: int, dtype: str, qmin: int,
                 qmax: int) -> np.ndarray:
    total = _wide(a, a_zero_point) * a_mult + _wide(b, b_zero_point) * b_mult
    return np.clip(rounding_shift(total, shift) + zero_point, qmin, qmax).astype(dtype)


register(OpSpec("int_add",
                "residual add: clamp(rounding_shift((a-za)*a_mult + (b-zb)*b_mult, shift) + zp)",
                ("a", "b"), infer_int_add, eval_int_add,
                attrs={"a_zero_point": 0, "b_zero_point": 0, "a_mult": REQUIRED,
                       "b_mult": REQUIRED, "shift": REQUIRED, "zero_point": 0, "dtype": "int8",
                       "qmin": -128, "qmax": 127}))


def infer_int_div(a: TensorType, b: TensorType, *, shift: int) -> TensorType:
    return _infer_elementwise_int(a, b, "int64")


def eval_int_div(a: np.ndarray, b: np.ndarray, *, shift: int) -> np.ndarray:
    numerator, denominator = _wide(a) << shift, _wide(b)
    if np.any(denominator == 0):
        raise ValueError("integer division by zero")
    quotient = np.abs(numerator) // np.abs(denominator)
    return fit(np.sign(numerator) * np.sign(denominator) * quotient, "int64")


register(OpSpec("int_div", "(a << shift) / b, truncating toward zero (C and ONNX semantics)",
                ("a", "b"), infer_int_div, eval_int_div, attrs={"shift": 0}))


# --- I-BERT nonlinearities --------------------------------------------------------------------
@lru_cache(maxsize=None)
def softmax_plan(scale: float, out_bits: int):  # noqa: ANN201 - a kernels dataclass
    return plan_softmax(scale, out_bits)


@lru_cache(maxsize=None)
def gelu_plan(scale: float):  # noqa: ANN201
    return plan_gelu(scale)


@lru_cache(maxsize=None)
def layernorm_plan(scale: float, channels: int, eps: float):  # noqa: ANN201
    return plan_layernorm(scale, channels, eps=eps)


def infer_int_softmax(x: TensorType, *, axis: int, scale: float, out_bits: int) -> TensorType:
    _require_int(x)
    softmax_plan(scale, out_bits)
    return x.with_dtype("uint8" if out_bits <= 8 else "int32")


def eval_int_softmax(x: np.ndarray, *, axis: int, scale: float, out_bits: int) -> np.ndarray:
    out = apply_softmax(softmax_plan(scale, out_bits), _wide(x), axis=axis)
    return fit(out, "uint8" if out_bits <= 8 else "int32")


register(OpSpec("int_softmax", "I-BERT softmax of x*scale; codes at scale 2^-out_bits",
                ("x",), infer_int_softmax, eval_int_softmax,
                attrs={"axis": -1, "scale": REQUIRED, "out_bits": 8}))


def infer_int_gelu(x: TensorType, *, zero_point: int, scale: float) -> TensorType:
    _require_int(x)
    gelu_plan(scale)
    return x.with_dtype("int64")


def eval_int_gelu(x: np.ndarray, *, zero_point: int, scale: float) -> np.ndarray:
    return apply_gelu(gelu_plan(scale), _wide(x, zero_point))


register(OpSpec("int_gelu", "I-BERT GELU of (x - zero_point)*scale; codes at the plan's scale",
                ("x",), infer_int_gelu, eval_int_gelu, attrs={"zero_point": 0,
                                                                "scale": REQUIRED}))


def infer_int_layernorm(x: TensorType, *, zero_point: int, scale: float, eps: float
                        ) -> TensorType:
    _require_int(x)
    layernorm_plan(scale, int(x.shape[-1]), eps)
    return x.with_dtype("int32")


def eval_int_layernorm(x: np.ndarray, *, zero_point: int, scale: float, eps: float
                       ) -> np.ndarray:
    return fit(apply_layernorm(layernorm_plan(scale, x.shape[-1], eps), _wide(x, zero_point)),
               "int32")


register(OpSpec("int_layernorm", "I-BERT normalization over the last axis (no affine); "
                "codes at scale 2^-24", ("x",), infer_int_layernorm, eval_int_layernorm,
                attrs={"zero_point": 0, "scale": REQUIRED, "eps": 1e-5}))


def infer_int_sqrt(x: TensorType) -> TensorType:
    _require_int(x)
    return x.with_dtype("int64")


def eval_int_sqrt(x: np.ndarray) -> np.ndarray:
    if x.size and x.min() < 0:
        raise ValueError("integer square root of a negative value")
    return isqrt(_wide(x))


register(OpSpec("int_sqrt", "floor(sqrt(x)) by Newton iterations, x >= 0", ("x",),
                infer_int_sqrt, eval_int_sqrt))
