"""Pass manager: verification between passes and the provenance guarantee."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from lowbit.compiler import Graph, LowbitError
from lowbit.compiler.serialize import graph_to_json
from lowbit.passes import DeadCodeElimination, PassError, PassManager, PassResult
from lowbit.runtime import run_graph
from tests.graphs import conv_relu_linear


@dataclass(frozen=True)
class DropRelu:
    """A broken pass: removes the relu and forgets to declare it."""

    name: str = "drop-relu"
    declare: bool = False

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        relu = result.node("relu")
        result.nodes.remove(relu)
        for node in result.nodes:
            node.inputs = tuple(relu.inputs[0] if v == relu.outputs[0] else v for v in node.inputs)
        del result.types[relu.outputs[0]]
        return PassResult(result, True, {}, relu.origin if self.declare else frozenset())


@dataclass(frozen=True)
class BreakTypes:
    name: str = "break-types"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        result.node("relu").inputs = ("missing",)
        return PassResult(result, True)


def test_lost_provenance_is_caught_and_named() -> None:
    with pytest.raises(PassError) as caught:
        PassManager([DeadCodeElimination(), DropRelu()]).run(conv_relu_linear())
    message = str(caught.value)
    assert "'drop-relu'" in message and "after dead-code" in message and "['relu']" in message


def test_declared_removal_is_accepted() -> None:
    graph, records = PassManager([DropRelu(declare=True)]).run(conv_relu_linear())
    assert "relu" not in graph.op_histogram()
    assert records[0].nodes_before == 4 and records[0].nodes_after == 3


def test_broken_ir_names_pass_and_node() -> None:
    with pytest.raises(PassError) as caught:
        PassManager([BreakTypes()]).run(conv_relu_linear())
    assert caught.value.node == "relu" and "'break-types'" in str(caught.value)


def test_passes_do_not_mutate_their_input() -> None:
    graph = conv_relu_linear()
    before = graph_to_json(graph)
    PassManager([DropRelu(declare=True), DeadCodeElimination()]).run(graph)
    assert graph_to_json(graph) == before


def test_dead_code_removes_unused_branch_and_declares_it() -> None:
    graph = conv_relu_linear()
    graph.outputs = ["reduce_mean"]  # the linear layer is now dead
    result = DeadCodeElimination().run(graph)
    assert [n.op for n in result.graph.nodes] == ["conv", "relu", "reduce_mean"]
    assert {graph.captured[i].name for i in result.removed_origins} == {"fc"}
    assert "fc.w" not in result.graph.constants
    feeds = {"image": np.ones((2, 2, 6, 6), np.float32)}
    np.testing.assert_array_equal(run_graph(result.graph, feeds)["reduce_mean"],
                                  run_graph(graph, feeds)["reduce_mean"])


def test_pass_registry_names_every_pass_and_rejects_unknown_ones() -> None:
    from lowbit.passes.registry import PassInputs, make_passes, registered_passes

    table = registered_passes()
    assert {"fold-batch-norm", "dead-code"} <= set(table)
    assert [p.name for p in make_passes(["dead-code"], PassInputs())] == ["dead-code"]
    with pytest.raises(LowbitError, match="unknown pass 'no-such-pass'"):
        make_passes(["no-such-pass"], PassInputs())
