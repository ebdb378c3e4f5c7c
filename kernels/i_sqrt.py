"""Integer square root by a fixed number of Newton steps (I-BERT, Kim et al., ICML 2021).

Invariant: ``isqrt(n) == math.isqrt(n)`` exactly for every ``0 <= n < 2^62``, elementwise.

Start from ``x0 = 2^ceil(bits(n) / 2)``, so ``sqrt(n) <= x0 <= 2 sqrt(n)`` (relative error
``e0 <= 1``, reached at ``n = 4^j``), and iterate ``x <- min(x, (x + n // x) >> 1)``.
Proof that ``NEWTON_STEPS = 6`` suffices:

- the real Newton map ``g(x) = (x + n/x) / 2`` sends the relative error ``e`` to
  ``e^2 / (2 (1 + e))``; from ``e0 = 1`` this gives 1/4, 0.025, 3.05e-4, 4.7e-8, 1.1e-15;
- ``floor((x + floor(n/x)) / 2) = floor(g(x))`` and ``g`` is increasing on ``x >= sqrt(n)``,
  so the integer iterate never exceeds the real one, and it never drops below
  ``isqrt(n)`` (AM-GM); the ``min`` keeps it from oscillating between ``isqrt(n)`` and
  ``isqrt(n) + 1`` (``n = 3``: 2 -> 1 -> 2);
- after 5 steps the real error is below ``1.1e-15 * 2^31 < 1``, so ``x <= isqrt(n) + 1``;
  one more step from ``isqrt(n) + 1`` lands on ``isqrt(n)`` (``g(s+1) < s + 1`` whenever
  ``(s+1)^2 > n``).

Bounds: ``x0 <= 2^31`` and ``x + n // x < 2^62 + 2^31``; all values are non-negative, so
floor division equals the truncating division of ONNX and TVM. ``n == 0`` goes through
the divisor ``max(x, 1)``.
"""

from __future__ import annotations

import numpy as np

from lowbit.kernels.dyadic import INT64_SAFE, int_array

NEWTON_STEPS = 6


def bit_length(n: np.ndarray) -> np.ndarray:
    """``int.bit_length`` elementwise for ``0 <= n < 2^63``, by a binary search of 6 shifts."""
    n = int_array(n)
    top = np.zeros_like(n)
    for step in (32, 16, 8, 4, 2, 1):
        top = np.where((n >> (top + step)) > 0, top + step, top)
    return np.where(n > 0, top + 1, 0)


def isqrt(n: np.ndarray) -> np.ndarray:
    """``floor(sqrt(n))`` elementwise for integer ``0 <= n < 2^62``; see the module proof."""
    n = int_array(n)
    if n.size and (int(n.min()) < 0 or int(n.max()) >= INT64_SAFE):
        raise ValueError("isqrt needs 0 <= n < 2^62")
    x = 1 << ((bit_length(n) + 1) >> 1)
    for _ in range(NEWTON_STEPS):
        x = np.minimum(x, (x + n // np.maximum(x, 1)) >> 1)
    return x
