"""Block (group) weight quantization and its dyadic block multipliers.

Weights ``W [O, K]`` are split along the reduction axis into blocks of ``B`` consecutive
input channels; each (output channel ``o``, block ``j``) gets its own symmetric scale
``s[o, j] = max_{k in j} |W[o, k]| / (2^(b-1) - 1)`` and codes
``clamp(round_half_even(W / s), -(2^(b-1) - 1), 2^(b-1) - 1)`` (the HAWQ-V3 symmetric range of
``qparams``, per block instead of per row). An all-zero block has scale 0 and codes 0.

Requantization of ``acc = sum_j s_x * s[o, j] * P[o, j]`` into output codes at ``s_out``: the
ratios ``r[o, j] = s_x * s[o, j] / s_out`` become integers ``m[o, j] = round(r[o, j] * 2^c_o)``
with one shift ``c_o`` per output channel chosen so that ``max_j |m[o, j]| <= 2^29``
(``add_multipliers``' 30-bit budget); a block whose ratio rounds to 0 contributes nothing.
"""

from __future__ import annotations

import math

import numpy as np

from lowbit.kernels.dyadic import MAX_SHIFT

BLOCK_SIZES = (16, 32, 64)
MULT_BITS = 30


def block_count(in_features: int, block_size: int) -> int:
    if in_features % block_size:
        raise ValueError(f"{in_features} input features are not a multiple of {block_size}")
    return in_features // block_size


def quantize_blocks(weight: np.ndarray, block_size: int, bits: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-(row, block) codes ``[O, K]`` (int8) and scales ``[O, K / B]``."""
    limit = (1 << (bits - 1)) - 1
    rows, features = weight.shape
    blocks = weight.astype(np.float64).reshape(rows, block_count(features, block_size),
                                               block_size)
    scales = np.abs(blocks).max(axis=2) / limit
    safe = np.where(scales > 0, scales, 1.0)[:, :, None]
    codes = np.clip(np.rint(blocks / safe), -limit, limit)
    return codes.reshape(rows, features).astype(np.int8), scales


def dequantize_blocks(codes: np.ndarray, scales: np.ndarray, block_size: int) -> np.ndarray:
    return codes.astype(np.float64) * np.repeat(scales, block_size, axis=1)


def fake_quantize_blocks(weight: np.ndarray, block_size: int, bits: int) -> np.ndarray:
    """``W`` rounded to its block-quantized values (float64)."""
    return dequantize_blocks(*quantize_blocks(weight, block_size, bits), block_size)


def block_multipliers(ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer ``m [O, J]`` and per-row shifts ``c [O]`` with ``ratios ~ m / 2^c``."""
    mult = np.zeros(ratios.shape, np.int64)
    shifts = np.zeros(ratios.shape[0], np.int64)
    for row, values in enumerate(ratios.astype(np.float64)):
        largest = float(np.abs(values).max(initial=0.0))
        if largest <= 0.0:
            continue
        shift = min(MAX_SHIFT, max(0, MULT_BITS - math.ceil(math.log2(largest)) - 1))
        shifts[row] = shift
        mult[row] = np.rint(values * 2.0**shift).astype(np.int64)
    return mult, shifts
