"""Building a graph node by node, with types inferred from the op table.

Importers use this: they register each captured node (``capture``), then emit IR nodes whose
origin is that captured node. Names are made unique; constants become read-only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from lowbit.compiler.errors import GraphError, LowbitError
from lowbit.compiler.ir import CapturedNode, Graph, Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import TensorType, type_of_array

_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


class GraphBuilder:
    def __init__(self, name: str, metadata: Mapping[str, Any] | None = None) -> None:
        self._graph = Graph(name, [], [], {}, {}, [], {}, dict(metadata or {}))
        self._used_values: set[str] = set()
        self._used_nodes: set[str] = set()
        self.renamed: dict[str, str] = {}  # value names changed by rename_value, old -> new

    @property
    def graph(self) -> Graph:
        return self._graph

    def fresh_name(self, hint: str, *, node: bool = False) -> str:
        """A value name (or, with ``node=True``, a node name) not used before."""
        used = self._used_nodes if node else self._used_values
        base = _UNSAFE.sub("_", hint).strip("_") or "v"
        name, counter = base, 1
        while name in used:
            name, counter = f"{base}_{counter}", counter + 1
        used.add(name)
        return name

    def capture(self, name: str, source_op: str) -> int:
        """Record a node of the source model; returns its id for ``origin``."""
        node_id = len(self._graph.captured)
        self._graph.captured[node_id] = CapturedNode(node_id, name, source_op)
        return node_id

    def add_input(self, hint: str, ttype: TensorType) -> str:
        name = self.fresh_name(hint)
        self._graph.inputs.append(name)
        self._graph.types[name] = ttype
        return name

    def add_constant(self, array: np.ndarray, hint: str) -> str:
        name = self.fresh_name(hint)
        frozen = np.array(array, copy=True)
        frozen.flags.writeable = False
        self._graph.constants[name] = frozen
        self._graph.types[name] = type_of_array(frozen)
        return name

    def type_of(self, value: str) -> TensorType:
        return self._graph.types[value]

    def constant_value(self, value: str) -> np.ndarray | None:
        return self._graph.constants.get(value)

    def add_node(self, op: str, inputs: Sequence[str], origin: int | Iterable[int],
                 attrs: Mapping[str, Any] | None = None, hint: str | None = None) -> list[str]:
        """Append a node; returns its output value names. Errors name the node and op."""
        name = self.fresh_name(hint or op, node=True)
        spec = OP_TABLE.get(op)
        if spec is None:
            raise GraphError("op has no row in the op table", node=name, op=op)
        try:
            full_attrs = spec.with_defaults(dict(attrs or {}))
            in_types = [self._graph.types[v] if v else None for v in inputs]
            out_types = spec.infer_types(in_types, full_attrs)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise LowbitError(f"shape inference failed: {err}", node=name, op=op) from None
        outputs = tuple(self.fresh_name(name if len(out_types) == 1 else f"{name}.{i}")
                        for i in range(len(out_types)))
        origin_set = frozenset([origin] if isinstance(origin, int) else origin)
        self._graph.nodes.append(Node(name, op, tuple(inputs), outputs, dict(attrs or {}),
                                      origin_set))
        self._graph.types.update(zip(outputs, out_types))
        return list(outputs)

    def add(self, op: str, inputs: Sequence[str], origin: int | Iterable[int],
            attrs: Mapping[str, Any] | None = None, hint: str | None = None) -> str:
        """``add_node`` for the common single-output case."""
        (out,) = self.add_node(op, inputs, origin, attrs, hint)
        return out

    def rename_value(self, old: str, new: str) -> str:
        """Give a node's output a user-facing name (graph outputs keep the source's names).

        An internal value that already has the name is moved aside to a fresh one."""
        graph = self._graph
        if old == new:
            return new
        if not any(old in n.outputs for n in graph.nodes):
            raise LowbitError(f"only node outputs can be renamed, not {old!r}")
        if new in self._used_values:
            if new in graph.inputs or new in graph.constants or new in graph.outputs:
                raise LowbitError(f"value name {new!r} is already taken")
            if new in graph.types:
                self._replace_name(new, self.fresh_name(new))
        self._used_values.add(new)
        self._replace_name(old, new)
        return new

    def _replace_name(self, old: str, new: str) -> None:
        graph = self._graph
        self.renamed[old] = new
        graph.types[new] = graph.types.pop(old)
        for node in graph.nodes:
            node.outputs = tuple(new if v == old else v for v in node.outputs)
            node.inputs = tuple(new if v == old else v for v in node.inputs)
        graph.outputs = [new if v == old else v for v in graph.outputs]

    def finish(self, outputs: Sequence[str]) -> Graph:
        """Set the outputs, drop captured nodes that left no IR node, and verify."""
        graph = self._graph
        graph.outputs = list(outputs)
        covered = graph.covered_origins()
        graph.captured = {i: c for i, c in graph.captured.items() if i in covered}
        graph.verify()
        return graph
