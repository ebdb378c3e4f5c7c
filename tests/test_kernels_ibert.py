"""I-BERT integer kernels against float references (numpy, torch, math) and I-BERT's formulas.

Three kinds of check: error against the float function of the dequantized input, within the
bound each module's docstring states; bit equality with a float64 transcription of I-BERT's
published integer formulas where lowbit keeps them; and a re-run on object arrays of
unbounded Python ints at the extreme allowed inputs, which proves that no int64 intermediate
wrapped around (numpy int64 arithmetic wraps silently).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lowbit.kernels import (INT64_SAFE, NEWTON_STEPS, LayerNormPlan, apply_exp, apply_gelu,
                            apply_layernorm, apply_softmax, bit_length, isqrt, plan_exp,
                            plan_gelu, plan_layernorm, plan_softmax)
from lowbit.kernels import i_sqrt

FAST = settings(max_examples=200, deadline=None)


def codes_between(low: float, high: float, scale: float) -> np.ndarray:
    return np.arange(math.ceil(low / scale), math.floor(high / scale) + 1, dtype=np.int64)


def assert_no_wraparound(kernel: Callable[[np.ndarray], np.ndarray],
                         q: np.ndarray) -> np.ndarray:
    """Run ``kernel`` on int64 and on unbounded Python ints; they must agree within 2^62."""
    got = kernel(q)
    unbounded = kernel(q.astype(object))
    assert got.dtype == np.int64
    assert got.tolist() == unbounded.tolist()
    assert int(np.abs(unbounded).max()) < INT64_SAFE
    return got


# ---------------------------------------------------------------------------------- i-exp


def ibert_int_exp(x_int: np.ndarray, scale: float) -> np.ndarray:
    """I-BERT's IntSoftmax.int_exp, transcribed in float64 (exact at these magnitudes)."""
    x0 = math.floor(-0.6931 / scale)
    x = np.maximum(x_int.astype(np.float64), 30 * x0)
    z = np.floor(x / x0)
    r = x - x0 * z
    b = math.floor(0.96963238 / 0.35815147 / scale)
    c = math.floor(1.0 / 0.35815147 / scale**2)
    poly = r * (r + b) + c
    return np.maximum(np.floor(poly * 2.0 ** (30 - z)), 0)


@pytest.mark.parametrize("scale", [1 / 16, 0.01, 1e-3, 1e-5])
def test_exp_relative_error_on_minus_ten_to_zero(scale):
    plan = plan_exp(scale)
    q = codes_between(-10, 0, scale)
    got = apply_exp(plan, q) * plan.out_scale
    # bound from i_exp's docstring: 0.331 % (polynomial) + 15 * 4.72e-5 (ln2 constant) + floors
    assert np.abs(got / np.exp(q * scale) - 1).max() <= 0.0041


def test_exp_equals_ibert_when_no_grid_shift_is_needed():
    scale = 1e-3
    plan = plan_exp(scale, max_step=0.5)
    assert (plan.in_shift, plan.out_shift) == (0, 30)
    q = np.arange(-25_000, 1, dtype=np.int64)
    assert apply_exp(plan, q).tolist() == ibert_int_exp(q, scale).astype(np.int64).tolist()
    assert plan.out_scale == pytest.approx(0.35815147 * scale**2 / 2**30, rel=1e-12)


@pytest.mark.parametrize("scale", [1 / 16, 1e-3, 1e-5, 0.4])
def test_exp_bounds_hold_at_extreme_inputs(scale):
    plan = plan_exp(scale)
    q = np.array([0, -1, plan.q_min + 1, plan.q_min, plan.q_min - 1, -(1 << 62), -(1 << 63)])
    e = assert_no_wraparound(lambda v: apply_exp(plan, v), q)
    assert int(e[0]) == plan.c_int << plan.out_shift < INT64_SAFE
    assert (e >= 0).all() and (e <= e[0]).all()


def test_exp_rejects_positive_input():
    with pytest.raises(ValueError):
        apply_exp(plan_exp(0.1), np.array([1]))
    with pytest.raises(TypeError):
        apply_exp(plan_exp(0.1), np.array([-1.0]))


# ------------------------------------------------------------------------------- i-softmax


def softmax_error_bound(p: np.ndarray, n: int, out_bits: int) -> np.ndarray:
    """i_softmax's stated bound: 2^(1-out_bits) + p (0.01 + 1.5 N 2^-15) + 2^-15."""
    return 2.0 ** (1 - out_bits) + p * (0.01 + 1.5 * n * 2.0**-15) + 2.0**-15


@pytest.mark.parametrize("scale", [1 / 16, 0.01, 1e-3])
@pytest.mark.parametrize("n", [1, 7, 128, 384])
@pytest.mark.parametrize("out_bits", [8, 12])
def test_softmax_against_torch(scale, n, out_bits):
    rng = np.random.default_rng(n)
    spread = rng.choice([0.5, 3.0, 12.0], size=(48, 1))
    q = np.round(rng.normal(0, 1, (48, n)) * spread / scale).astype(np.int64)
    plan = plan_softmax(scale, out_bits)
    out = apply_softmax(plan, q)
    want = torch.softmax(torch.from_numpy(q * scale), dim=-1).numpy()
    assert out.min() >= 0 and out.max() <= (1 << out_bits) - 1
    err = np.abs(out * plan.out_scale - want)
    assert (err <= softmax_error_bound(want, n, out_bits)).all()
    if out_bits == 8:
        assert err.max() <= 1 / 128
    sums = out.sum(axis=-1)
    assert (sums <= 1 << out_bits).all()
    assert (sums >= (1 << out_bits) - n * (1 + 2.0 ** (out_bits - 16))).all()


def test_softmax_along_another_axis_and_one_hot_rows():
    plan = plan_softmax(0.05)
    q = np.random.default_rng(1).integers(-100, 100, size=(6, 9))
    assert apply_softmax(plan, q, axis=0).tolist() == apply_softmax(plan, q.T).T.tolist()
    dominant = np.array([[0, -2000, -2000], [5, 5, 5]])
    assert apply_softmax(plan, dominant).tolist() == [[255, 0, 0], [85, 85, 85]]


def test_softmax_longest_row_keeps_sum_in_int32():
    plan = plan_softmax(0.01)
    exp_bits = plan.exp.c_int.bit_length() + plan.exp.out_shift
    assert exp_bits - plan.sum_shift == 16
    q = np.zeros((1, 1 << 15), dtype=np.int64)  # every e16 at its maximum
    e16 = apply_exp(plan.exp, q) >> plan.sum_shift
    assert int(e16.sum()) < 1 << 31
    out = assert_no_wraparound(lambda v: apply_softmax(plan, v), q)
    assert out.sum() == 0  # 256 / 2^15 floors to 0: the 8-bit output cannot resolve it
    with pytest.raises(ValueError):
        apply_softmax(plan, np.zeros((1, (1 << 15) + 1), dtype=np.int64))
    wide = np.array([[(1 << 62) - 1, -(1 << 62) + 1, 0]])
    assert assert_no_wraparound(lambda v: apply_softmax(plan, v), wide).tolist() == [[255, 0, 0]]


# ---------------------------------------------------------------------------------- i-GELU


def ibert_int_gelu(x_int: np.ndarray, scale: float) -> tuple[np.ndarray, float]:
    """I-BERT's IntGELU (n = 14), transcribed in float64: integer output and its scale."""
    inner = scale / 1.4142
    b = math.floor(-1.769 / inner)
    c = math.floor((1 / -0.2888) / inner**2)
    x = x_int.astype(np.float64)
    y = np.sign(x) * ((np.minimum(np.abs(x), -b) + b) ** 2 + c)
    y = np.floor(y / 2**14)
    sigmoid_scale = -0.2888 * inner**2 * 2**14
    return x * (y + math.floor(1 / sigmoid_scale)), scale * sigmoid_scale / 2


@pytest.mark.parametrize("scale", [1 / 16, 0.02, 0.005])
def test_gelu_against_torch(scale):
    plan = plan_gelu(scale)
    q = codes_between(-5, 5, scale)
    got = apply_gelu(plan, q) * plan.out_scale
    want = torch.nn.functional.gelu(torch.from_numpy(q * scale)).numpy()
    # i_gelu's stated bound: 0.0192 + 0.92 S + 1.1 S^2 (I-BERT's formula alone: 0.0182)
    assert np.abs(got - want).max() <= 0.0192 + 0.92 * scale + 1.1 * scale**2


def test_gelu_equals_ibert_in_its_regime():
    scale = 1.86e-4
    plan = plan_gelu(scale)
    assert plan.erf_shift == 14
    q = codes_between(-6, 6, scale)
    want, want_scale = ibert_int_gelu(q, scale)
    assert apply_gelu(plan, q).tolist() == (-want).astype(np.int64).tolist()
    assert plan.out_scale == pytest.approx(-want_scale, rel=1e-12)


@pytest.mark.parametrize("scale", [1 / 16, 0.005, 1e-5])
def test_gelu_bounds_hold_at_extreme_inputs(scale):
    plan = plan_gelu(scale)
    edge = plan.max_abs_input - 1
    q = np.array([0, 1, -1, plan.b_int, -plan.b_int, edge, -edge])
    assert_no_wraparound(lambda v: apply_gelu(plan, v), q)
    with pytest.raises(ValueError):
        apply_gelu(plan, np.array([plan.max_abs_input]))


# ---------------------------------------------------------------------------------- i-sqrt

EDGES = sorted({0, 1, 2, 3, 4, (1 << 62) - 1, (1 << 61), (1 << 31) - 1}
               | {k * k + d for k in (2, 3, 1 << 15, 46341, (1 << 31) - 1) for d in (-1, 0, 1)}
               | {(1 << e) + d for e in range(1, 62) for d in (-1, 0)})


@FAST
@given(st.lists(st.integers(0, (1 << 62) - 1), min_size=1, max_size=64))
def test_isqrt_equals_math_isqrt(values):
    assert isqrt(np.array(values, dtype=np.int64)).tolist() == [math.isqrt(v) for v in values]


def test_isqrt_edge_cases_and_bit_length():
    n = np.array(EDGES, dtype=np.int64)
    assert isqrt(n).tolist() == [math.isqrt(v) for v in EDGES]
    assert bit_length(n).tolist() == [v.bit_length() for v in EDGES]
    assert_no_wraparound(isqrt, n)
    for bad in (-1, 1 << 62):
        with pytest.raises(ValueError):
            isqrt(np.array([bad]))


def test_isqrt_step_count_is_tight(monkeypatch):
    witness = 33555032 * 33555032 - 1  # found by search; one step short of convergence
    assert isqrt(np.array([witness])).tolist() == [33555031]
    monkeypatch.setattr(i_sqrt, "NEWTON_STEPS", NEWTON_STEPS - 1)
    assert isqrt(np.array([witness])).tolist() != [33555031]


# ------------------------------------------------------------------------------- i-LayerNorm


def layernorm_error_bound(x: np.ndarray, want: np.ndarray, plan: LayerNormPlan, scale: float,
                          eps: float) -> np.ndarray:
    """i_layernorm's stated bound, with sigma in units of the grid S 2^-f."""
    sigma = np.sqrt(x.var(axis=-1, keepdims=True) + eps) / scale * 2.0**plan.mean_frac_bits
    assert (sigma >= 1).all()
    z = np.abs(want)
    return (2.0 ** -(plan.out_frac_bits + 1) + z * 2.0**-23 + 0.71 / sigma
            + 0.375 * z / sigma**2)


@pytest.mark.parametrize("channels", [16, 48, 384])
@pytest.mark.parametrize("input_bits,scale", [(4, 0.5), (7, 0.05), (22, 1e-4), (22, 3e-7)])
def test_layernorm_against_torch(channels, input_bits, scale):
    rng = np.random.default_rng(channels + input_bits)
    top = (1 << input_bits) - 1
    q = rng.integers(-top, top + 1, size=(24, channels))
    q[1] = np.clip(q[1] // 7, -top, top)
    q[2] = np.clip(np.round(rng.normal(0, 3, channels)), -top, top)  # a few codes wide
    q[3, :] = q[3, 0]  # constant row: normalizes to exactly 0
    q[4, 0] = top  # one outlier
    eps = 1e-5
    plan = plan_layernorm(scale, channels, input_bits, eps)
    out = apply_layernorm(plan, q)
    x = torch.from_numpy(q * scale)
    want = torch.nn.functional.layer_norm(x, (channels,), eps=eps).numpy()
    assert (out[3] == 0).all()
    assert (np.abs(out) <= math.sqrt(channels - 1) * 2**plan.out_frac_bits + 1).all()
    err = np.abs(out * plan.out_scale - want)
    keep = np.ones(len(q), dtype=bool)
    keep[3] = False
    assert (err[keep] <= layernorm_error_bound(x.numpy()[keep], want[keep], plan, scale,
                                               eps)).all()
    assert err[5:].max() <= 2.0**-22  # rows spread over the whole code range


@pytest.mark.parametrize("channels", [1, 16, 384, 4096])
def test_layernorm_bounds_hold_at_extreme_inputs(channels):
    plan = plan_layernorm(1e-3, channels, input_bits=22, eps=0.0)
    top = (1 << 22) - 1
    rows = np.array([[top, -top] * (channels // 2) + [top] * (channels % 2),
                     [top] * channels,
                     [-top] + [top] * (channels - 1),
                     [1] + [0] * (channels - 1)])
    out = assert_no_wraparound(lambda v: apply_layernorm(plan, v), rows)
    assert int(np.abs(out).max()) < 1 << 31
    with pytest.raises(ValueError):
        apply_layernorm(plan, np.full((1, channels), 1 << 22))
