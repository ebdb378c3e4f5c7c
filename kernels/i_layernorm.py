"""i-LayerNorm, normalization part: ``(x - mean) / sqrt(var + eps)`` over the last axis.

Integer-only after I-BERT (Kim et al., ICML 2021): integer mean, integer variance, ``isqrt``
for the standard deviation and one division per row. The affine part is left to the
compiler: it multiplies the output by ``gamma`` and adds ``beta`` with a dyadic requantization.

Run time, for codes ``|q| < 2^input_bits`` and ``C`` channels, on a grid ``2^-f`` codes fine:

1. ``mean_f = round_half_up(sum(q) 2^f / C)``, computed as
   ``(((sum + C 2^input_bits) << (f+1)) + C) // (2C) - (2^input_bits << f)``: the offset makes
   the numerator non-negative, so floor equals truncating division;
2. ``y = (q << f) - mean_f`` and ``V = max(sum(y^2) + eps_int, 1)``, ``eps_int =
   round(C eps 4^f / S^2)`` (torch's ``eps`` on the same grid; the ``max`` guards ``eps = 0``);
3. ``t = (62 - bits(V)) >> 1`` so that ``V << 2t`` lies in ``[2^60, 2^62)``, and
   ``s = isqrt(V << 2t)`` in ``[2^30, 2^31)``, ``s ~ sqrt(V) 2^t``;
4. ``factor = floor(sqrt(C) 2^55) // s``, at least ``2^24``;
5. ``out = rounding_shift(y * factor, 55 - t - k)``, ``~ y sqrt(C / V) 2^k`` at scale ``2^-k``.

Departures from I-BERT, which rounds the mean to whole codes, floors ``sqrt(sum(y^2))``
to an integer (relative error up to ``1 / sqrt(C var)`` in codes: 1 % for ``C = 16`` and a
std of 25 codes) and returns scale ``sqrt(C) / 2^30``: here the mean keeps ``f`` fractional
bits, the square root is taken to 30 significant bits, ``eps`` is honoured, and the output
scale is ``2^-k``.

Bounds: ``f`` is the largest with ``C 4^(input_bits + 1 + f) <= 2^61``, and ``C <= 4096``;
then ``|y| < 2^(input_bits + 1 + f)``, ``sum(y^2) < 2^61``, ``eps_int < 2^61`` (checked),
so ``V < 2^62``; the mean's numerator is below ``C 2^(input_bits + f + 2) <= 2^61``;
``|y| <= sqrt(V) < (s + 1) / 2^t`` gives ``|y * factor| < (1 + 2^-30) sqrt(C) 2^(55 - t)
<= 2^61.01``; ``0 <= t <= 30`` and ``k <= 25`` keep the last shift non-negative. Outputs obey
``|out| <= sqrt(C - 1) 2^k + 1``: with the default ``k = 24`` they fit int32 for ``C <= 4096``.
For ``input_bits = 22`` that is ``f = 1`` at ``C = 4096`` and ``f = 3`` at ``C = 384``; for
8-bit codes (``input_bits = 7``) ``f = 18`` at ``C = 384``.

Error vs float ``layer_norm`` (no affine, same ``eps``) of ``x = q S``, absolute, with ``z``
the exact output and ``sigma`` the row's ``sqrt(var + eps)`` in units of ``S 2^-f``
(``sigma >= 1``): at most ``2^-(k+1) + |z| 2^-23 + 0.71 / sigma + 0.375 |z| / sigma^2``
(rounding, the square root and division, the rounded mean and ``eps_int``). Measured: below
``2^-23`` for random 4-, 7- and 22-bit codes spread over the input range and ``C`` in
{16, 48, 384}; 1.2e-3 (bound 0.03) for a row only a few codes wide at ``input_bits = 22``,
``C = 384`` (``f = 3``, ``sigma ~ 24``). Rows with
``sigma < 1`` (nearly constant at the grid's resolution) fall outside the bound: one 1 among
383 zeros at ``input_bits = 22``, ``eps = 0`` (``f = 3``, ``sigma = 0.41``) is off by 0.051.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowbit.kernels.dyadic import check_abs_below, int_array, rounding_shift
from lowbit.kernels.i_sqrt import bit_length, isqrt

MAX_CHANNELS = 4096
"""``sqrt(C) <= 2^6`` keeps ``y * factor`` below ``2^62``."""
FACTOR_SHIFT = 55
MAX_OUT_FRAC_BITS = 25


@dataclass(frozen=True)
class LayerNormPlan:
    """Compile-time constants of the integer normalization."""

    channels: int
    input_bits: int
    """Inputs must satisfy ``|q| < 2^input_bits``."""
    mean_frac_bits: int
    """``f``: fractional bits of the mean, in codes."""
    eps_int: int
    """``round(C eps 4^f / S^2)``: ``eps`` in units of ``(S 2^-f)^2``, times ``C``."""
    sqrt_c: int
    """``floor(sqrt(C) 2^55)``, exact (``math.isqrt(C << 110)``)."""
    out_frac_bits: int
    """``k``: the output scale is ``2^-k``."""
    out_scale: float


def plan_layernorm(scale: float, channels: int, input_bits: int = 22, eps: float = 1e-5,
                   out_frac_bits: int = 24) -> LayerNormPlan:
    """Constants for normalizing ``channels`` codes at ``scale`` with ``|q| < 2^input_bits``."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive float, got {scale}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise ValueError(f"channels must lie in [1, {MAX_CHANNELS}], got {channels}")
    if not 0 <= out_frac_bits <= MAX_OUT_FRAC_BITS:
        raise ValueError(f"out_frac_bits must lie in [0, {MAX_OUT_FRAC_BITS}]")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a non-negative float, got {eps}")
    if input_bits < 1:
        raise ValueError(f"input_bits must be positive, got {input_bits}")
    frac_bits = -1
    while channels << (2 * (input_bits + 2 + frac_bits)) <= 1 << 61:
        frac_bits += 1
    if frac_bits < 0:
        raise ValueError(f"{channels} channels of {input_bits}-bit inputs overflow the variance")
    eps_int = math.floor(channels * eps * 4.0**frac_bits / scale**2 + 0.5)
    if eps_int >= 1 << 61:
        raise ValueError(f"eps {eps} is too large for scale {scale}: the output would be ~0")
    return LayerNormPlan(channels, input_bits, frac_bits, eps_int,
                         math.isqrt(channels << (2 * FACTOR_SHIFT)), out_frac_bits,
                         2.0**-out_frac_bits)


def apply_layernorm(plan: LayerNormPlan, q: np.ndarray) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps)`` over the last axis, as codes at ``plan.out_scale``."""
    q = int_array(q)
    if q.shape[-1] != plan.channels:
        raise ValueError(f"expected {plan.channels} channels, got {q.shape[-1]}")
    check_abs_below(q, 1 << plan.input_bits, "i-LayerNorm input")
    c, f, offset = plan.channels, plan.mean_frac_bits, 1 << plan.input_bits
    total = q.sum(axis=-1, keepdims=True)
    mean = ((((total + c * offset) << (f + 1)) + c) // (2 * c)) - (offset << f)
    y = (q << f) - mean
    var = np.maximum((y * y).sum(axis=-1, keepdims=True) + plan.eps_int, 1)
    shift = (62 - bit_length(var)) >> 1
    factor = plan.sqrt_c // isqrt(var << (2 * shift))
    return rounding_shift(y * factor, FACTOR_SHIFT - shift - plan.out_frac_bits)
