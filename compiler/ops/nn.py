"""Normalization, softmax and pooling rows of the op table.

Statistics (means, variances, softmax sums) are accumulated in float64 and the result is
returned in the input dtype, so the reference stays at least as accurate as torch's float32.
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.ops.window import output_spatial, windows
from lowbit.compiler.types import TensorType


def infer_batch_norm(x: TensorType, scale: TensorType, bias: TensorType, mean: TensorType,
                     var: TensorType, *, eps: float) -> TensorType:
    channels = x.shape[1]
    for name, t in (("scale", scale), ("bias", bias), ("mean", mean), ("var", var)):
        if t.shape != (channels,):
            raise ValueError(f"{name} shape {t.shape} != ({channels},)")
    return x


def eval_batch_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
                    var: np.ndarray, *, eps: float) -> np.ndarray:
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv_std = 1.0 / np.sqrt(var.astype(np.float64) + eps)
    y = (x - mean.reshape(shape)) * (scale * inv_std).reshape(shape) + bias.reshape(shape)
    return y.astype(x.dtype)


register(OpSpec("batch_norm", "inference batch normalization over axis 1 with running statistics",
                ("x", "scale", "bias", "mean", "var"), infer_batch_norm, eval_batch_norm,
                attrs={"eps": 1e-5}))


def infer_layer_norm(x: TensorType, w: TensorType | None, b: TensorType | None, *,
                     axis: int, eps: float) -> TensorType:
    start = normalize_axis(axis, x.rank)
    normalized = x.shape[start:]
    for name, t in (("weight", w), ("bias", b)):
        if t is not None and t.shape != normalized:
            raise ValueError(f"{name} shape {t.shape} != normalized shape {normalized}")
    return x


def eval_layer_norm(x: np.ndarray, w: np.ndarray | None, b: np.ndarray | None, *,
                    axis: int, eps: float) -> np.ndarray:
    axes = tuple(range(normalize_axis(axis, x.ndim), x.ndim))
    wide = x.astype(np.float64)
    mean = wide.mean(axis=axes, keepdims=True)
    var = np.square(wide - mean).mean(axis=axes, keepdims=True)
    y = (wide - mean) / np.sqrt(var + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y.astype(x.dtype)


register(OpSpec("layer_norm", "normalize over axes axis..-1, then optional affine w, b",
                ("x", "w?", "b?"), infer_layer_norm, eval_layer_norm,
                attrs={"axis": -1, "eps": 1e-5}))


def infer_softmax(x: TensorType, *, axis: int) -> TensorType:
    normalize_axis(axis, x.rank)
    return x


def eval_softmax(x: np.ndarray, *, axis: int) -> np.ndarray:
    wide = x.astype(np.float64)
    shifted = np.exp(wide - wide.max(axis=axis, keepdims=True))
    return (shifted / shifted.sum(axis=axis, keepdims=True)).astype(x.dtype)


register(OpSpec("softmax", "exp(x) / sum(exp(x)) along axis", ("x",), infer_softmax, eval_softmax,
                attrs={"axis": -1}))


def _infer_pool(x: TensorType, kernel: tuple[int, ...], strides: tuple[int, ...],
                pads: tuple[int, ...], dilations: tuple[int, ...], ceil_mode: bool) -> TensorType:
    if x.rank != len(kernel) + 2:
        raise ValueError(f"rank {x.rank} input for a {len(kernel)}-d pooling window")
    spatial = output_spatial(x.shape[2:], kernel, strides, pads, dilations, ceil_mode)
    return x.with_shape(x.shape[:2] + spatial)


def infer_max_pool(x: TensorType, *, kernel: tuple[int, ...], strides: tuple[int, ...],
                   pads: tuple[int, ...], dilations: tuple[int, ...], ceil_mode: bool
                   ) -> TensorType:
    return _infer_pool(x, kernel, strides, pads, dilations, ceil_mode)


def eval_max_pool(x: np.ndarray, *, kernel: tuple[int, ...], strides: tuple[int, ...],
                  pads: tuple[int, ...], dilations: tuple[int, ...], ceil_mode: bool
                  ) -> np.ndarray:
    lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    view = windows(x, kernel, strides, pads, dilations, pad_value=lowest, ceil_mode=ceil_mode)
    return view.max(axis=tuple(range(x.ndim, view.ndim))).astype(x.dtype)


register(OpSpec("max_pool", "N-d max pooling; padding never wins the max", ("x",),
                infer_max_pool, eval_max_pool,
                attrs={"kernel": REQUIRED, "strides": REQUIRED, "pads": REQUIRED,
                       "dilations": REQUIRED, "ceil_mode": False}))


def infer_avg_pool(x: TensorType, *, kernel: tuple[int, ...], strides: tuple[int, ...],
                   pads: tuple[int, ...], count_include_pad: bool) -> TensorType:
    return _infer_pool(x, kernel, strides, pads, (1,) * len(kernel), False)


def eval_avg_pool(x: np.ndarray, *, kernel: tuple[int, ...], strides: tuple[int, ...],
                  pads: tuple[int, ...], count_include_pad: bool) -> np.ndarray:
    ones = (1,) * len(kernel)
    axes = tuple(range(x.ndim, x.ndim + len(kernel)))
    total = windows(x.astype(np.float64), kernel, strides, pads, ones, 0.0).sum(axis=axes)
    if count_include_pad:
        count = float(np.prod(kernel))
    else:
        mask = np.ones((1, 1) + x.shape[2:])
        count = windows(mask, kernel, strides, pads, ones, 0.0).sum(axis=axes)
    return (total / count).astype(x.dtype)


register(OpSpec("avg_pool", "N-d average pooling (floor mode)", ("x",), infer_avg_pool,
                eval_avg_pool,
                attrs={"kernel": REQUIRED, "strides": REQUIRED, "pads": REQUIRED,
                       "count_include_pad": True}))
