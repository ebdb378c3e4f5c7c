"""Float graphs to ONNX (the rules ``lowbit pass`` writes with): every float rule, one-node
graphs, onnxruntime against the reference interpreter to float32 tolerance."""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.compiler import Sym, TensorType
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.exporters.onnx_float_rules import FLOAT_RULES
from lowbit.runtime.interpreter import run_graph
from lowbit.runtime.references import run_onnxruntime
from tests.integer_graphs import one_op

RNG = np.random.default_rng(7)
X = TensorType("float32", (Sym(1), 3, 6, 6))
ROWS = TensorType("float32", (Sym(1), 5))


def positive(*shape: int) -> np.ndarray:
    return RNG.uniform(0.5, 2.0, shape).astype(np.float32)


CASES = {
    "abs": ([ROWS], {}), "exp": ([ROWS], {}), "tanh": ([ROWS], {}), "sigmoid": ([ROWS], {}),
    "erf": ([ROWS], {}), "silu": ([ROWS], {}),
    "log": ([ROWS], {}), "sqrt": ([ROWS], {}), "reciprocal": ([ROWS], {}),
    "div": ([ROWS, positive(5)], {}), "pow": ([ROWS, np.array(2.0, np.float32)], {}),
    "linear": ([ROWS, RNG.normal(size=(4, 5)).astype(np.float32), positive(4)], {}),
    "matmul": ([ROWS, RNG.normal(size=(5, 3)).astype(np.float32)], {}),
    "conv": ([X, RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), positive(4)],
             {"strides": (2, 1), "pads": (1, 0, 1, 1), "dilations": (1, 1), "groups": 1}),
    "batch_norm": ([X, positive(3), positive(3), positive(3), positive(3)], {"eps": 1e-3}),
    "layer_norm": ([ROWS, positive(5), positive(5)], {"axis": -1, "eps": 1e-5}),
    "softmax": ([ROWS], {"axis": -1}),
    "gelu": ([ROWS], {"approximate": "none"}),
    "avg_pool": ([X], {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 1, 1),
                       "count_include_pad": False}),
    "reduce_mean": ([X], {"axes": (2, 3), "keepdims": False}),
    "reduce_sum": ([X], {"axes": (1,), "keepdims": True}),
}
POSITIVE_INPUTS = {"log", "sqrt", "reciprocal"}


def test_every_float_rule_has_a_case() -> None:
    assert set(FLOAT_RULES) == set(CASES)


@pytest.mark.parametrize("op", sorted(CASES))
def test_float_rule_matches_the_interpreter(op: str, tmp_path) -> None:
    inputs, attrs = CASES[op]
    graph = one_op(op, inputs, attrs)
    feeds = {}
    for name in graph.inputs:
        shape = tuple(3 if isinstance(d, Sym) else d for d in graph.types[name].shape)
        feeds[name] = (positive(*shape) if op in POSITIVE_INPUTS
                       else RNG.normal(size=shape).astype(np.float32))
    export_onnx(graph, tmp_path / "op.onnx")
    want = run_graph(graph, feeds)
    got = run_onnxruntime(str(tmp_path / "op.onnx"), feeds)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=2e-5, atol=2e-6)


def test_gelu_tanh_form(tmp_path) -> None:
    graph = one_op("gelu", [ROWS], {"approximate": "tanh"})
    feeds = {"x0": RNG.normal(size=(4, 5)).astype(np.float32) * 3}
    export_onnx(graph, tmp_path / "gelu.onnx")
    np.testing.assert_allclose(run_onnxruntime(str(tmp_path / "gelu.onnx"), feeds)[graph.outputs[0]],
                               run_graph(graph, feeds)[graph.outputs[0]], rtol=2e-5, atol=2e-6)
