"""Sliding-window geometry shared by convolution and pooling rows.

Pads follow ONNX order: all begin pads, then all end pads, one per spatial axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
                dilation: int, ceil_mode: bool = False) -> int:
    span = size + pad_begin + pad_end - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"window of {kernel} (dilation {dilation}) exceeds padded input {size}")
    steps = math.ceil(span / stride) if ceil_mode else span // stride
    if ceil_mode and steps * stride >= size + pad_begin:
        steps -= 1  # the last window must start inside the input or its begin padding
    return steps + 1


def output_spatial(spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                   pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool = False
                   ) -> tuple[int, ...]:
    rank = len(spatial)
    if not (len(kernel) == len(strides) == len(dilations) == rank and len(pads) == 2 * rank):
        raise ValueError(f"window attributes do not match {rank} spatial axes")
    return tuple(output_size(spatial[i], kernel[i], strides[i], pads[i], pads[i + rank],
                             dilations[i], ceil_mode) for i in range(rank))


def windows(x: np.ndarray, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
            dilations: Sequence[int], pad_value: float, ceil_mode: bool = False) -> np.ndarray:
    """View ``x[N, C, *spatial]`` as ``[N, C, *out, *kernel]`` windows (padding applied)."""
    rank = len(kernel)
    spatial = x.shape[2:]
    out = output_spatial(spatial, kernel, strides, pads, dilations, ceil_mode)
    extra_end = [max(0, (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
                     - spatial[i] - pads[i] - pads[i + rank]) for i in range(rank)]
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + rank] + extra_end[i]) for i in range(rank)]
    padded = np.pad(x, widths, constant_values=pad_value)
    spans = [dilations[i] * (kernel[i] - 1) + 1 for i in range(rank)]
    view = sliding_window_view(padded, spans, axis=tuple(range(2, 2 + rank)))
    picks = tuple(slice(0, out[i] * strides[i], strides[i]) for i in range(rank))
    taps = tuple(slice(None, None, dilations[i]) for i in range(rank))
    return view[(slice(None), slice(None)) + picks + taps]
