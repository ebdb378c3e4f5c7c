"""Contraction rows of the op table: linear, matmul and N-d grouped convolution."""

from __future__ import annotations

import numpy as np

from lowbit.compiler.dims import broadcast
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.ops.window import output_spatial, windows
from lowbit.compiler.types import TensorType


def _check_float_operands(*types: TensorType | None) -> None:
    dtypes = {t.dtype for t in types if t is not None}
    if len(dtypes) > 1:
        raise ValueError(f"operand dtypes differ: {sorted(dtypes)}")


def infer_linear(x: TensorType, w: TensorType, b: TensorType | None) -> TensorType:
    _check_float_operands(x, w, b)
    if w.rank != 2:
        raise ValueError(f"weight must be [out, in], got rank {w.rank}")
    if x.shape[-1] != w.shape[1]:
        raise ValueError(f"input features {x.shape[-1]} != weight in-features {w.shape[1]}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"bias shape {b.shape} != ({w.shape[0]},)")
    return x.with_shape(x.shape[:-1] + (w.shape[0],))


def eval_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    y = x @ w.T
    return y + b if b is not None else y


register(OpSpec("linear", "y = x @ w.T + b with w [out, in] (torch Linear, ONNX Gemm transB=1)",
                ("x", "w", "b?"), infer_linear, eval_linear))


def infer_matmul(a: TensorType, b: TensorType) -> TensorType:
    _check_float_operands(a, b)
    if a.rank < 2 or b.rank < 2:
        raise ValueError("matmul operands must have rank >= 2 (importers expand vectors)")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"contraction sizes differ: {a.shape[-1]} and {b.shape[-2]}")
    batch = broadcast(a.shape[:-2], b.shape[:-2])
    return a.with_shape(batch + (a.shape[-2], b.shape[-1]))


def eval_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.matmul(a, b)


register(OpSpec("matmul", "batched a @ b with numpy broadcasting of leading axes",
                ("a", "b"), infer_matmul, eval_matmul))


def infer_conv(x: TensorType, w: TensorType, b: TensorType | None, *, strides: tuple[int, ...],
               pads: tuple[int, ...], dilations: tuple[int, ...], groups: int) -> TensorType:
    _check_float_operands(x, w, b)
    if x.rank != w.rank or x.rank < 3:
        raise ValueError(f"input rank {x.rank} and weight rank {w.rank} do not form a convolution")
    out_channels, group_channels = w.shape[0], w.shape[1]
    if x.shape[1] != group_channels * groups or out_channels % groups:
        raise ValueError(f"channels {x.shape[1]} do not match weight {w.shape} with groups={groups}")
    if b is not None and b.shape != (out_channels,):
        raise ValueError(f"bias shape {b.shape} != ({out_channels},)")
    spatial = output_spatial(x.shape[2:], w.shape[2:], strides, pads, dilations)
    return x.with_shape((x.shape[0], out_channels) + spatial)


def eval_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, *, strides: tuple[int, ...],
              pads: tuple[int, ...], dilations: tuple[int, ...], groups: int) -> np.ndarray:
    rank = x.ndim - 2
    patches = windows(x, w.shape[2:], strides, pads, dilations, pad_value=0.0)
    n, c = patches.shape[:2]
    out_spatial = patches.shape[2:2 + rank]
    grouped = patches.reshape((n, groups, c // groups) + patches.shape[2:])
    kernels = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
    letters = "defhijkl"[:rank]
    taps = "pqrstuvw"[:rank]
    spec = f"ngc{letters}{taps},gmc{taps}->ngm{letters}"
    y = np.einsum(spec, grouped, kernels, optimize=True)
    y = y.reshape((n, w.shape[0]) + out_spatial).astype(x.dtype, copy=False)
    return y + b.reshape((1, -1) + (1,) * rank) if b is not None else y


register(OpSpec("conv", "N-d grouped convolution (cross-correlation), weight [out, in/groups, *k]",
                ("x", "w", "b?"), infer_conv, eval_conv,
                attrs={"strides": REQUIRED, "pads": REQUIRED, "dilations": REQUIRED, "groups": 1}))
