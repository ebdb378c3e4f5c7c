"""The linear LRP rules against slow re-implementations of their formulas in matrix form.

Every contraction is first written as a dense matrix ``M`` (out x in) by explicit loops (a conv
by walking its output positions and kernel taps), then each rule is evaluated with Python loops
straight from its formula (zennit's conventions: sign(0) = +1 stabilizer, generalized gamma,
bias only in the ``x+`` copies, flat = ones). The fast rules, which use the op's own kernel and
a hand-written adjoint, must agree to float64 precision. The adjoints are also checked on their
own: ``<J x, g> == <x, J^T g>``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from lowbit.compiler.ir import Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.passes.relevance.base import Step
from lowbit.passes.relevance.linear_rules import AlphaBeta, Epsilon, Flat, Gamma, ZPlus
from lowbit.passes.relevance.rules import RELEVANCE_TABLE

RNG = np.random.default_rng(3)


def make_step(op: str, inputs: list[np.ndarray | None], attrs: dict | None = None,
              live: tuple[bool, ...] | None = None, seed: int = 0) -> Step:
    spec = OP_TABLE[op]
    full = spec.with_defaults(attrs or {})
    values = tuple(None if v is None else np.asarray(v, np.float64)
                   if np.asarray(v).dtype.kind == "f" else np.asarray(v) for v in inputs)
    output = spec.run(list(values), full, batch=values[0].shape[0])[0]
    flags = live if live is not None else tuple(i == 0 for i in range(len(inputs)))
    node = Node("node", op, tuple("" if v is None else f"in{i}" for i, v in enumerate(inputs)),
                ("out",), dict(attrs or {}), frozenset({0}))
    relevance = np.random.default_rng(seed).standard_normal(output.shape)
    return Step(node, full, values, flags,
                tuple(v is not None and not f for v, f in zip(values, flags)),
                output, relevance, RELEVANCE_TABLE[op].affine)


def stab(z: float, eps: float) -> float:
    return z + (eps if z >= 0 else -eps)


def slow_epsilon(x, M, b, R, eps=1e-6, **_):
    out = np.zeros_like(x)
    for j in range(len(R)):
        z = sum(M[j, i] * x[i] for i in range(len(x))) + b[j]
        for i in range(len(x)):
            out[i] += x[i] * M[j, i] * R[j] / stab(z, eps)
    return out


def slow_gamma(x, M, b, R, gamma=0.25, eps=1e-6, **_):
    out = np.zeros_like(x)
    for j in range(len(R)):
        z = sum(M[j, i] * x[i] for i in range(len(x))) + b[j]
        if z == 0:
            continue
        up = 1 if z > 0 else -1  # favour contributions of the output's sign
        favoured = [(max(x[i], 0) * (M[j, i] + gamma * max(up * M[j, i], 0) * up)
                     + min(x[i], 0) * (M[j, i] + gamma * min(up * M[j, i], 0) * up))
                    for i in range(len(x))]
        bias = b[j] + gamma * max(up * b[j], 0) * up
        total = sum(favoured) + bias
        for i in range(len(x)):
            out[i] += favoured[i] * R[j] / stab(total, eps)
    return out


def _parts(x, M, j):
    pos = [max(x[i], 0) * max(M[j, i], 0) + min(x[i], 0) * min(M[j, i], 0) for i in range(len(x))]
    neg = [max(x[i], 0) * min(M[j, i], 0) + min(x[i], 0) * max(M[j, i], 0) for i in range(len(x))]
    return pos, neg


def slow_zplus(x, M, b, R, eps=1e-6, **_):
    out = np.zeros_like(x)
    for j in range(len(R)):
        pos, _ = _parts(x, M, j)
        for i in range(len(x)):
            out[i] += pos[i] * R[j] / stab(sum(pos) + max(b[j], 0), eps)
    return out


def slow_alphabeta(x, M, b, R, alpha=2.0, beta=1.0, eps=1e-6, **_):
    out = np.zeros_like(x)
    for j in range(len(R)):
        pos, neg = _parts(x, M, j)
        for i in range(len(x)):
            out[i] += (alpha * pos[i] / stab(sum(pos) + max(b[j], 0), eps)
                       - beta * neg[i] / stab(sum(neg) + min(b[j], 0), eps)) * R[j]
    return out


def slow_flat(x, M, b, R, connected=None, eps=1e-6, **_):
    C = connected if connected is not None else np.ones_like(M)
    out = np.zeros_like(x)
    for j in range(len(R)):
        for i in range(len(x)):
            out[i] += C[j, i] * R[j] / stab(C[j].sum(), eps)
    return out


def dense_conv(w, in_shape, strides, pads, dilations, groups):
    """(M, C): conv weight [O, C/g, kh, kw] as a dense matrix over flattened [C, H, W], and its
    connectivity (1 where an input position falls inside an output's window)."""
    channels, height, width = in_shape
    out_ch, per_group, kh, kw = w.shape
    oh = (height + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (width + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    M = np.zeros((out_ch * oh * ow, channels * height * width))
    C = np.zeros_like(M)
    for o in range(out_ch):
        group = o // (out_ch // groups)
        for oy in range(oh):
            for ox in range(ow):
                row = (o * oh + oy) * ow + ox
                for c in range(per_group):
                    for ky in range(kh):
                        for kx in range(kw):
                            iy = oy * strides[0] - pads[0] + ky * dilations[0]
                            ix = ox * strides[1] - pads[1] + kx * dilations[1]
                            if 0 <= iy < height and 0 <= ix < width:
                                col = ((group * per_group + c) * height + iy) * width + ix
                                M[row, col] += w[o, c, ky, kx]
                                C[row, col] = 1.0
    return M, C, (out_ch, oh, ow)


CONV = dict(strides=(2, 1), pads=(1, 0, 1, 1), dilations=(1, 2), groups=2)


def linear_case():
    x, w, b = RNG.standard_normal((2, 5)), RNG.standard_normal((3, 5)), RNG.standard_normal(3)
    return make_step("linear", [x, w, b]), [(x[n], w, b) for n in range(2)], None


def conv_case():
    x = RNG.standard_normal((2, 4, 5, 6))
    w, b = RNG.standard_normal((6, 2, 3, 2)), RNG.standard_normal(6)
    M, C, out_shape = dense_conv(w, x.shape[1:], **CONV)
    bias = np.repeat(b, out_shape[1] * out_shape[2])
    return make_step("conv", [x, w, b], CONV), [(x[n].ravel(), M, bias) for n in range(2)], C


def matmul_case():
    x, w = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((4, 5))
    dense = np.kron(np.eye(3), w.T)  # rows (i, j), columns (i, k)
    samples = [(x[n].ravel(), dense, np.zeros(15)) for n in range(2)]
    return make_step("matmul", [x, w]), samples, np.kron(np.eye(3), np.ones((5, 4)))


def batch_norm_case():
    x = RNG.standard_normal((2, 3, 2, 2))
    scale, shift, mean = RNG.standard_normal(3), RNG.standard_normal(3), RNG.standard_normal(3)
    var = RNG.random(3) + 0.5
    k = scale / np.sqrt(var + 1e-5)
    dense = np.diag(np.repeat(k, 4))
    bias = np.repeat(shift - mean * k, 4)
    return (make_step("batch_norm", [x, scale, shift, mean, var]),
            [(x[n].ravel(), dense, bias) for n in range(2)], np.eye(12))


CASES = {"linear": linear_case, "conv": conv_case, "matmul": matmul_case,
         "batch_norm": batch_norm_case}
RULES: dict[str, tuple[object, Callable, dict]] = {
    "epsilon": (Epsilon(), slow_epsilon, {}),
    "epsilon-0.1": (Epsilon(0.1), slow_epsilon, {"eps": 0.1}),
    "gamma": (Gamma(), slow_gamma, {}),
    "gamma-1": (Gamma(1.0), slow_gamma, {"gamma": 1.0}),
    "zplus": (ZPlus(), slow_zplus, {}),
    "alphabeta": (AlphaBeta(), slow_alphabeta, {}),
    "alpha1-beta0": (AlphaBeta(1.0, 0.0), slow_alphabeta, {"alpha": 1.0, "beta": 0.0}),
    "flat": (Flat(), slow_flat, {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("rule_id", sorted(RULES))
def test_rule_matches_slow_formula(case: str, rule_id: str) -> None:
    step, samples, connected = CASES[case]()
    rule, slow, params = RULES[rule_id]
    got = rule(step).inputs[0]
    for n, (x, M, b) in enumerate(samples):
        R = step.relevance[n].ravel()
        want = slow(x, M, b, R, connected=connected, **params)
        np.testing.assert_allclose(got[n].ravel(), want, rtol=1e-9, atol=1e-12)


def test_product_of_two_activations_splits_uniformly() -> None:
    """AttnLRP Prop. 3.3: each factor of a @ b gets half of the epsilon rule, ``R / (2 z)``."""
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 4, 5))
    step = make_step("matmul", [a, b], live=(True, True))
    split = Epsilon(0.0)(step)
    R, z = step.relevance, step.output
    want_a, want_b = np.zeros_like(a), np.zeros_like(b)
    for n in range(2):
        for i in range(3):
            for j in range(5):
                for k in range(4):
                    share = a[n, i, k] * b[n, k, j] * R[n, i, j] / (2 * z[n, i, j])
                    want_a[n, i, k] += share
                    want_b[n, k, j] += share
    np.testing.assert_allclose(split.inputs[0], want_a, rtol=1e-9)
    np.testing.assert_allclose(split.inputs[1], want_b, rtol=1e-9)


def test_pooling_and_means_are_epsilon_on_their_matrix() -> None:
    """zennit's Norm rule: average pooling as a linear map with weights 1 / count."""
    x = RNG.standard_normal((1, 2, 5, 5))
    attrs = dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), count_include_pad=False)
    step = make_step("avg_pool", [x], attrs)
    ones = np.ones((2, 1, 3, 3))
    M, C, _ = dense_conv(ones, (2, 5, 5), (2, 2), (1, 1, 1, 1), (1, 1), 2)
    M = M / C.sum(axis=1, keepdims=True)
    got = Epsilon()(step).inputs[0]
    want = slow_epsilon(x.ravel(), M, np.zeros(len(M)), step.relevance.ravel())
    np.testing.assert_allclose(got.ravel(), want, rtol=1e-9)


ADJOINT_CASES = [
    ("conv", [(2, 4, 7, 6), (6, 2, 3, 2), None], CONV),
    ("conv", [(1, 3, 5, 5), (3, 1, 3, 3), None],
     dict(strides=(1, 1), pads=(2, 2, 2, 2), dilations=(2, 2), groups=3)),
    ("avg_pool", [(2, 3, 7, 6)], dict(kernel=(3, 2), strides=(2, 2), pads=(1, 0, 1, 1),
                                      count_include_pad=False)),
    ("avg_pool", [(2, 3, 6, 6)], dict(kernel=(2, 2), strides=(2, 2), pads=(0, 0, 0, 0))),
    ("reduce_mean", [(2, 3, 4, 5)], dict(axes=(3, 1), keepdims=True)),
    ("reduce_sum", [(2, 3, 4)], dict(axes=(-1,), keepdims=False)),
    ("linear", [(2, 3, 5), (4, 5), None], {}),
    ("matmul", [(2, 1, 3, 4), (5, 4, 2)], {}),
]


@pytest.mark.parametrize("op,shapes,attrs", ADJOINT_CASES)
def test_adjoint_is_the_transpose(op: str, shapes: list, attrs: dict) -> None:
    inputs = [None if s is None else RNG.standard_normal(s) for s in shapes]
    step = make_step(op, inputs, attrs)
    (view,) = step.affines("test")
    g = RNG.standard_normal(step.output.shape)
    x = RNG.standard_normal(view.x.shape)
    lhs = np.sum(view.apply(x, view.weight) * g)
    rhs = np.sum(x * view.adjoint(g, view.weight))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_rule_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        AlphaBeta(2.0, 2.0)
    with pytest.raises(ValueError, match="gamma"):
        Gamma(-1.0)
