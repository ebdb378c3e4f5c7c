"""Dyadic requantization against exact rational arithmetic (``fractions.Fraction``)."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernels import dyadic, requantize, rounding_shift

INT32 = st.integers(-(1 << 31), (1 << 31) - 1)
MULTIPLIER = st.integers(1 << 30, (1 << 31) - 1)
SHIFT = st.integers(0, 62)
FAST = settings(max_examples=200, deadline=None)


def round_half_up(value: Fraction) -> int:
    """The lowbit rule stated independently: floor(value + 1/2)."""
    return math.floor(value + Fraction(1, 2))


def exact_requantize(acc: int, b: int, c: int) -> int:
    return round_half_up(Fraction(acc * b, 1 << c))


def test_ties_round_toward_plus_infinity():
    x = np.array([-3, -1, 1, 3, -2, 2, -5, 5])
    assert rounding_shift(x, 1).tolist() == [-1, 0, 1, 2, -1, 1, -2, 3]
    assert rounding_shift(np.array([-6, -2, 2, 6]), 2).tolist() == [-1, 0, 1, 2]
    assert rounding_shift(x, 0).tolist() == x.tolist()


@FAST
@given(st.lists(st.tuples(st.integers(-(1 << 62) + 1, (1 << 62) - 1), SHIFT), min_size=1,
                max_size=64))
def test_rounding_shift_is_exact_rational_rounding(cases):
    x, c = (np.array(column, dtype=np.int64) for column in zip(*cases))
    want = [round_half_up(Fraction(int(v), 1 << int(s))) for v, s in cases]
    assert rounding_shift(x, c).tolist() == want


@FAST
@given(st.lists(st.tuples(INT32, MULTIPLIER, SHIFT), min_size=1, max_size=64))
def test_requantize_is_exact_rational_rounding(cases):
    acc, b, c = (np.array(column, dtype=np.int64) for column in zip(*cases))
    got = requantize(acc, b, c)
    assert got.dtype == np.int64
    assert got.tolist() == [exact_requantize(*case) for case in cases]


def test_requantize_extremes_stay_inside_int64():
    acc = np.array([-(1 << 31), (1 << 31) - 1, 1 << 31, -(1 << 31) + 1] * 63, dtype=np.int64)
    c = np.repeat(np.arange(63), 4)
    b = np.full_like(acc, (1 << 31) - 1)
    assert int(np.abs(acc.astype(object) * b.astype(object)).max()) < 1 << 62
    got = requantize(acc, b, c)
    unbounded = requantize(acc.astype(object), b.astype(object), c.astype(object))
    assert got.tolist() == unbounded.tolist()
    assert got.tolist() == [exact_requantize(int(a), int(m), int(s)) for a, m, s in zip(acc, b, c)]


def test_requantize_rejects_accumulators_beyond_int32():
    with pytest.raises(ValueError):
        requantize(np.array([(1 << 31) + 1]), 1 << 30, 4)
    with pytest.raises(ValueError):
        requantize(np.array([1]), 1 << 31, 4)


@FAST
@given(st.lists(st.floats(1e-9, 1e4), min_size=1, max_size=32))
def test_dyadic_relative_error_within_2_pow_minus_31(ms):
    b, c = dyadic(np.array(ms))
    assert b.dtype == np.int64 and c.dtype == np.int64
    assert ((b >= 1 << 30) & (b < 1 << 31)).all()
    assert ((c >= 0) & (c <= 62)).all()
    for m, bi, ci in zip(ms, b.tolist(), c.tolist()):
        exact = Fraction(m)
        assert abs(Fraction(bi, 1 << ci) - exact) <= exact / (1 << 31)


@FAST
@given(st.floats(1e-9, 1e4))
def test_dyadic_with_15_bit_multipliers(m):
    b, c = dyadic(m, bits=15)
    assert (1 << 14) <= int(b) < (1 << 15)
    assert abs(Fraction(int(b), 1 << int(c)) - Fraction(m)) <= Fraction(m) / (1 << 15)


def test_mantissa_rounding_up_to_2_pow_31_is_halved():
    # mant * 2^31 = 2^31 - 1/4 rounds to 2^31: TVM halves b and lowers c (HAWQ would keep 2^31).
    m = 1 - 2.0**-33
    assert math.frexp(m)[0] * 2**31 == 2**31 - 0.25
    b, c = dyadic(m)
    assert (int(b), int(c)) == (1 << 30, 30)
    b, c = dyadic(m * 2.0**-20)
    assert (int(b), int(c)) == (1 << 30, 50)
    b, c = dyadic(1 - 2.0**-17, bits=15)
    assert (int(b), int(c)) == (1 << 14, 14)


def test_dyadic_zero_and_invalid_multipliers():
    b, c = dyadic(np.array([0.0, 0.5]))
    assert b.tolist() == [0, 1 << 30] and c.tolist() == [0, 31]
    for bad in (-1.0, float("nan"), float("inf"), 2.0**31, 2.0**31 - 2.0**-22, 1e-12):
        with pytest.raises(ValueError):
            dyadic(bad)
    with pytest.raises(ValueError):
        dyadic(1.0, bits=32)


def test_per_channel_multipliers_broadcast():
    rng = np.random.default_rng(0)
    m = np.exp(rng.uniform(np.log(1e-6), np.log(10.0), size=5))
    acc = rng.integers(-(1 << 31), 1 << 31, size=(40, 5))
    b, c = dyadic(m)
    got = requantize(acc, b, c)
    for row, out in zip(acc.tolist(), got.tolist()):
        assert out == [exact_requantize(a, int(bi), int(ci)) for a, bi, ci in zip(row, b, c)]
    # and against the float product: rounding (1/2) plus the multiplier's 2^-31 relative error
    assert (np.abs(got - acc * m) <= 0.5 + np.abs(acc) * m * 2.0**-31 + 1e-6).all()
    column = rounding_shift(np.array([[5], [-5]]), np.array([0, 1, 2]))
    assert column.tolist() == [[5, 3, 1], [-5, -2, -1]]
