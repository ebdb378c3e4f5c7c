"""The graph IR: nodes over named, typed values; constants as numpy arrays.

Invariants (checked by ``verify``):
- nodes are in topological order and every value has exactly one definition
  (a graph input, a constant or one node output);
- each node's op has a row in the op table, its attributes are that row's, and its output
  types equal the row's shape inference;
- every node has a non-empty ``origin``: the ids of the captured nodes it came from, all of
  them present in ``Graph.captured``.

Constants are shared between graph copies and are read-only; a pass that changes a weight
stores a new array under a new or the same name, never writes into an existing one.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.errors import GraphError
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import TensorType, type_of_array


@dataclass(frozen=True)
class CapturedNode:
    """A node of the model as the user gave it (a torch.export or ONNX node)."""

    id: int
    name: str
    source_op: str


@dataclass
class Node:
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    origin: frozenset[int]

    def present_inputs(self) -> Iterator[str]:
        return (name for name in self.inputs if name)


@dataclass
class Graph:
    name: str
    inputs: list[str]
    outputs: list[str]
    types: dict[str, TensorType]
    constants: dict[str, np.ndarray]
    nodes: list[Node]
    captured: dict[int, CapturedNode]
    metadata: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> "Graph":
        """A copy whose structure can change freely; constant arrays are shared (read-only)."""
        return Graph(self.name, list(self.inputs), list(self.outputs), dict(self.types),
                     dict(self.constants), [copy.copy(n) for n in self.nodes],
                     dict(self.captured), copy.deepcopy(self.metadata))

    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in node.present_inputs():
                users.setdefault(name, []).append(node)
        return users

    def op_histogram(self) -> Counter[str]:
        return Counter(node.op for node in self.nodes)

    def parameter_count(self) -> int:
        return int(sum(array.size for array in self.constants.values()))

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def covered_origins(self) -> set[int]:
        return set().union(*(node.origin for node in self.nodes)) if self.nodes else set()

    def toposort(self) -> None:
        """Reorder nodes topologically (stable); raises GraphError on a cycle."""
        producer = self.producers()
        order: list[Node] = []
        state: dict[str, int] = {}
        for root in self.nodes:
            stack: list[tuple[Node, Iterator[str]]] = [(root, root.present_inputs())]
            if state.get(root.name):
                continue
            state[root.name] = 1
            while stack:
                node, pending = stack[-1]
                dependency = next((producer[v] for v in pending if v in producer), None)
                if dependency is None:
                    stack.pop()
                    state[node.name] = 2
                    order.append(node)
                elif state.get(dependency.name) == 1:
                    raise GraphError("cycle in graph", node=dependency.name, op=dependency.op)
                elif not state.get(dependency.name):
                    state[dependency.name] = 1
                    stack.append((dependency, dependency.present_inputs()))
        self.nodes = order

    def verify(self) -> None:
        """Check every IR invariant; the error names the first offending node and op."""
        defined: set[str] = set()
        for name in self.inputs:
            _define(defined, name, "graph input")
            if name not in self.types:
                raise GraphError(f"graph input {name!r} has no type")
        for name, array in self.constants.items():
            _define(defined, name, "constant")
            if self.types.get(name) != type_of_array(array):
                raise GraphError(f"constant {name!r} type {self.types.get(name)} does not match "
                                 f"its array {type_of_array(array)}")
        seen_nodes: set[str] = set()
        for node in self.nodes:
            _verify_node(self, node, defined, seen_nodes)
        for name in self.outputs:
            if name not in defined:
                raise GraphError(f"graph output {name!r} is never defined")


def _define(defined: set[str], name: str, what: str, node: Node | None = None) -> None:
    if name in defined:
        raise GraphError(f"{what} {name!r} defined twice",
                         node=node.name if node else None, op=node.op if node else None)
    defined.add(name)


def _verify_node(graph: Graph, node: Node, defined: set[str], seen: set[str]) -> None:
    def fail(message: str) -> GraphError:
        return GraphError(message, node=node.name, op=node.op)

    if node.name in seen:
        raise fail("node name used twice")
    seen.add(node.name)
    spec = OP_TABLE.get(node.op)
    if spec is None:
        raise fail("op has no row in the op table")
    for name in node.present_inputs():
        if name not in defined:
            raise fail(f"dangling input {name!r}: not a graph input, constant or earlier output")
    if len(node.inputs) < spec.min_inputs:
        raise fail(f"{len(node.inputs)} inputs, op needs at least {spec.min_inputs}")
    if not node.origin:
        raise fail("node has no provenance (empty origin)")
    unknown = node.origin - graph.captured.keys()
    if unknown:
        raise fail(f"origin ids {sorted(unknown)} are not captured nodes")
    try:
        attrs = spec.with_defaults(node.attrs)
        expected = spec.infer_types([graph.types[v] if v else None for v in node.inputs], attrs)
    except (ValueError, KeyError, IndexError, TypeError) as err:
        raise fail(f"shape inference failed: {err}") from None
    if len(expected) != len(node.outputs):
        raise fail(f"{len(node.outputs)} outputs, op produces {len(expected)}")
    for name, want in zip(node.outputs, expected):
        _define(defined, name, "value", node)
        if graph.types.get(name) != want:
            raise fail(f"output {name!r} typed {graph.types.get(name)}, inference gives {want}")


