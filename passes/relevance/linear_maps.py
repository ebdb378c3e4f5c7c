"""The contraction-like ops as affine maps of their live operand (``Affine``), for the linear rules.

Each function here turns a ``Step`` into one ``Affine`` per live factor: conv, linear and
matmul (``z = x W + b``), inference batch norm (``z = k x + c`` per channel), average pooling
and mean/sum reductions (parameter-free). A matmul of two activations yields two affines, each
factor seeing the other one as its weight. Forward maps reuse the op table's float kernels in
float64; adjoints are written here: the transpose of the windowed sum (conv, pooling) scatters
window columns back onto the input grid.

Invariant: ``adjoint(g, w)`` is exactly ``J^T g`` of ``apply(., w)``; the unit tests check it
against ``<J x, g> == <x, J^T g>``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import partial

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.ops.linalg import eval_conv
from lowbit.compiler.ops.nn import eval_avg_pool
from lowbit.compiler.ops.window import windows
from lowbit.passes.relevance.base import Affine, Step, unbroadcast


def scatter_windows(cols: np.ndarray, spatial: Sequence[int], kernel: Sequence[int],
                    strides: Sequence[int], pads: Sequence[int],
                    dilations: Sequence[int]) -> np.ndarray:
    """Transpose of ``windows``: add ``cols[N, C, *out, *kernel]`` onto ``[N, C, *spatial]``."""
    rank = len(kernel)
    out = cols.shape[2:2 + rank]
    extent = [max(spatial[i] + pads[i] + pads[i + rank],
                  (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1)
              for i in range(rank)]
    grid = np.zeros(cols.shape[:2] + tuple(extent), dtype=cols.dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):
        picks = tuple(slice(t * d, t * d + (o - 1) * s + 1, s)
                      for t, d, o, s in zip(tap, dilations, out, strides))
        grid[(slice(None), slice(None)) + picks] += cols[(Ellipsis,) + tap]
    crop = tuple(slice(pads[i], pads[i] + spatial[i]) for i in range(rank))
    return grid[(slice(None), slice(None)) + crop]


def _fixed(step: Step, *operands: int) -> None:
    for index in operands:
        if index < len(step.live) and step.live[index]:
            raise step.fail(f"operand {index} carries relevance, but the linear rules treat it "
                            "as a fixed parameter")


def _live_x(step: Step) -> np.ndarray:
    if not step.live[0]:
        raise step.fail("operand 0 carries no relevance")
    return step.inputs[0]  # type: ignore[return-value]


def _channel_shape(ndim: int) -> tuple[int, ...]:
    return (1, -1) + (1,) * (ndim - 2)


def _linear_apply(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return x @ w.T  # type: ignore[union-attr]


def _linear_adjoint(g: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return g @ w  # type: ignore[operator]


def linear_affines(step: Step) -> tuple[Affine, ...]:
    _fixed(step, 1, 2)
    bias = step.inputs[2] if len(step.inputs) > 2 else None
    return (Affine(0, _live_x(step), step.inputs[1], bias, _linear_apply, _linear_adjoint),)


def _conv_apply(x: np.ndarray, w: np.ndarray | None, **attrs: object) -> np.ndarray:
    return eval_conv(x, w, None, **attrs)  # type: ignore[arg-type]


def _conv_adjoint(g: np.ndarray, w: np.ndarray | None, *, x_shape: tuple[int, ...],
                  strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...],
                  groups: int) -> np.ndarray:
    assert w is not None
    rank = len(x_shape) - 2
    per_group = w.shape[0] // groups
    grouped = g.reshape((g.shape[0], groups, per_group) + g.shape[2:])
    kernels = w.reshape((groups, per_group) + w.shape[1:])
    out, taps = "defhijkl"[:rank], "pqrstuvw"[:rank]
    cols = np.einsum(f"ngm{out},gmc{taps}->ngc{out}{taps}", grouped, kernels, optimize=True)
    cols = cols.reshape((g.shape[0], x_shape[1]) + cols.shape[3:])
    return scatter_windows(cols, x_shape[2:], w.shape[2:], strides, pads, dilations)


def conv_affines(step: Step) -> tuple[Affine, ...]:
    _fixed(step, 1, 2)
    x = _live_x(step)
    bias = step.inputs[2] if len(step.inputs) > 2 else None
    attrs = dict(step.attrs)
    return (Affine(0, x, step.inputs[1],
                   None if bias is None else bias.reshape(_channel_shape(x.ndim)),
                   partial(_conv_apply, **attrs),
                   partial(_conv_adjoint, x_shape=x.shape, **attrs)),)


def _swap(m: np.ndarray) -> np.ndarray:
    return np.swapaxes(m, -1, -2)


def _left_apply(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return np.matmul(x, w)


def _right_apply(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return np.matmul(w, x)


def _left_adjoint(g: np.ndarray, w: np.ndarray | None, *, shape: tuple[int, ...]) -> np.ndarray:
    return unbroadcast(np.matmul(g, _swap(w)), shape)  # type: ignore[arg-type]


def _right_adjoint(g: np.ndarray, w: np.ndarray | None, *, shape: tuple[int, ...]) -> np.ndarray:
    return unbroadcast(np.matmul(_swap(w), g), shape)  # type: ignore[arg-type]


def matmul_affines(step: Step) -> tuple[Affine, ...]:
    a, b = step.inputs[0], step.inputs[1]
    assert a is not None and b is not None
    views = []
    if step.live[0]:
        views.append(Affine(0, a, b, None, _left_apply, partial(_left_adjoint, shape=a.shape)))
    if step.live[1]:
        views.append(Affine(1, b, a, None, _right_apply, partial(_right_adjoint, shape=b.shape)))
    return tuple(views)


def _scale_apply(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    return x * w


def batch_norm_affines(step: Step) -> tuple[Affine, ...]:
    _fixed(step, 1, 2, 3, 4)
    x = _live_x(step)
    scale, shift, mean, var = step.inputs[1:5]
    k = scale / np.sqrt(var + float(step.attrs["eps"]))  # type: ignore[operator]
    c = shift - mean * k  # type: ignore[operator]
    shape = _channel_shape(x.ndim)
    return (Affine(0, x, k.reshape(shape), c.reshape(shape), _scale_apply, _scale_apply),)


def _pool_apply(x: np.ndarray, w: np.ndarray | None, **attrs: object) -> np.ndarray:
    return eval_avg_pool(x, **attrs)  # type: ignore[arg-type]


def _pool_adjoint(g: np.ndarray, w: np.ndarray | None, *, x_shape: tuple[int, ...],
                  kernel: tuple[int, ...], strides: tuple[int, ...], pads: tuple[int, ...],
                  count_include_pad: bool) -> np.ndarray:
    ones = (1,) * len(kernel)
    if count_include_pad:
        count: np.ndarray | float = float(np.prod(kernel))
    else:
        mask = np.ones((1, 1) + x_shape[2:])
        count = windows(mask, kernel, strides, pads, ones, 0.0).sum(
            axis=tuple(range(len(x_shape), len(x_shape) + len(kernel))))
    cols = np.broadcast_to((g / count)[(Ellipsis,) + (None,) * len(kernel)],
                           g.shape + tuple(kernel))
    return scatter_windows(cols, x_shape[2:], kernel, strides, pads, ones)


def avg_pool_affines(step: Step) -> tuple[Affine, ...]:
    x = _live_x(step)
    attrs = dict(step.attrs)
    return (Affine(0, x, None, None, partial(_pool_apply, **attrs),
                   partial(_pool_adjoint, x_shape=x.shape, **attrs)),)


def _reduce_apply(x: np.ndarray, w: np.ndarray | None, *, axes: tuple[int, ...],
                  keepdims: bool, mean: bool) -> np.ndarray:
    fn = np.mean if mean else np.sum
    return fn(x, axis=axes, keepdims=keepdims)


def _reduce_adjoint(g: np.ndarray, w: np.ndarray | None, *, x_shape: tuple[int, ...],
                    axes: tuple[int, ...], keepdims: bool, mean: bool) -> np.ndarray:
    full = g if keepdims else np.expand_dims(g, axes)
    count = np.prod([x_shape[a] for a in axes]) if mean else 1
    return np.broadcast_to(full / count, x_shape)


def reduce_affines(step: Step, *, mean: bool) -> tuple[Affine, ...]:
    x = _live_x(step)
    axes = tuple(sorted(normalize_axis(a, x.ndim) for a in step.attrs["axes"]))
    keepdims = bool(step.attrs["keepdims"])
    return (Affine(0, x, None, None,
                   partial(_reduce_apply, axes=axes, keepdims=keepdims, mean=mean),
                   partial(_reduce_adjoint, x_shape=x.shape, axes=axes, keepdims=keepdims,
                           mean=mean)),)


reduce_mean_affines = partial(reduce_affines, mean=True)
reduce_sum_affines = partial(reduce_affines, mean=False)
