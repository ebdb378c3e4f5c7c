"""Quantization parameters: ``real = scale * (code - zero_point)``, codes in a dtype's range.

Weights: symmetric per output channel, ``scale_c = max|W_c| / (2^(b-1) - 1)``, codes clamped to
``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (HAWQ-V3; the symmetric range keeps -W representable).
Codes narrower than their dtype (INT4 in int8) clamp to the narrower range.
Activations: per tensor, from a calibrated range that always contains 0, either symmetric
(zero point 0) or affine (the zero point puts ``lo`` at the lowest code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.ops.integer import INT_RANGES


@dataclass(frozen=True)
class QParams:
    scale: float
    zero_point: int
    dtype: str
    exact: bool = False  # codes are the real values themselves (integer graph inputs)
    bits: int | None = None  # narrower than the dtype (INT4 codes stored in int8)

    @property
    def qmin(self) -> int:
        return narrowed_range(self.dtype, self.bits)[0]

    @property
    def qmax(self) -> int:
        return narrowed_range(self.dtype, self.bits)[1]

    def code_of(self, real: float, rounding: str = "nearest") -> int:
        """The code for a real value, clamped to the dtype (ceil/floor for clamp bounds)."""
        ratio = real / self.scale
        code = {"nearest": round, "ceil": math.ceil, "floor": math.floor}[rounding](ratio)
        return int(min(max(code + self.zero_point, self.qmin), self.qmax))

    def rescaled(self, factor: float) -> "QParams":
        return QParams(self.scale * factor, self.zero_point, self.dtype, False, self.bits)


def narrowed_range(dtype: str, bits: int | None) -> tuple[int, int]:
    """The code range of ``dtype``, or of ``bits``-bit codes stored in it."""
    low, high = INT_RANGES[dtype]
    if bits is None:
        return low, high
    if low < 0:
        return max(low, -(1 << (bits - 1))), min(high, (1 << (bits - 1)) - 1)
    return low, min(high, (1 << bits) - 1)


EXACT_INT64 = QParams(1.0, 0, "int64", exact=True)


def activation_qparams(lo: float, hi: float, dtype: str, symmetric: bool,
                       bits: int | None = None) -> QParams:
    """Per-tensor qparams for ``[lo, hi]``; ``bits`` narrows the codes below the dtype's."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    qmin, qmax = narrowed_range(dtype, bits)
    if hi - lo <= 0:
        return QParams(1.0, 0 if qmin < 0 else qmin, dtype, bits=bits)
    if symmetric or qmin == 0:
        if qmin == 0:  # unsigned: only for non-negative ranges
            return QParams(hi / qmax, 0, dtype, bits=bits)
        return QParams(max(-lo, hi) / qmax, 0, dtype, bits=bits)
    scale = (hi - lo) / (qmax - qmin)
    zero_point = int(min(max(round(qmin - lo / scale), qmin), qmax))
    return QParams(scale, zero_point, dtype, bits=bits)


def quantize_weight_per_channel(weight: np.ndarray, bits: int = 8
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel codes (axis 0) and their scales."""
    limit = (1 << (bits - 1)) - 1
    flat = np.abs(weight.reshape(weight.shape[0], -1).astype(np.float64)).max(axis=1)
    scales = np.where(flat > 0, flat / limit, 1.0)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    codes = np.clip(np.rint(weight / scales.reshape(shape)), -limit, limit)
    return codes.astype(np.int8), scales


def quantize_tensor(values: np.ndarray, qparams: QParams) -> np.ndarray:
    codes = np.rint(values.astype(np.float64) / qparams.scale) + qparams.zero_point
    return np.clip(codes, qparams.qmin, qparams.qmax).astype(qparams.dtype)
