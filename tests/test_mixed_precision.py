"""Mixed INT4/INT8 (HAWQ-V3): the ILP against exhaustive search, Hutchinson against the explicit
Hessian, the sensitivity's quantizer against the formula, and INT4 layers bit-exact between the
interpreter and onnxruntime. Expected values never come from the code under test: they are
enumerated, built with ``torch.autograd.functional.hessian``, or written from the formula.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lowbit.compiler import GraphBuilder, Sym, TensorType
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.ir import Graph
from lowbit.passes.mixed_precision.costs import Budget, budget_limit, static_costs
from lowbit.passes.mixed_precision.ilp import InfeasibleBudget, solve_assignment
from lowbit.passes.mixed_precision.latency import LatencyTable, single_layer_graph
from lowbit.passes.mixed_precision.layers import quantizable_layers
from lowbit.passes.mixed_precision.plan import PlanOptions, make_plan
from lowbit.passes.mixed_precision.relevance import relevance_weights
from lowbit.passes.mixed_precision.search import Point, cheapest_within_drop, random_assignment
from lowbit.passes.mixed_precision.sensitivity import (HutchinsonConfig, hutchinson_trace,
                                                       layer_sensitivities, perturbation,
                                                       single_threaded)
from lowbit.passes.quantize.pipeline import CompileOptions, CompileResult, compile_graph
from lowbit.runtime import run_graph
from lowbit.runtime.references import run_onnxruntime

from tests.graphs import conv_relu_linear

BITS = (4, 8)


def _exhaustive(sensitivity: np.ndarray, cost: np.ndarray, limit: float) -> float:
    """The least total sensitivity over every assignment within ``limit`` (inf if none)."""
    best = math.inf
    for choice in itertools.product(range(sensitivity.shape[1]), repeat=sensitivity.shape[0]):
        rows = np.arange(len(choice))
        if cost[rows, choice].sum() <= limit:
            best = min(best, float(sensitivity[rows, choice].sum()))
    return best


@pytest.mark.parametrize("seed, layers", [(0, 8), (1, 10), (2, 12)])
def test_ilp_optimum_equals_exhaustive_search(seed: int, layers: int) -> None:
    rng = np.random.default_rng(seed)
    params = rng.integers(50, 5000, size=layers)
    cost = np.stack([4.0 * params, 8.0 * params], axis=1)
    omega8 = rng.exponential(1e-3, size=layers)
    sensitivity = np.stack([omega8 * rng.uniform(50, 300, size=layers), omega8], axis=1)
    for fraction in (0.5, 0.55, 0.6, 0.7, 0.8, 0.95, 1.0):
        limit = budget_limit(cost, BITS, fraction)
        chosen = solve_assignment(sensitivity, cost, limit, BITS)
        columns = [BITS.index(b) for b in chosen]
        rows = np.arange(layers)
        assert cost[rows, columns].sum() <= limit * (1 + 1e-9)
        assert sensitivity[rows, columns].sum() == pytest.approx(
            _exhaustive(sensitivity, cost, limit), rel=1e-9, abs=1e-15)


def test_ilp_refuses_a_budget_below_uniform_int4() -> None:
    cost = np.array([[4.0, 8.0], [40.0, 80.0]])
    with pytest.raises(InfeasibleBudget):
        solve_assignment(np.ones((2, 2)), cost, 43.0, BITS)


def test_budget_fractions_of_int8_size() -> None:
    layers = quantizable_layers(conv_relu_linear())
    size = static_costs(layers, "size", BITS)
    # conv 3x2x3x3 = 54 weights, linear 4x3 = 12 weights
    assert size.tolist() == [[216.0, 432.0], [48.0, 96.0]]
    assert budget_limit(size, BITS, 0.5) == size[:, 0].sum()
    bops = static_costs(layers, "bops", BITS, activation_bits=8)
    # conv: 3*6*6 outputs x 18 MACs each; linear: 4 outputs x 3 MACs
    assert bops[:, 1].tolist() == [3 * 36 * 18 * 64.0, 12 * 64.0]
    assert Budget.parse("latency=0.8") == Budget("latency", 0.8)


class _TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = torch.nn.Linear(5, 4)
        self.second = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.tanh(self.first(x)))


def _tiny_problem() -> tuple[_TinyNet, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float64 two-layer net, its data, and the explicit Hessian of the loss w.r.t. the
    first layer's weight (20 x 20)."""
    torch.manual_seed(0)
    net = _TinyNet().double()
    x = torch.randn(32, 5, dtype=torch.float64)
    labels = torch.randint(0, 3, (32,))

    def loss_of(weight: torch.Tensor) -> torch.Tensor:
        hidden = torch.tanh(torch.nn.functional.linear(x, weight, net.first.bias))
        return torch.nn.functional.cross_entropy(net.second(hidden), labels)

    hessian = torch.autograd.functional.hessian(loss_of, net.first.weight.detach())
    return net, x, labels, hessian.reshape(20, 20)


def test_hutchinson_agrees_with_the_exact_trace_within_its_sampling_error() -> None:
    net, x, labels, hessian = _tiny_problem()
    exact = float(torch.trace(hessian))
    # Rademacher z: Var(z^T H z) = 2 (||H||_F^2 - sum_i H_ii^2), so m samples have standard
    # error sqrt(that / m); the estimate must lie within 4 of them (a 1-in-15,000 miss rate).
    m = 200
    sigma = math.sqrt(2 * (float((hessian ** 2).sum()) - float((torch.diag(hessian) ** 2).sum())))
    error_bar = sigma / math.sqrt(m)
    with single_threaded():  # 200 tiny Hessian-vector products
        loss = torch.nn.functional.cross_entropy(net(x), labels)
        (gradient,) = torch.autograd.grad(loss, net.first.weight, create_graph=True)
        estimate = hutchinson_trace(gradient, net.first.weight,
                                    HutchinsonConfig(min_samples=m, max_samples=m, rel_tol=0.0))
    assert estimate.samples == m
    assert abs(estimate.mean - exact) <= 4 * error_bar
    assert 0.7 * error_bar <= estimate.stderr <= 1.3 * error_bar  # its own error bar is right


def test_hessian_vector_products_equal_the_explicit_hessian() -> None:
    net, x, labels, hessian = _tiny_problem()
    loss = torch.nn.functional.cross_entropy(net(x), labels)
    (gradient,) = torch.autograd.grad(loss, net.first.weight, create_graph=True)
    z = torch.randn(4, 5, dtype=torch.float64)
    (product,) = torch.autograd.grad(gradient, net.first.weight, grad_outputs=z)
    torch.testing.assert_close(product.reshape(-1), hessian @ z.reshape(-1))


def test_perturbation_is_the_symmetric_per_channel_rounding_error() -> None:
    weight = np.random.default_rng(3).standard_normal((6, 4, 3, 3)).astype(np.float32)
    exact = weight.astype(np.float64)
    for bits, limit in ((4, 7), (8, 127)):
        scale = np.abs(exact).reshape(6, -1).max(axis=1).reshape(6, 1, 1, 1) / limit
        expected = ((np.clip(np.round(exact / scale), -limit, limit) * scale - exact) ** 2).sum()
        assert perturbation(weight, bits) == pytest.approx(float(expected), rel=1e-12)


def test_perturbation_of_a_rescaled_weight_is_mapped_back_to_the_parameter() -> None:
    rng = np.random.default_rng(4)
    weight = rng.standard_normal((5, 6)).astype(np.float32)
    rows, columns = rng.uniform(0.3, 3.0, size=(5, 1)), rng.uniform(0.3, 3.0, size=(1, 6))
    rows[0] *= -1  # a negative BatchNorm gamma flips a row
    lowered = (weight * rows * columns).astype(np.float32)
    exact = lowered.astype(np.float64)
    scale = np.abs(exact).max(axis=1, keepdims=True) / 7
    error = (np.clip(np.round(exact / scale), -7, 7) * scale - exact) / (rows * columns)
    assert perturbation(weight, 4, lowered) == pytest.approx(float((error ** 2).sum()), rel=1e-5)
    # rows alone: per-row quantization is scale-equivariant, so nothing changes
    row_scaled = (weight * rows).astype(np.float32)
    assert perturbation(weight, 4, row_scaled) == pytest.approx(perturbation(weight, 4),
                                                                rel=1e-5)


def test_layer_sensitivities_map_graph_weights_to_module_parameters() -> None:
    graph = conv_relu_linear()
    layers = quantizable_layers(graph)

    class Module(torch.nn.Module):  # parameters named like the graph's constants
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.fc = torch.nn.Module(), torch.nn.Module()
            self.conv.w = torch.nn.Parameter(torch.tensor(graph.constants["conv.w"]))
            self.fc.w = torch.nn.Parameter(torch.tensor(graph.constants["fc.w"]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            conv = torch.nn.functional.conv2d(x, self.conv.w, padding=1)
            return torch.relu(conv).mean(dim=(2, 3)) @ self.fc.w.T

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((8, 2, 6, 6))
                         .astype(np.float32))
    result = layer_sensitivities(Module(), layers, [x], None, progress=False)
    assert [s.name for s in result] == [layer.name for layer in layers]
    for sens in result:  # output-MSE Hessian is Gauss-Newton: positive semidefinite
        assert sens.trace.mean > 0
        assert sens.omega(4) > sens.omega(8) > 0


def _assignments_run_bit_exact(graph: Graph, feeds: dict[str, np.ndarray], tmp_path: Path,
                               assignment: dict[str, int]) -> CompileResult:
    """Compile with ``assignment``; onnxruntime must reproduce the interpreter exactly."""
    result = compile_graph(graph, feeds, CompileOptions(layer_bits=assignment, progress=False))
    program = result.integer_graph
    path = export_onnx(program, tmp_path / f"{'_'.join(map(str, assignment.values()))}.onnx")
    want = run_graph(program, feeds)
    got = run_onnxruntime(str(path), feeds)
    for name in program.outputs:
        assert got[name].dtype == want[name].dtype
        np.testing.assert_array_equal(got[name], want[name])
    return result


def test_int4_layers_run_bit_exact_in_the_interpreter_and_onnx(tmp_path: Path) -> None:
    graph = conv_relu_linear()
    feeds = {"image": np.random.default_rng(1).standard_normal((16, 2, 6, 6))
             .astype(np.float32)}
    for bits in itertools.product(BITS, repeat=2):
        assignment = dict(zip(("conv", "logits"), bits))
        result = _assignments_run_bit_exact(graph, feeds, tmp_path, assignment)
        for layer, width in assignment.items():  # the weight after the float passes
            weight = result.float_graph.constants[result.float_graph.node(layer).inputs[1]]
            limit = (1 << (width - 1)) - 1
            scale = np.abs(weight).reshape(len(weight), -1).max(axis=1) / limit
            codes = np.clip(np.round(weight / scale.reshape((-1,) + (1,) * (weight.ndim - 1))),
                            -limit, limit)
            np.testing.assert_array_equal(result.integer_graph.constants[f"{layer}.weight_q"],
                                          codes)


def test_random_assignment_stays_within_the_limit() -> None:
    cost = np.array([[4.0, 8.0]] * 6)
    rng = np.random.default_rng(0)
    draws = {random_assignment(cost, BITS, 32.0, rng) for _ in range(200)}
    assert all(sum(draw) <= 32 for draw in draws)
    assert len(draws) == 1 + 6 + 15  # every assignment with at most two INT8 layers appears


def test_cheapest_within_drop_picks_the_least_cost_point_inside_the_limit() -> None:
    points = [Point((4, 4), {"size": 0.5}, 95.0), Point((4, 8), {"size": 0.7}, 98.5),
              Point((8, 4), {"size": 0.8}, 99.0), Point((8, 8), {"size": 1.0}, 99.2)]
    assert cheapest_within_drop(points, 99.2, 1.0, "size").assignment == (4, 8)
    assert cheapest_within_drop(points, 99.2, 0.1, "size").assignment == (8, 8)


def test_latency_table_measures_once_and_reads_back(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    (layer,) = quantizable_layers(single_layer_graph(quantizable_layers(conv_relu_linear())[1]))
    path = tmp_path / "latency.json"
    first = LatencyTable(path).costs([layer], BITS, "llvm", progress=False)
    assert first.shape == (1, 2) and (first > 0).all()

    def refuse(*_args: object, **_kwargs: object) -> float:
        raise AssertionError("a cached shape was measured again")

    monkeypatch.setattr("lowbit.passes.mixed_precision.latency.measure_latency", refuse)
    np.testing.assert_array_equal(LatencyTable(path).costs([layer], BITS, "llvm",
                                                           progress=False), first)


def test_models_without_a_torch_module_and_bad_budgets_are_declined() -> None:
    with pytest.raises(LowbitError, match="bundled model"):
        make_plan("model.onnx", conv_relu_linear(), {}, PlanOptions())
    with pytest.raises(LowbitError, match="not one of"):
        Budget.parse("speed=0.5")
    with pytest.raises(LowbitError, match="fraction"):
        Budget.parse("size=1.5")


def test_relevance_weights_are_equal_when_lrp_conserves_relevance() -> None:
    """Two bias-free linears with a ReLU between: epsilon-LRP conserves relevance, so both
    layer outputs carry the seeded target logit and the weights are 1 and 1."""
    rng = np.random.default_rng(5)
    builder = GraphBuilder("chain")
    ids = [builder.capture(name, op) for name, op in
           (("fc1", "aten.linear.default"), ("act", "aten.relu.default"),
            ("fc2", "aten.linear.default"))]
    x = builder.add_input("x", TensorType("float32", (Sym(1), 6)))
    w1 = builder.add_constant(rng.standard_normal((8, 6)).astype(np.float32), "fc1.w")
    w2 = builder.add_constant(rng.standard_normal((3, 8)).astype(np.float32), "fc2.w")
    hidden = builder.add("relu", [builder.add("linear", [x, w1, ""], ids[0], hint="fc1")],
                         ids[1], hint="act")
    graph = builder.finish([builder.add("linear", [hidden, w2, ""], ids[2], hint="fc2")])
    feeds = {"x": rng.standard_normal((16, 6)).astype(np.float32)}
    weights = relevance_weights(graph, quantizable_layers(graph), feeds)
    np.testing.assert_allclose(weights, [1.0, 1.0], rtol=1e-4)
