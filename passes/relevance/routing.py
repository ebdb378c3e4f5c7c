"""Where each output element came from, for ops that move or select values without mixing them.

Data movement (reshape, transpose, slice, concat, expand, gather) sends every output
element's relevance back to the element it was copied from; selections (max pooling,
reduce_max, maximum, minimum, where) send it to the element that won, ties going to the first
(the element torch's max-pool backward picks). This is the transpose of the op, i.e. its
gradient, which for a copy or a selection is also what LRP-0 gives: nothing is created or lost.
Each function returns one array per operand, shaped like that operand (None for index and
condition operands).
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.ops.window import windows
from lowbit.passes.relevance.base import Step, unbroadcast
from lowbit.passes.relevance.linear_maps import scatter_windows

Routed = tuple[np.ndarray | None, ...]


def _x(step: Step) -> np.ndarray:
    x = step.inputs[0]
    assert x is not None
    return x


def reshape_back(step: Step) -> Routed:
    return (step.relevance.reshape(_x(step).shape),)


def transpose_back(step: Step) -> Routed:
    return (np.transpose(step.relevance, np.argsort(step.attrs["perm"])),)


def slice_back(step: Step) -> Routed:
    x = _x(step)
    a = step.attrs
    picks = [slice(None)] * x.ndim
    for axis, start, end, stride in zip(a["axes"], a["starts"], a["ends"], a["steps"]):
        picks[normalize_axis(axis, x.ndim)] = slice(start, end, stride)
    routed = np.zeros(x.shape)
    routed[tuple(picks)] = step.relevance
    return (routed,)


def concat_back(step: Step) -> Routed:
    axis = normalize_axis(step.attrs["axis"], step.relevance.ndim)
    present = [(i, part.shape[axis]) for i, part in enumerate(step.inputs) if part is not None]
    cuts = np.cumsum([size for _, size in present])[:-1]
    routed: list[np.ndarray | None] = [None] * len(step.inputs)
    for (index, _), part in zip(present, np.split(step.relevance, cuts, axis=axis)):
        routed[index] = part
    return tuple(routed)


def expand_back(step: Step) -> Routed:
    return (unbroadcast(step.relevance, _x(step).shape),)


def gather_back(step: Step) -> Routed:
    data, indices = step.inputs[0], step.inputs[1]
    assert data is not None and indices is not None
    axis = normalize_axis(step.attrs["axis"], data.ndim)
    routed = np.zeros(data.shape)
    moved = np.moveaxis(step.relevance, list(range(axis, axis + indices.ndim)),
                        list(range(indices.ndim)))
    np.add.at(np.moveaxis(routed, axis, 0), np.where(indices < 0, indices + data.shape[axis],
                                                     indices), moved)
    return (routed, None)


def _first_winner(flat: np.ndarray) -> np.ndarray:
    """One-hot over the last axis marking the first maximum."""
    return np.arange(flat.shape[-1]) == flat.argmax(axis=-1)[..., None]


def max_pool_back(step: Step) -> Routed:
    x, a = _x(step), step.attrs
    rank = x.ndim - 2
    view = windows(x, a["kernel"], a["strides"], a["pads"], a["dilations"], pad_value=-np.inf,
                   ceil_mode=a["ceil_mode"])
    flat = view.reshape(view.shape[:2 + rank] + (-1,))
    cols = (_first_winner(flat) * step.relevance[..., None]).reshape(view.shape)
    return (scatter_windows(cols, x.shape[2:], a["kernel"], a["strides"], a["pads"],
                            a["dilations"]),)


def reduce_max_back(step: Step) -> Routed:
    x = _x(step)
    axes = sorted(normalize_axis(axis, x.ndim) for axis in step.attrs["axes"])
    kept = [i for i in range(x.ndim) if i not in axes]
    moved = np.transpose(x, kept + axes)
    flat = moved.reshape(moved.shape[:len(kept)] + (-1,))
    relevance = step.relevance if step.attrs["keepdims"] else np.expand_dims(step.relevance, axes)
    own = np.transpose(relevance, kept + axes).reshape(flat.shape[:-1] + (1,))
    routed = (_first_winner(flat) * own).reshape(moved.shape)
    return (np.transpose(routed, np.argsort(kept + axes)),)


def _pick(step: Step, first_wins: np.ndarray) -> Routed:
    a, b = step.inputs[-2], step.inputs[-1]
    assert a is not None and b is not None
    first = np.where(first_wins, step.relevance, 0.0)
    return (unbroadcast(first, a.shape), unbroadcast(step.relevance - first, b.shape))


def maximum_back(step: Step) -> Routed:
    a, b = step.inputs
    return _pick(step, np.broadcast_to(a >= b, step.relevance.shape))  # type: ignore[operator]


def minimum_back(step: Step) -> Routed:
    a, b = step.inputs
    return _pick(step, np.broadcast_to(a <= b, step.relevance.shape))  # type: ignore[operator]


def where_back(step: Step) -> Routed:
    condition = step.inputs[0]
    assert condition is not None
    return (None,) + _pick(step, np.broadcast_to(condition, step.relevance.shape))
