"""The relevance column row by row: coverage, routing, elementwise and transformer rules, errors.

References are independent of the code under test: routing (copies and selections) is compared
with torch autograd's gradient of the same op; the softmax, layer-norm and split rules with
their formulas written out with loops or explicit Jacobians; and LRP-0 on a bias-free ReLU
network with gradient x input, which must also sum to the explained logit.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.compiler import GraphBuilder, Sym, TensorType
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ops import OP_TABLE
from lowbit.passes.relevance import (COMPOSITES, Composite, Entry, Objective, composite_named,
                                     explain, propagate)
from lowbit.passes.relevance.attention_rules import LayerNormIdentity, SoftmaxTaylor, Stop
from lowbit.passes.relevance.elementwise_rules import (Numerator, ProportionalSplit,
                                                       UniformProduct)
from lowbit.passes.relevance.linear_rules import Epsilon, Flat, ZPlus
from lowbit.passes.relevance.rules import LINEAR_RULES, RELEVANCE_TABLE
from tests.graphs import conv_relu_linear
from tests.test_relevance_rules import make_step

RNG = np.random.default_rng(11)


def test_every_op_has_a_relevance_row() -> None:
    assert sorted(set(OP_TABLE) - set(RELEVANCE_TABLE)) == []
    assert sorted(set(RELEVANCE_TABLE) - set(OP_TABLE)) == []
    for op, row in RELEVANCE_TABLE.items():
        assert row.rule is not None or row.reason, op


def test_table_defaults_name_the_issue_rules() -> None:
    names = {op: row.rule.name for op, row in RELEVANCE_TABLE.items() if row.rule is not None}
    assert {names[op] for op in ("conv", "linear", "matmul")} == {"epsilon"}
    assert names["add"] == "proportional" and names["softmax"] == "softmax-taylor"
    assert {names[op] for op in ("reshape", "transpose")} == {"route"}
    assert {names[op] for op in ("relu", "gelu", "clip", "tanh")} == {"identity"}
    assert set(LINEAR_RULES) == {"epsilon", "gamma", "zplus", "alphabeta", "flat"}


ROUTES = [
    ("max_pool", [(2, 3, 7, 6)], dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1),
                                      dilations=(1, 1), ceil_mode=True),
     lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True)),
    ("reduce_max", [(2, 3, 4, 5)], dict(axes=(1, 3), keepdims=False),
     lambda x: x.amax(dim=(1, 3))),
    ("transpose", [(2, 3, 4)], dict(perm=(2, 0, 1)), lambda x: x.permute(2, 0, 1)),
    ("reshape", [(2, 3, 4)], dict(shape=(2, 12)), lambda x: x.reshape(2, 12)),
    ("slice", [(2, 7, 4)], dict(axes=(1, 2), starts=(1, -1), ends=(6, -5), steps=(2, -1)),
     lambda x: x[:, 1:6:2].flip(2)[:, :, 0:4]),
    ("expand", [(2, 1, 4)], dict(shape=(2, 3, 4)), lambda x: x.expand(2, 3, 4)),
]


@pytest.mark.parametrize("op,shapes,attrs,reference", ROUTES, ids=[r[0] for r in ROUTES])
def test_routing_equals_the_gradient(op, shapes, attrs, reference) -> None:
    x = RNG.standard_normal(shapes[0])
    step = make_step(op, [x], attrs)
    tensor = torch.tensor(x, requires_grad=True)
    output = reference(tensor)
    assert output.shape == step.output.shape
    (want,) = torch.autograd.grad(output, tensor, torch.tensor(step.relevance))
    np.testing.assert_allclose(RELEVANCE_TABLE[op].rule(step).inputs[0], want.numpy(), rtol=1e-12)


def test_gather_and_concat_route_to_their_sources() -> None:
    table, ids = RNG.standard_normal((5, 3)), np.array([[4, 1, 4], [0, -1, 2]])
    step = make_step("gather", [table, ids], live=(True, False))
    tensor = torch.tensor(table, requires_grad=True)
    (want,) = torch.autograd.grad(tensor[torch.tensor(ids) % 5], tensor,
                                  torch.tensor(step.relevance))
    split = RELEVANCE_TABLE["gather"].rule(step)
    np.testing.assert_allclose(split.inputs[0], want.numpy())
    assert split.inputs[1] is None
    a, b = RNG.standard_normal((2, 2, 3)), RNG.standard_normal((2, 4, 3))
    step = make_step("concat", [a, b], dict(axis=1), live=(True, False))
    split = RELEVANCE_TABLE["concat"].rule(step)
    np.testing.assert_array_equal(split.inputs[0], step.relevance[:, :2])
    assert split.inputs[1] is None and split.constants == pytest.approx(step.relevance[:, 2:].sum())


def test_selections_route_to_the_winner() -> None:
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal(3)
    b[0] = a[0, 0]  # a tie goes to the first operand
    step = make_step("maximum", [a, b], live=(True, True))
    split = RELEVANCE_TABLE["maximum"].rule(step)
    first = a >= b
    np.testing.assert_allclose(split.inputs[0], np.where(first, step.relevance, 0))
    np.testing.assert_allclose(split.inputs[1], np.where(first, 0, step.relevance).sum(0))


def test_proportional_split_and_positional_table() -> None:
    """AttnLRP eq. 8; a [1, S, D] constant is a position table (PA-LRP), a bias is absorbed."""
    x, table = RNG.standard_normal((2, 4, 3)), RNG.standard_normal((1, 4, 3))
    step = make_step("add", [x, table])
    split = ProportionalSplit(0.0)(step)
    np.testing.assert_allclose(split.inputs[0], x * step.relevance / (x + table))
    np.testing.assert_allclose(split.positional, table * step.relevance / (x + table))
    assert split.inputs[0].sum() + split.positional.sum() == pytest.approx(step.relevance.sum())
    bias = RNG.standard_normal(3)
    split = ProportionalSplit(0.0)(make_step("add", [x, bias]))
    assert split.positional is None and split.constants != 0.0
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((2, 3))
    step = make_step("sub", [a, b], live=(True, True))
    split = ProportionalSplit(0.0)(step)
    np.testing.assert_allclose(split.inputs[1], -b * step.relevance / (a - b))


def test_uniform_product_and_numerator() -> None:
    a, b = RNG.standard_normal((2, 3)), RNG.standard_normal((1, 3))
    step = make_step("mul", [a, b], live=(True, True))
    split = UniformProduct()(step)
    np.testing.assert_allclose(split.inputs[0], step.relevance / 2)
    np.testing.assert_allclose(split.inputs[1], step.relevance.sum(0, keepdims=True) / 2)
    alone = make_step("mul", [a, b])  # b constant: a takes everything
    np.testing.assert_allclose(UniformProduct()(alone).inputs[0], alone.relevance)
    split = Numerator()(make_step("div", [a, np.abs(b) + 1], live=(True, True)))
    np.testing.assert_allclose(split.inputs[0], step.relevance)
    assert split.inputs[1] is None


def test_softmax_taylor_rule() -> None:
    """AttnLRP Prop. 3.1 as LXT implements it: x_i (R_i - s_i sum_k R_k)."""
    x = RNG.standard_normal((2, 3, 5))
    x[0, 0, 1] = -np.inf
    step = make_step("softmax", [x], dict(axis=-1))
    got = SoftmaxTaylor()(step).inputs[0]
    s, R = step.output, step.relevance
    for n in range(2):
        for q in range(3):
            for i in range(5):
                logit = 0.0 if np.isneginf(x[n, q, i]) else x[n, q, i]
                want = logit * (R[n, q, i] - s[n, q, i] * R[n, q].sum())
                assert got[n, q, i] == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_layer_norm_identity_rule() -> None:
    """sigma held fixed: R_x = x J^T (R / (y + eps)), J = diag(w / sigma)(I - 1/D)."""
    x, w, b = RNG.standard_normal((2, 6)), RNG.standard_normal(6), RNG.standard_normal(6)
    step = make_step("layer_norm", [x, w, b], dict(eps=1e-5))
    split = LayerNormIdentity(0.0)(step)
    for n in range(2):
        sigma = np.sqrt(x[n].var() + 1e-5)
        J = np.diag(w / sigma) @ (np.eye(6) - np.ones((6, 6)) / 6)
        want = x[n] * (J.T @ (step.relevance[n] / step.output[n]))
        np.testing.assert_allclose(split.inputs[0][n], want, rtol=1e-10)
    kept = (b * step.relevance / step.output).sum()
    assert split.inputs[0].sum() + split.constants == pytest.approx(step.relevance.sum())
    assert split.constants == pytest.approx(kept)


def _mlp(bias: bool):
    builder = GraphBuilder("mlp")
    ids = [builder.capture(n, "aten.linear.default") for n in ("fc1", "fc2")]
    relu_id = builder.capture("act", "aten.relu.default")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 6)))
    w1 = builder.add_constant(RNG.standard_normal((8, 6)).astype(np.float32), "w1")
    w2 = builder.add_constant(RNG.standard_normal((3, 8)).astype(np.float32), "w2")
    b1 = builder.add_constant(RNG.standard_normal(8).astype(np.float32), "b1") if bias else ""
    hidden = builder.add("relu", [builder.add("linear", [x, w1, b1], ids[0])], relu_id)
    return builder.finish([builder.add("linear", [hidden, w2, ""], ids[1], hint="logits")])


def test_lrp0_on_a_bias_free_relu_network_is_gradient_times_input() -> None:
    graph = _mlp(bias=False)
    x = RNG.standard_normal((4, 6)).astype(np.float32)
    explanation = explain(graph, {"x": x}, composite_named("epsilon").with_overrides(
        Entry(Epsilon(0.0), ops=frozenset({"linear"}))), Objective())
    tensor = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    w1, w2 = (torch.tensor(graph.constants[n], dtype=torch.float64) for n in ("w1", "w2"))
    logits = torch.relu(tensor @ w1.T) @ w2.T
    target = logits.argmax(1)
    picked = logits[torch.arange(4), target]
    (grad,) = torch.autograd.grad(picked.sum(), tensor)
    relevance = explanation.inputs["x"]
    np.testing.assert_allclose(relevance, (grad * tensor).detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(relevance.sum(1), picked.detach().numpy(), rtol=1e-5)


def test_a_node_without_rule_stops_the_run_naming_node_and_op(monkeypatch) -> None:
    monkeypatch.delitem(RELEVANCE_TABLE, "relu")
    with pytest.raises(LowbitError) as caught:
        explain(conv_relu_linear(), {"image": RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)},
                composite_named("epsilon"), Objective())
    assert caught.value.node == "relu" and caught.value.op == "relu"
    assert "no rule" in str(caught.value)


def test_relevance_reaching_an_integer_op_is_an_error_not_a_zero() -> None:
    builder = GraphBuilder("lowered")
    qid, did = builder.capture("q", "quantize"), builder.capture("dq", "dequantize")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 4)))
    codes = builder.add("quantize", [x], qid, {"scale": 0.1})
    graph = builder.finish([builder.add("dequantize", [codes], did, {"scale": 0.1}, hint="y")])
    with pytest.raises(LowbitError) as caught:
        explain(graph, {"x": np.ones((2, 4), np.float32)}, composite_named("epsilon"),
                Objective(kind="class"))
    assert caught.value.op == "dequantize" and "integer program op" in str(caught.value)


def test_composite_order_overrides_then_first_layer_then_entries() -> None:
    graph = conv_relu_linear()
    flat = composite_named("epsilon-plus-flat")
    assert flat.assign(graph)["conv"].name == "flat"  # the first conv/linear
    assert flat.assign(graph)["logits"].name == "epsilon"
    forced = flat.with_overrides(Entry(ZPlus(), nodes=frozenset({"conv"})),
                                 Entry(Flat(), nodes=frozenset({"pool"})))  # a captured name
    assert forced.assign(graph)["conv"].name == "zplus"
    assert forced.assign(graph)["reduce_mean"].name == "flat"
    assert composite_named("attnlrp").assign(graph)["reduce_mean"].name == "epsilon"
    assert {"epsilon", "gamma", "zplus", "alphabeta", "epsilon-plus-flat", "attnlrp",
            "cp-lrp"} <= set(COMPOSITES)
    with pytest.raises(LowbitError, match="unknown rule or composite"):
        composite_named("nope")


def test_a_stopped_node_carries_no_relevance() -> None:
    """CP-LRP's stop: the node's output counts as a constant, so nothing flows through it."""
    graph = conv_relu_linear()
    stopped = Composite("stop-relu", "", (Entry(Flat(), ops=frozenset({"conv"})),
                                          Entry(Stop(), ops=frozenset({"relu"}))), canonizers=())
    with pytest.raises(LowbitError, match="does not depend on a float input"):
        propagate(graph, {"image": np.ones((1, 2, 6, 6), np.float32)}, stopped, Objective())
