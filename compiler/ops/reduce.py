"""Reduction rows of the op table: mean, sum and max over a set of axes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.types import TensorType


def infer_reduce(x: TensorType, *, axes: tuple[int, ...], keepdims: bool) -> TensorType:
    picked = {normalize_axis(a, x.rank) for a in axes}
    if len(picked) != len(axes):
        raise ValueError(f"repeated axes {axes}")
    shape = tuple(1 if i in picked else d for i, d in enumerate(x.shape)
                  if keepdims or i not in picked)
    return x.with_shape(shape)


def _reduction(name: str, summary: str, fn: Callable[..., np.ndarray], wide: bool) -> None:
    def kernel(x: np.ndarray, *, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        source = x.astype(np.float64) if wide and np.issubdtype(x.dtype, np.floating) else x
        return np.asarray(fn(source, axis=tuple(axes), keepdims=keepdims)).astype(x.dtype)

    register(OpSpec(name, summary, ("x",), infer_reduce, kernel,
                    attrs={"axes": REQUIRED, "keepdims": False}))


_reduction("reduce_mean", "mean over axes (global average pooling is this over spatial axes)",
           np.mean, wide=True)
_reduction("reduce_sum", "sum over axes", np.sum, wide=True)
_reduction("reduce_max", "max over axes", np.max, wide=False)
