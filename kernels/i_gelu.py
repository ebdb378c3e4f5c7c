"""i-GELU: integer-only GELU (I-BERT, Kim et al., ICML 2021).

``GELU(x) = x (1 + erf(x / sqrt2)) / 2`` with I-BERT's erf approximation
``L(u) = sgn(u) [a (min(|u|, -b) + b)^2 + 1]``, ``a = -0.2888``, ``b = -1.769`` and
``sqrt2 ~ 1.4142``. Float check of that formula: ``max |x (1 + L(x/1.4142))/2 - GELU(x)|``
is 0.0182 on ``[-5, 5]``.

Integer form for codes ``q`` at scale ``S``, ``S' = S / 1.4142`` (compile time:
``b_int = floor(b / S')``, ``c_int = floor((1/a) / S'^2)``, both negative):

1. ``y = sgn(q) [(min(|q|, -b_int) + b_int)^2 + c_int]``, erf at scale ``a S'^2`` (< 0);
2. ``y_n = y >> n`` (floor), scale ``S_y = a S'^2 2^n``;
3. ``out = q (one_int - y_n)`` with ``one_int = -floor(1 / S_y)``, at scale
   ``S |S_y| / 2`` (> 0).

This is I-BERT's ``IntGELU`` with the sign folded so that the output scale is positive:
I-BERT returns ``q (y_n + floor(1/S_y)) = -out`` at the negative scale ``S S_y / 2``. I-BERT
fixes ``n = 14``, tuned to 32-bit accumulator inputs (``|c_int| ~ 2^28``); here
``n = max(0, bits(|c_int|) - erf_bits)``, so ``|y_n|`` keeps about ``erf_bits`` bits at any
input scale. With ``erf_bits = 14`` and ``S`` from about 1.61e-4 to 2.27e-4 (``|c_int|`` of 28
bits) this gives ``n = 14`` and the result equals I-BERT's bit for bit.

Bounds: ``(min(|q|, -b_int) + b_int)^2 <= b_int^2`` and ``|y| <= y_max = max(|c_int|,
|b_int^2 + c_int|)`` (both below ``2^62``, checked at compile time);
``|one_int - y_n| <= gain = one_int + (y_max >> n) + 1``; inputs must satisfy
``|q| < max_abs_input = 2^62 // gain`` (about ``2^46`` for ``erf_bits = 14``), so
``|out| < 2^62``.

Error vs exact GELU of ``x = q S`` on ``[-5, 5]``, absolute, at most
``0.0192 + 0.92 S + 1.1 S^2``: the formula's 0.0182; ``b_int``'s floor moves ``b`` by up to
``S'``, which moves ``L`` by at most ``2 |a b| S' < 1.03 S'`` for ``|u| < -b`` and so GELU by
at most ``(2.5 / 2) 1.03 S' < 0.92 S``; the floors of ``c_int``, ``y_n`` and ``one_int``
move ``L`` by at most ``3 |S_y|``, and ``|S_y| <= max(2^(1 - erf_bits), |a| S'^2)``, so GELU
by at most ``7.5 |S_y| <= 2^-10 + 1.1 S^2`` for ``erf_bits >= 14``. Measured: 0.0238 at
``S = 1/16``, 0.0174 at 0.02, 0.0182 at 0.005 (at most ``0.0182 + 0.21 S`` for ``S`` from
1e-5 to 1/4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowbit.kernels.dyadic import INT64_SAFE, check_abs_below, int_array

SQRT2 = 1.4142
ERF_A, ERF_B = -0.2888, -1.769
"""I-BERT's erf fit ``a (|u| + b)^2 + 1`` on ``|u| <= -b``."""


@dataclass(frozen=True)
class GeluPlan:
    """Compile-time constants of i-GELU."""

    b_int: int
    c_int: int
    erf_shift: int
    """``n``: the erf values are floored by ``2^n`` (I-BERT: 14)."""
    one_int: int
    """``-floor(1 / S_y) > 0``: the constant 1 at the erf's scale."""
    max_abs_input: int
    """Inputs must satisfy ``|q| < max_abs_input`` so that ``|out| < 2^62``."""
    out_scale: float
    """``S |S_y| / 2``; tiny (about ``S 2^-erf_bits``), bookkeeping only."""


def plan_gelu(scale: float, erf_bits: int = 14) -> GeluPlan:
    """Constants of i-GELU for input codes at ``scale``; ``erf_bits`` sets the erf's resolution."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive float, got {scale}")
    if not 4 <= erf_bits <= 30:
        raise ValueError(f"erf_bits must lie in [4, 30], got {erf_bits}")
    inner = scale / SQRT2
    b_int = math.floor(ERF_B / inner)
    c_int = math.floor((1.0 / ERF_A) / inner**2)
    y_max = max(-c_int, abs(b_int * b_int + c_int))
    if b_int * b_int >= INT64_SAFE or y_max >= INT64_SAFE:
        raise ValueError(f"scale {scale} too small: the erf constants overflow int64")
    erf_shift = max(0, (-c_int).bit_length() - erf_bits)
    erf_scale = ERF_A * inner**2 * 2.0**erf_shift
    one_int = -math.floor(1.0 / erf_scale)
    gain = one_int + (y_max >> erf_shift) + 1
    return GeluPlan(b_int, c_int, erf_shift, one_int, INT64_SAFE // gain,
                    scale * -erf_scale / 2.0)


def apply_gelu(plan: GeluPlan, q: np.ndarray) -> np.ndarray:
    """``out ~ GELU(q * S) / out_scale`` for integer codes ``|q| < plan.max_abs_input``."""
    q = int_array(q)
    check_abs_below(q, plan.max_abs_input, "i-GELU input")
    clipped = np.minimum(np.abs(q), -plan.b_int) + plan.b_int
    erf = clipped * clipped + plan.c_int
    erf = np.where(q < 0, -erf, erf)
    return q * (plan.one_int - (erf >> plan.erf_shift))
