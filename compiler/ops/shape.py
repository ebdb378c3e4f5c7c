"""Data-movement rows of the op table: reshape, transpose, slice, concat, gather, expand.

Target shapes are attributes resolved at import time (no ``-1``); a dimension may be a
multiple of the batch ``N``, which kernels turn into a size with the run's batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lowbit.compiler.dims import Shape, Sym, broadcast, concrete_shape, normalize_axis, product
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.types import TensorType


def infer_reshape(x: TensorType, *, shape: Shape) -> TensorType:
    if product(x.shape) != product(shape):
        raise ValueError(f"cannot reshape {x.shape} ({product(x.shape)} elements) to {shape}")
    return x.with_shape(tuple(shape))


def eval_reshape(x: np.ndarray, *, shape: Shape, batch: int) -> np.ndarray:
    return x.reshape(concrete_shape(shape, batch))


register(OpSpec("reshape", "same elements in row-major order, new shape (flatten, view, squeeze)",
                ("x",), infer_reshape, eval_reshape, attrs={"shape": REQUIRED}))


def infer_transpose(x: TensorType, *, perm: tuple[int, ...]) -> TensorType:
    if sorted(perm) != list(range(x.rank)):
        raise ValueError(f"perm {perm} is not a permutation of {x.rank} axes")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def eval_transpose(x: np.ndarray, *, perm: tuple[int, ...]) -> np.ndarray:
    return np.transpose(x, perm)


register(OpSpec("transpose", "permute axes: out axis i is input axis perm[i]", ("x",),
                infer_transpose, eval_transpose, attrs={"perm": REQUIRED}))


def _slices(rank: int, axes: Sequence[int], starts: Sequence[int], ends: Sequence[int],
            steps: Sequence[int]) -> list[slice]:
    picks = [slice(None)] * rank
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            raise ValueError("slice step 0")
        picks[normalize_axis(axis, rank)] = slice(start, end, step)
    return picks


def infer_slice(x: TensorType, *, axes: tuple[int, ...], starts: tuple[int, ...],
                ends: tuple[int, ...], steps: tuple[int, ...]) -> TensorType:
    shape = list(x.shape)
    for axis, pick in enumerate(_slices(x.rank, axes, starts, ends, steps)):
        dim = shape[axis]
        if pick == slice(None):
            continue
        if isinstance(dim, Sym):
            if pick.indices(2**62) != (0, 2**62, 1):
                raise ValueError(f"slicing the batch axis {axis} is not supported")
            continue
        shape[axis] = len(range(*pick.indices(dim)))
    return x.with_shape(tuple(shape))


def eval_slice(x: np.ndarray, *, axes: tuple[int, ...], starts: tuple[int, ...],
               ends: tuple[int, ...], steps: tuple[int, ...]) -> np.ndarray:
    return x[tuple(_slices(x.ndim, axes, starts, ends, steps))]


register(OpSpec("slice", "strided slice per axis with Python/ONNX clamping of starts and ends",
                ("x",), infer_slice, eval_slice,
                attrs={"axes": REQUIRED, "starts": REQUIRED, "ends": REQUIRED, "steps": REQUIRED}))


def infer_concat(*parts: TensorType, axis: int) -> TensorType:
    present = [p for p in parts if p is not None]
    first = present[0]
    at = normalize_axis(axis, first.rank)
    for part in present[1:]:
        if part.dtype != first.dtype or part.rank != first.rank or any(
                a != b for i, (a, b) in enumerate(zip(part.shape, first.shape)) if i != at):
            raise ValueError(f"cannot concatenate {first} and {part} on axis {axis}")
    sizes = [p.shape[at] for p in present]
    if any(isinstance(s, Sym) for s in sizes):
        raise ValueError("concatenation along the batch axis is not supported")
    return first.with_shape(first.shape[:at] + (sum(sizes),) + first.shape[at + 1:])


def eval_concat(*parts: np.ndarray | None, axis: int) -> np.ndarray:
    return np.concatenate([p for p in parts if p is not None], axis=axis)


register(OpSpec("concat", "join tensors along axis (variadic)", ("parts*",), infer_concat,
                eval_concat, attrs={"axis": REQUIRED}))


def infer_gather(data: TensorType, indices: TensorType, *, axis: int) -> TensorType:
    if indices.dtype not in ("int32", "int64"):
        raise ValueError(f"indices must be int32 or int64, not {indices.dtype}")
    at = normalize_axis(axis, data.rank)
    return data.with_shape(data.shape[:at] + indices.shape + data.shape[at + 1:])


def eval_gather(data: np.ndarray, indices: np.ndarray, *, axis: int) -> np.ndarray:
    size = data.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise IndexError(f"index out of range [{-size}, {size}) on axis {axis}")
    return np.take(data, indices, axis=axis)


register(OpSpec("gather", "take slices of data along axis at indices (embedding lookup)",
                ("data", "indices"), infer_gather, eval_gather, attrs={"axis": 0}))


def infer_expand(x: TensorType, *, shape: Shape) -> TensorType:
    out = broadcast(x.shape, tuple(shape))
    if out != tuple(shape):
        raise ValueError(f"cannot expand {x.shape} to {shape}")
    return x.with_shape(out)


def eval_expand(x: np.ndarray, *, shape: Shape, batch: int) -> np.ndarray:
    return np.broadcast_to(x, concrete_shape(shape, batch))


register(OpSpec("expand", "broadcast to a resolved target shape", ("x",), infer_expand,
                eval_expand, attrs={"shape": REQUIRED}))
