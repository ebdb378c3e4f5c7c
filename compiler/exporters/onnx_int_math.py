"""Exact int64 building blocks in standard ONNX ops: shifts, sums, bit length, square root.

Each function mirrors a numpy expression of ``lowbit.kernels`` and emits ONNX nodes that give
the same integers. What ONNX and onnxruntime lack, and how it is made up for:

- ``BitShift`` is unsigned only. ``x << k`` is ``x * 2^k``. ``x >> c`` (arithmetic, i.e.
  ``floor(x / 2^c)``) is ``(x - x mod 2^c) / 2^c``: ``Mod`` with ``fmod=0`` takes the
  divisor's sign, so the remainder is in ``[0, 2^c)`` and the division is exact (``Div``'s
  truncation does not matter). On values known to be non-negative a plain ``Div`` is floor.
  A shift that is a run-time tensor looks ``2^c`` up in a constant table (``Gather``).
- onnxruntime's CPU ``ReduceSum`` on int32/int64 goes through float64: sums (and partial sums)
  at or above ``2^53`` are rounded, and int32 overflow saturates instead of wrapping.
  ``exact_sum`` uses it directly only when a static bound keeps every partial sum below
  ``2^53``; otherwise it splits the values into 21-bit limbs, sums each limb (exact for up to
  ``2^31`` terms) and recombines them with int64 ``Mul``/``Add``, which wrap like numpy.
- Elementwise int64 ``Add Sub Mul Div Mod Min Max Abs Neg Where`` and comparisons, int64
  ``ReduceMax``, ``MatMul`` and ``Gather`` are exact in onnxruntime (probed to ``2^62``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lowbit.compiler.exporters.onnx_emit import Emitter
from lowbit.kernels.dyadic import MAX_SHIFT
from lowbit.kernels.i_sqrt import NEWTON_STEPS

POW2 = np.array([1 << i for i in range(MAX_SHIFT + 1)], np.int64)
"""``2^i`` for ``0 <= i <= 62``: the table for run-time shift amounts."""
BELOW_POW2 = np.array([(1 << i) - 1 for i in range(64)], np.int64)
"""``2^i - 1`` for ``0 <= i <= 63``: ``n >= 2^i`` is ``n > BELOW_POW2[i]``, even for ``i = 63``."""
DOUBLE_EXACT = 1 << 53
LIMB_BITS = 21

Shift = int | np.ndarray | str
"""A shift amount: a constant (Python int or int array, broadcasting) or an int64 ONNX value."""


def shift_left(em: Emitter, x: str, k: int) -> str:
    """``x << k`` for a constant ``k >= 0`` (``x * 2^k``)."""
    return em.mul(x, 1 << k)


def pow2(em: Emitter, c: Shift) -> str:
    """``2^c`` as an int64 value: a constant for a constant ``c``, else a table lookup."""
    if isinstance(c, str):
        return em.gather(POW2, c)
    return em.const(np.left_shift(np.int64(1), _checked(c)), "int64", "pow2")


def floor_shift(em: Emitter, x: str, c: Shift) -> str:
    """``x >> c``, the arithmetic (flooring) right shift, for any sign of ``x``."""
    if _is_const_zero(c):
        return x
    return _floor_div(em, x, pow2(em, c))


def floor_shift_nonneg(em: Emitter, x: str, c: Shift) -> str:
    """``x >> c`` for ``x >= 0``, where truncating division is floor."""
    return x if _is_const_zero(c) else em.div(x, pow2(em, c))


def rounding_shift(em: Emitter, x: str, c: Shift) -> str:
    """``(x + 2^(c-1)) >> c`` (``x`` where ``c == 0``): ``kernels.dyadic.rounding_shift``."""
    if _is_const_zero(c):
        return x
    p = pow2(em, c)
    if isinstance(c, str):
        half = em.div(p, 2)  # 2^c // 2: 0 for c == 0
    else:
        half = em.const(np.left_shift(np.int64(1), _checked(c)) >> 1, "int64", "half")
    return _floor_div(em, em.add(x, half), p)


def _floor_div(em: Emitter, x: str, p: str) -> str:
    """``floor(x / p)`` for ``p > 0``: ``x - x mod p`` is a multiple of ``p``, so Div is exact."""
    return em.div(em.sub(x, em.mod(x, p)), p)


def _checked(c: int | np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.int64)
    if c.size and (c.min() < 0 or c.max() > MAX_SHIFT):
        raise ValueError(f"shift must lie in [0, {MAX_SHIFT}]")
    return c


def exact_sum(em: Emitter, x: str, axes: Sequence[int], keepdims: bool,
              bound: int | None) -> str:
    """int64 sum of ``x`` over ``axes``, exact (modulo ``2^64``, like numpy).

    ``bound``: a static upper bound on the sum of ``|x|`` over any reduced slice, or ``None``
    when unknown; below ``2^53`` a single ``ReduceSum`` is exact."""
    if bound is not None and bound < DOUBLE_EXACT:
        return em.reduce_sum(x, axes, keepdims)
    base = 1 << LIMB_BITS
    low = em.mod(x, base)                       # in [0, 2^21)
    rest = em.div(em.sub(x, low), base)         # exact, |rest| < 2^42
    middle = em.mod(rest, base)                 # in [0, 2^21)
    high = em.div(em.sub(rest, middle), base)   # |high| <= 2^21
    sums = [em.reduce_sum(limb, axes, keepdims) for limb in (high, middle, low)]
    return em.add(em.mul(em.add(em.mul(sums[0], base), sums[1]), base), sums[2])


def bit_length(em: Emitter, n: str) -> str:
    """``kernels.i_sqrt.bit_length``: ``int.bit_length`` for ``0 <= n < 2^63``, by the same
    binary search (``(n >> s) > 0`` is ``n > 2^s - 1``)."""
    top: str | int = 0
    for step in (32, 16, 8, 4, 2, 1):
        if isinstance(top, int):
            candidate: str | int = top + step
            bound: str | int = int(BELOW_POW2[top + step])
        else:
            candidate = em.add(top, step)
            bound = em.gather(BELOW_POW2, candidate)
        top = em.where(em.greater(n, bound), candidate, top)
    return em.where(em.greater(n, 0), em.add(top, 1), 0)


def isqrt(em: Emitter, n: str) -> str:
    """``kernels.i_sqrt.isqrt``: ``floor(sqrt(n))`` for ``0 <= n < 2^62``, Newton unrolled."""
    x = em.gather(POW2, em.div(em.add(bit_length(em, n), 1), 2))
    for _ in range(NEWTON_STEPS):
        x = em.minimum(x, em.div(em.add(x, em.div(n, em.maximum(x, 1))), 2))
    return x


def byte_limbs(em: Emitter, x: str, low: int, high: int) -> list[tuple[str, int]]:
    """Split int64 ``x`` with values in ``[low, high]`` into 8-bit limbs: pairs ``(limb,
    weight)`` with ``x == sum(limb * weight)``; the top limb is int8, the others uint8."""
    if 0 <= low and high < 256:
        return [(em.cast(x, "uint8"), 1)]
    count = _limb_count(low, high)
    limbs: list[tuple[str, int]] = []
    for i in range(count - 1):
        byte = em.mod(x, 256)
        limbs.append((em.cast(byte, "uint8"), 1 << (8 * i)))
        x = em.div(em.sub(x, byte), 256)
    limbs.append((em.cast(x, "int8"), 1 << (8 * (count - 1))))
    return limbs


def const_byte_limbs(array: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """``byte_limbs`` of a constant integer array, computed here."""
    x = array.astype(np.int64)
    low, high = (int(x.min()), int(x.max())) if x.size else (0, 0)
    if 0 <= low and high < 256:
        return [(x.astype(np.uint8), 1)]
    limbs: list[tuple[np.ndarray, int]] = []
    count = _limb_count(low, high)
    for i in range(count - 1):
        limbs.append(((x % 256).astype(np.uint8), 1 << (8 * i)))
        x = x >> 8
    limbs.append((x.astype(np.int8), 1 << (8 * (count - 1))))
    return limbs


def _limb_count(low: int, high: int) -> int:
    """Bytes of the smallest signed width that holds ``[low, high]``."""
    count = 1
    while not -(1 << (8 * count - 1)) <= low <= high < 1 << (8 * count - 1):
        count += 1
    return count


def _is_const_zero(c: Shift) -> bool:
    return not isinstance(c, str) and not np.any(np.asarray(c))
