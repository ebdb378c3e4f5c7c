"""i-exp: integer-only ``exp(x)`` for ``x = q * S <= 0`` (I-BERT, Kim et al., ICML 2021).

Write ``x = -z ln2 + p`` with ``z >= 0`` an integer and ``p`` in ``(-ln2, 0]``; then
``exp(x) = exp(p) / 2^z`` and ``exp(p) ~ 0.35815147 p^2 + 0.96963238 p + 1``
(I-BERT's second-order fit, max relative error 0.331 % on ``[-ln2, 0]``).

Run time, with ``qf = q << t`` on the internal grid ``S_f = S / 2^t``:

1. ``qf = max(q, q_min) << t`` (I-BERT's clamp ``x >= 30 * x0``, so ``z <= 30``);
2. ``z = qf // x0`` and ``r = qf - z * x0`` in ``(x0, 0]``, with ``x0 = floor(-0.6931 / S_f)``;
3. ``poly = r * (r + b_int) + c_int``, scale ``0.35815147 * S_f^2``;
4. ``e = (poly << k) >> z``, i.e. ``floor(poly * 2^(k - z))``, scale ``0.35815147 S_f^2 / 2^k``.

Departures from I-BERT, both decided at compile time: (a) ``t`` (I-BERT: 0) makes the grid
step ``S_f <= max_step``; I-BERT's per-step error ``|x0 S + ln2| <= S`` compounds ``z``
times, which at ``S = 1/16`` would give 2x errors at ``x = -10``; (b) ``k = min(30, 62 -
bits(c_int))`` instead of I-BERT's fixed 30, so that ``e`` stays below ``2^62``. With ``t = 0``
and ``k = 30`` the result equals I-BERT's ``int_exp`` bit for bit.

Bounds (checked by ``plan_exp``): ``0 <= poly <= c_int`` (``r(r + b_int) <= 0`` on the
range of ``r``), ``0 <= e <= c_int << k < 2^62``, ``|qf| <= 30 |x0|``, ``0 <= z <= 30``.
``qf`` and ``x0`` are both non-positive, so floor division equals truncating division.

Error vs ``exp(x)`` for ``x`` in ``[-10, 0]``, relative, at most 0.41 %:
0.331 % from the polynomial, at most ``15 * 4.72e-5`` because the grid's ``|x0| S_f`` lies in
``[0.6931, 0.6931 + S_f)`` instead of ln 2 (so ``max_step <= 2^-16`` keeps every step within
4.72e-5), and below ``2^-20`` from flooring the constants and the result; measured 0.39 %.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lowbit.kernels.dyadic import int_array

LN2 = 0.6931
"""I-BERT's value of ln 2 (``x0 = -0.6931``); kept so that ``t = 0`` reproduces I-BERT."""
POLY_A, POLY_B, POLY_C = 0.35815147, 0.96963238, 1.0
"""I-BERT's fit ``exp(p) ~ POLY_A p^2 + POLY_B p + POLY_C`` on ``[-ln2, 0]``."""
MAX_HALVINGS = 30
"""I-BERT's clamp ``x >= 30 x0``: below ``exp(-30 ln2) ~ 1e-9`` the result is held constant."""
MAX_OUT_SHIFT = 30


@dataclass(frozen=True)
class ExpPlan:
    """Compile-time constants of i-exp (all Python ints except the bookkeeping scale)."""

    in_shift: int
    """``t``: the input codes are moved onto the grid ``S / 2^t``."""
    q_min: int
    """Input clamp, in input codes: ``q_min << t >= 30 * x0``."""
    x0: int
    """``floor(-0.6931 / S_f) < 0``: minus ln 2 on the grid."""
    b_int: int
    c_int: int
    out_shift: int
    """``k``: the result carries ``k`` extra fractional bits."""
    out_scale: float
    """``0.35815147 * S_f^2 / 2^k``."""


def plan_exp(scale: float, max_step: float = 2.0**-16) -> ExpPlan:
    """Constants of i-exp for input codes at ``scale``; ``max_step`` bounds the grid step."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive float, got {scale}")
    if not 0 < max_step <= 0.5:
        raise ValueError(f"max_step must lie in (0, 0.5], got {max_step}")
    in_shift = max(0, _ceil_log2(scale / max_step))
    step = math.ldexp(scale, -in_shift)
    x0 = math.floor(-LN2 / step)
    b_int = math.floor(POLY_B / POLY_A / step)
    c_int = math.floor(POLY_C / POLY_A / step**2)
    out_shift = min(MAX_OUT_SHIFT, 62 - c_int.bit_length())
    if out_shift < 0:
        raise ValueError(f"scale {scale} too small: the polynomial constant overflows int64")
    r_low = x0 + 1
    if 2 * -r_low > b_int or r_low * (r_low + b_int) + c_int < 0:
        raise ValueError(f"scale {scale}: polynomial not monotone and positive on (x0, 0]")
    q_min = -((MAX_HALVINGS * -x0) >> in_shift)
    return ExpPlan(in_shift, q_min, x0, b_int, c_int, out_shift,
                   POLY_A * step**2 / 2.0**out_shift)


def apply_exp(plan: ExpPlan, q: np.ndarray) -> np.ndarray:
    """``e ~ exp(q * S) / out_scale`` for integer codes ``q <= 0``; ``0 <= e < 2^62``."""
    q = int_array(q)
    if q.size and int(q.max()) > 0:
        raise ValueError("i-exp needs q <= 0 (subtract the maximum first)")
    qf = np.maximum(q, plan.q_min) << plan.in_shift
    z = qf // plan.x0
    r = qf - z * plan.x0
    poly = r * (r + plan.b_int) + plan.c_int
    return (poly << plan.out_shift) >> z


def _ceil_log2(value: float) -> int:
    """Smallest integer ``e`` with ``2^e >= value`` (``value > 0``), exact for any float."""
    mant, exp = math.frexp(value)
    return exp - 1 if mant == 0.5 else exp
