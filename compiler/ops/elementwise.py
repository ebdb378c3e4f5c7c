"""Elementwise rows of the op table: unary activations, broadcasting binary ops, clip, cast.

Float kernels compute in the input dtype, as torch and onnxruntime do.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import special

from lowbit.compiler.dims import broadcast
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.types import TensorType


def _same_type(x: TensorType) -> TensorType:
    return x


def _unary(name: str, summary: str, fn: Callable[[np.ndarray], np.ndarray]) -> None:
    def kernel(x: np.ndarray) -> np.ndarray:
        return np.asarray(fn(x), dtype=x.dtype)

    register(OpSpec(name, summary, ("x",), _same_type, kernel))


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return special.expit(x)


def _silu(x: np.ndarray) -> np.ndarray:
    return x * special.expit(x)


_unary("relu", "max(x, 0)", _relu)
_unary("sigmoid", "1 / (1 + exp(-x))", _sigmoid)
_unary("silu", "x * sigmoid(x)", _silu)
_unary("tanh", "hyperbolic tangent", np.tanh)
_unary("erf", "Gauss error function", special.erf)
_unary("exp", "e^x", np.exp)
_unary("log", "natural logarithm", np.log)
_unary("sqrt", "square root", np.sqrt)
_unary("neg", "-x", np.negative)
_unary("abs", "|x|", np.abs)
_unary("reciprocal", "1 / x", np.reciprocal)


_SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def eval_gelu(x: np.ndarray, *, approximate: str) -> np.ndarray:
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (x + 0.044715 * x**3)
        return (0.5 * x * (1.0 + np.tanh(inner))).astype(x.dtype)
    return (0.5 * x * (1.0 + special.erf(x / np.sqrt(2.0)))).astype(x.dtype)


def infer_gelu(x: TensorType, *, approximate: str) -> TensorType:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu approximate must be 'none' or 'tanh', not {approximate!r}")
    return x


register(OpSpec("gelu", "Gaussian error linear unit, exact (erf) or tanh approximation",
                ("x",), infer_gelu, eval_gelu, attrs={"approximate": "none"}))


def infer_clip(x: TensorType, *, min: float | None, max: float | None) -> TensorType:
    return x


def eval_clip(x: np.ndarray, *, min: float | None, max: float | None) -> np.ndarray:
    if np.issubdtype(x.dtype, np.integer):  # clip in the integer dtype itself: no float trip
        info = np.iinfo(x.dtype)
        low = info.min if min is None else int(np.clip(np.trunc(min), info.min, info.max))
        high = info.max if max is None else int(np.clip(np.trunc(max), info.min, info.max))
        return np.clip(x, x.dtype.type(low), x.dtype.type(high))
    return np.clip(x, min, max).astype(x.dtype)


register(OpSpec("clip", "clamp to [min, max] (relu6 is clip 0..6); None leaves a side open",
                ("x",), infer_clip, eval_clip, attrs={"min": None, "max": None}))


def infer_cast(x: TensorType, *, to: str) -> TensorType:
    return x.with_dtype(to)


def eval_cast(x: np.ndarray, *, to: str) -> np.ndarray:
    return x.astype(to)


register(OpSpec("cast", "convert to dtype `to`", ("x",), infer_cast, eval_cast,
                attrs={"to": REQUIRED}))


def _infer_binary(a: TensorType, b: TensorType) -> TensorType:
    if a.dtype != b.dtype:
        raise ValueError(f"operand dtypes differ: {a.dtype} and {b.dtype}")
    return TensorType(a.dtype, broadcast(a.shape, b.shape))


def _binary(name: str, summary: str, fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    def kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(fn(a, b), dtype=a.dtype)

    register(OpSpec(name, summary, ("a", "b"), _infer_binary, kernel))


def _divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):
        return np.trunc(np.true_divide(a, b))  # integer Div truncates toward zero (ONNX, C)
    return np.true_divide(a, b)


_binary("add", "a + b, broadcasting", np.add)
_binary("sub", "a - b, broadcasting", np.subtract)
_binary("mul", "a * b, broadcasting", np.multiply)
_binary("div", "a / b, broadcasting; integer division truncates toward zero", _divide)
_binary("pow", "a ** b, broadcasting", np.power)
_binary("maximum", "elementwise max, broadcasting", np.maximum)
_binary("minimum", "elementwise min, broadcasting", np.minimum)


def infer_where(cond: TensorType, a: TensorType, b: TensorType) -> TensorType:
    if cond.dtype != "bool":
        raise ValueError(f"condition must be bool, not {cond.dtype}")
    return TensorType(_infer_binary(a, b).dtype, broadcast(cond.shape, a.shape, b.shape))


def eval_where(cond: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.where(cond, a, b)


register(OpSpec("where", "cond ? a : b, broadcasting", ("cond", "a", "b"), infer_where, eval_where))


def infer_equal(a: TensorType, b: TensorType) -> TensorType:
    return TensorType("bool", _infer_binary(a, b).shape)


def eval_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.equal(a, b)


register(OpSpec("equal", "a == b elementwise, broadcasting, bool result", ("a", "b"),
                infer_equal, eval_equal))
