"""i-softmax: integer-only softmax along one axis (I-BERT, Kim et al., ICML 2021).

Run time, for integer codes ``q`` at scale ``S`` and a row of ``N <= 2^15`` elements:

1. ``d = q - max(q)`` (so ``d <= 0``), then ``e = i-exp(d)`` (see ``i_exp``), ``e < 2^B``;
2. ``e16 = e >> (B - 16)``: a compile-time shift where I-BERT requantizes to 16 bits; the row
   maximum maps into ``[2^15, 2^16)`` and every ``e16 < 2^16``, so ``sum(e16) < 2^31`` fits
   int32 for ``N <= 2^15``;
3. ``factor = 2^32 // sum(e16)``, at most ``2^17`` because the row maximum gives
   ``sum >= 2^15``;
4. ``out = min((e16 * factor) >> (32 - out_bits), 2^out_bits - 1)`` at scale ``2^-out_bits``.
   ``e16 * factor <= 2^32``. A row with one dominant element would map it to
   ``2^out_bits`` (1.0), so the clamp keeps the output within ``out_bits`` unsigned bits
   (1.0 reads as 255/256 for ``out_bits = 8``).

Every step floors, as in I-BERT. Row sums: ``2^32 / sum - 1 < factor <= 2^32 / sum`` and
each output floor loses less than one unit, so a row of outputs sums to at most
``2^out_bits`` and at least ``2^out_bits - N (1 + 2^(out_bits - 16))``.

Error vs float softmax ``p`` of ``q * S``, absolute, per element, at most
``2^(1 - out_bits) + p (0.01 + 1.5 N 2^-15) + 2^-15``: one unit for the
output floor and one for the clamp; i-exp's relative error (below 0.5 % on
``[-30 ln2, 0]``) on numerator and denominator; ``factor``'s floor (relative
``sum / 2^32 <= N 2^-16``) and the floors of ``e16`` (each below one unit of a row sum of at
least ``2^15``). Measured: at most 0.0045 (about half the bound) for 8 bits and
``N <= 384``, i.e. I-BERT's level of about 1/256 plus the exponential's error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.kernels.dyadic import INT64_SAFE, check_abs_below, int_array
from lowbit.kernels.i_exp import ExpPlan, apply_exp, plan_exp

SUM_BITS = 16
"""Width of the renormalized exponentials ``e16``."""
MAX_ROW = 1 << 15
"""Longest row: ``2^15`` values below ``2^16`` sum below ``2^31``."""
FACTOR_BITS = 32


@dataclass(frozen=True)
class SoftmaxPlan:
    """Compile-time constants of i-softmax."""

    exp: ExpPlan
    sum_shift: int
    """``B - 16``: takes i-exp's results (below ``2^B``) to 16 bits."""
    out_bits: int
    out_scale: float
    """``2^-out_bits``."""


def plan_softmax(scale: float, out_bits: int = 8) -> SoftmaxPlan:
    """Constants of i-softmax for input codes at ``scale``; the output has ``out_bits`` bits."""
    if not 1 <= out_bits <= SUM_BITS:
        raise ValueError(f"out_bits must lie in [1, {SUM_BITS}], got {out_bits}")
    exp = plan_exp(scale)
    exp_bits = exp.c_int.bit_length() + exp.out_shift
    if exp_bits < SUM_BITS:
        raise ValueError(f"scale {scale}: i-exp keeps only {exp_bits} bits")
    return SoftmaxPlan(exp, exp_bits - SUM_BITS, out_bits, 2.0**-out_bits)


def apply_softmax(plan: SoftmaxPlan, q: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax of ``q * S`` along ``axis`` as codes at ``plan.out_scale``.

    Preconditions: ``|q| < 2^62`` (so ``q - max(q)`` cannot wrap) and at most ``2^15``
    elements along ``axis``.
    """
    q = int_array(q)
    if q.shape[axis] > MAX_ROW:
        raise ValueError(f"softmax rows longer than {MAX_ROW} would overflow the int32 sum")
    check_abs_below(q, INT64_SAFE, "softmax input")
    e16 = apply_exp(plan.exp, q - q.max(axis=axis, keepdims=True)) >> plan.sum_shift
    factor = (1 << FACTOR_BITS) // e16.sum(axis=axis, keepdims=True)
    out = (e16 * factor) >> (FACTOR_BITS - plan.out_bits)
    return np.minimum(out, (1 << plan.out_bits) - 1)
