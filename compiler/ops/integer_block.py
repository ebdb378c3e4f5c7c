"""Block-quantized linear: one weight scale per (output channel, block of ``block_size``
consecutive input channels), the integer form of group-wise weight quantization ("Accurate
Block Quantization in LLMs with Outliers"; AWQ/GPTQ group quantization).

``int_block_linear(x, w, mult)`` computes, for every output channel ``o`` and block ``j``,
the block partial ``P[..., o, j] = sum_{k in block j} (x[..., k] - x_zero_point) * w[o, k]``
(int32: at most ``block_size * 255 * 127 < 2^22`` in magnitude for 8-bit codes) and returns
the int64 accumulator ``sum_j mult[o, j] * P[..., o, j]``. ``mult[o, j]`` is the integer
numerator of the dyadic ``s_x * s_w[o, j] / s_out = mult[o, j] / 2^shift[o]``: all blocks of a
channel share the shift, so the accumulator is the output in units of ``s_out / 2^shift[o]``
and one ``requantize`` (multiplier 1, per-channel shift, bias as offset) finishes it. The
range analysis bounds both the partials (int32) and the accumulator (below 2^62).

Weights: ``weight_bits=8`` is int8 ``[O, K]``; ``weight_bits=4`` is INT4 packed two per byte
(``lowbit.compiler.packing``), uint8 ``[O, K / 2]``, unpacked exactly by every backend.
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.ops.integer import _require_int, _wide, fit
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.packing import unpack_int4
from lowbit.compiler.types import TensorType

FLOAT64_EXACT = 2**53
SUM_LIMIT = 2.0**62  # a float64 bound on sum |terms| below this proves the int64 sum exact
WEIGHT_STORAGE = {8: "int8", 4: "uint8"}
"""Weight bits -> dtype of the stored weight constant (4: packed two per byte)."""


def stored_columns(in_features: int, weight_bits: int) -> int:
    """Columns of the stored weight for ``in_features`` reduction channels."""
    return in_features // 2 if weight_bits == 4 else in_features


def weight_codes(w: np.ndarray, weight_bits: int) -> np.ndarray:
    """The int8 ``[O, K]`` codes of a stored weight (unpacked when INT4)."""
    return unpack_int4(w) if weight_bits == 4 else w.astype(np.int8)


def infer_int_block_linear(x: TensorType, w: TensorType, mult: TensorType, *,
                           x_zero_point: int, block_size: int, weight_bits: int) -> TensorType:
    _require_int(x, w, mult)
    if weight_bits not in WEIGHT_STORAGE:
        raise ValueError(f"weight_bits must be one of {sorted(WEIGHT_STORAGE)}")
    if w.dtype != WEIGHT_STORAGE[weight_bits] or w.rank != 2:
        raise ValueError(f"{weight_bits}-bit weights are {WEIGHT_STORAGE[weight_bits]} "
                         f"[out, columns], got {w}")
    features = x.shape[-1]
    if not isinstance(features, int) or block_size < 1 or features % block_size or (
            weight_bits == 4 and block_size % 2):
        raise ValueError(f"{features} input features do not split into blocks of {block_size}")
    if w.shape[1] != stored_columns(features, weight_bits):
        raise ValueError(f"weight {w} does not store {features} {weight_bits}-bit columns")
    if mult.shape != (w.shape[0], features // block_size):
        raise ValueError(f"block multipliers {mult.shape} != ({w.shape[0]}, "
                         f"{features // block_size})")
    return TensorType("int64", x.shape[:-1] + (w.shape[0],))


def block_partials(x: np.ndarray, codes: np.ndarray, x_zero_point: int, block_size: int
                   ) -> np.ndarray:
    """``P[..., o, j]``, int32-checked: each block's exact dot product. Computed as a float64
    batched matmul when every product and partial sum is an integer below 2^53 (exact in
    float64, and BLAS-fast), else in int64."""
    blocks = codes.shape[1] // block_size
    xw = _wide(x, x_zero_point)
    bound = block_size * int(np.abs(xw).max(initial=0)) * int(np.abs(codes).max(initial=0))
    dtype = np.float64 if bound < FLOAT64_EXACT else np.int64
    xb = xw.astype(dtype).reshape(-1, blocks, block_size).transpose(1, 0, 2)  # [J, M, B]
    wb = codes.astype(dtype).reshape(codes.shape[0], blocks, block_size).transpose(1, 2, 0)
    partials = np.matmul(xb, wb).transpose(1, 2, 0)  # [M, O, J]
    return fit(partials.astype(np.int64), "int32").reshape(x.shape[:-1] + partials.shape[1:])


def eval_int_block_linear(x: np.ndarray, w: np.ndarray, mult: np.ndarray, *,
                          x_zero_point: int, block_size: int, weight_bits: int) -> np.ndarray:
    partials = block_partials(x, weight_codes(w, weight_bits), x_zero_point, block_size)
    if mult.size and np.abs(mult.astype(np.int64)).max() >= 2**31:
        raise ValueError("block multipliers must lie below 2^31 in magnitude")
    terms = partials.astype(np.int64) * mult.astype(np.int64)  # each below 2^62: exact
    if terms.size and np.abs(terms).astype(np.float64).sum(axis=-1).max() >= SUM_LIMIT:
        raise ValueError("overflow: the block accumulator may leave int64")
    return terms.sum(axis=-1)


register(OpSpec("int_block_linear",
                "int64 sum over blocks j of mult[o, j] * (int32 block dot product of "
                "(x - x_zero_point) and w[o, block j]); w int8 or INT4 packed two per byte",
                ("x", "w", "mult"), infer_int_block_linear, eval_int_block_linear,
                attrs={"x_zero_point": 0, "block_size": REQUIRED, "weight_bits": 8}))
