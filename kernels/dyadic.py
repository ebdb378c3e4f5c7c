"""Dyadic numbers and the one rounding rule shared by every lowbit backend (HAWQ-V3 §3.1).

Rounding rule. Every right shift that drops bits in lowbit (the interpreter, ONNX, TVM)
rounds half toward +infinity:

    rounding_shift(x, c) = floor((x + 2^(c-1)) / 2^c)   for c >= 1,   x   for c == 0,

computed as ``(x + (1 << (c - 1))) >> c``, where ``>>`` is the arithmetic shift (floor). So
-3/2 -> -1, -1/2 -> 0, 1/2 -> 1. This is TVM's ``UPWARD`` mode of ``FixedPointMultiply``;
torch.round (half to even) differs on ties, so emulations must not use it.

Dyadic numbers. A positive float ``m`` is approximated by ``b / 2^c`` with an integer
multiplier ``b`` in ``[2^(bits-1), 2^bits)`` (``bits`` = 31 by default) and a shift
``0 <= c <= 62``. From ``frexp(m) = mant * 2^exp`` (mant in [0.5, 1)):
``b = round_half_up(mant * 2^bits)`` and ``c = bits - exp``. When ``mant * 2^bits`` rounds
up to ``2^bits``, ``b`` is halved and ``c`` decremented, as upstream TVM does
(``src/relay/qnn/utils.cc``); HAWQ's ``batch_frexp`` keeps ``b = 2^31``, which does not fit
int32. Error bound: ``|b / 2^c - m| <= 2^-bits * m`` (half a unit in the last place of
``mant * 2^bits >= 2^(bits-1)``).

Integer contract. Run-time functions take integer numpy arrays and use only ``+ - *``,
comparisons, ``where``, shifts by non-negative amounts and floor division. They accept int64
arrays, and object arrays of Python ints too, so that tests can re-run a kernel with unbounded
integers and prove that no int64 intermediate wrapped around.
"""

from __future__ import annotations

import numpy as np

INT64_SAFE = 1 << 62
"""Magnitude bound kept by every int64 intermediate in lowbit kernels (one bit of headroom)."""

MAX_SHIFT = 62


def int_array(x: object) -> np.ndarray:
    """``x`` as an integer array: int64, or object (Python ints) left as is; floats are refused."""
    array = np.asarray(x)
    if array.dtype == object:
        return array
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"integer kernel got dtype {array.dtype}; run-time values must be integers")
    if not np.can_cast(array.dtype, np.int64) and array.size and array.max() >= 1 << 63:
        raise ValueError("uint64 value does not fit int64")
    return array.astype(np.int64, copy=False)


def check_abs_below(x: np.ndarray, bound: int, what: str) -> None:
    """Raise ValueError unless every ``|x| < bound`` (a kernel's documented precondition)."""
    if x.size and int(np.abs(x).max()) >= bound:
        raise ValueError(f"{what}: |value| must stay below {bound}, got {int(np.abs(x).max())}")


def rounding_shift(x: np.ndarray | int, c: np.ndarray | int) -> np.ndarray:
    """``floor((x + 2^(c-1)) / 2^c)`` (``x`` when ``c == 0``): divide by ``2^c``, ties to +inf.

    ``c`` broadcasts against ``x`` (per-channel shifts). Preconditions: ``0 <= c <= 62`` and
    ``|x| < 2^62``, so that ``x + 2^(c-1) < 2^62 + 2^61`` fits int64.
    """
    x, c = int_array(x), int_array(c)
    if c.size and (int(c.min()) < 0 or int(c.max()) > MAX_SHIFT):
        raise ValueError(f"shift must lie in [0, {MAX_SHIFT}]")
    check_abs_below(x, INT64_SAFE, "rounding_shift input")
    half = (1 << c) >> 1
    return (x + half) >> c


def dyadic(m: float | np.ndarray, bits: int = 31) -> tuple[np.ndarray, np.ndarray]:
    """Multipliers ``b`` and shifts ``c`` (int64 arrays shaped like ``m``) with ``m ~ b / 2^c``.

    Compile time only (uses floats). ``m > 0`` gives ``2^(bits-1) <= b < 2^bits`` and relative
    error at most ``2^-bits``; ``m == 0`` gives ``b = c = 0``. ``1 <= bits <= 31`` (15 suits an
    int32-only path). Raises ValueError for negative or non-finite ``m``, and for ``m`` whose
    shift leaves [0, 62]:

    - ``m >= 2^bits`` (after rounding) would need ``c < 0``: split the rescale in two, or
      raise the output scale;
    - ``m < 2^(bits - 63)`` would need ``c > 62``. For ``bits = 31`` and ``|acc| <= 2^31``,
      ``|acc * m| < 1/2`` then rounds to 0, so the caller may replace ``m`` by 0 (exact for
      such accumulators); that choice is the caller's and never made silently here.
    """
    if not 1 <= bits <= 31:
        raise ValueError(f"bits must lie in [1, 31], got {bits}")
    m = np.asarray(m, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        raise ValueError("dyadic multiplier must be finite")
    if np.any(m < 0):
        raise ValueError("dyadic multiplier must be non-negative (fold the sign into the weights)")
    mant, exp = np.frexp(m)
    b = np.floor(np.ldexp(mant, bits) + 0.5).astype(np.int64)
    c = bits - exp.astype(np.int64)
    carry = b == (1 << bits)
    b = np.where(carry, b >> 1, b)
    c = np.where(carry, c - 1, c)
    zero = m == 0
    b, c = np.where(zero, 0, b), np.where(zero, 0, c)
    if np.any(c < 0):
        raise ValueError(f"multiplier {float(m.max())} >= 2^{bits} cannot be represented")
    if np.any(c > MAX_SHIFT):
        tiny = float(m[c > MAX_SHIFT].min())
        raise ValueError(f"multiplier {tiny} < 2^{bits - 63} needs a shift above {MAX_SHIFT}")
    return b, c


def requantize(acc: np.ndarray, b: np.ndarray | int, c: np.ndarray | int) -> np.ndarray:
    """``rounding_shift(acc * b, c)``: rescale an accumulator by the dyadic number ``b / 2^c``.

    Bound: ``|acc| <= 2^31`` (the whole int32 range) and ``0 <= b < 2^31`` give
    ``|acc * b| < 2^62``, which ``rounding_shift`` needs. (``|acc| < 2^32`` would keep the
    product inside int64 but not the added rounding half.) ``b`` and ``c`` broadcast.
    """
    acc, b = int_array(acc), int_array(b)
    check_abs_below(acc, (1 << 31) + 1, "requantize accumulator")
    if b.size and (int(b.min()) < 0 or int(b.max()) >= 1 << 31):
        raise ValueError("dyadic multiplier must lie in [0, 2^31)")
    return rounding_shift(acc * b, c)

