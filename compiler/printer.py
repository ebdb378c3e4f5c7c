"""Readable text form of a graph, one line per value definition.

    graph digits-cnn  (3 inputs, 14 nodes, 9 constants, 4,810 parameters)
      input  %image : float32[N, 1, 8, 8]
      const  @conv1.weight : float32[16, 1, 3, 3]
      %conv = conv(%image, @conv1.weight, @conv1.bias) {strides=(1, 1), ...} : float32[N, 16, 8, 8]  # convolution
      output %logits
"""

from __future__ import annotations

from typing import Any

from lowbit.compiler.dims import Sym
from lowbit.compiler.ir import Graph, Node


def _format_attr(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_attr(v) for v in value) + ")"
    if isinstance(value, Sym):
        return str(value)
    return repr(value)


def _ref(graph: Graph, value: str) -> str:
    if not value:
        return "_"
    return f"@{value}" if value in graph.constants else f"%{value}"


def format_node(graph: Graph, node: Node) -> str:
    outs = ", ".join(f"%{o}" for o in node.outputs)
    args = ", ".join(_ref(graph, v) for v in node.inputs)
    attrs = ", ".join(f"{k}={_format_attr(v)}" for k, v in node.attrs.items())
    types = ", ".join(str(graph.types[o]) for o in node.outputs)
    origin = ", ".join(graph.captured[i].name for i in sorted(node.origin) if i in graph.captured)
    body = f"{outs} = {node.op}({args})" + (f" {{{attrs}}}" if attrs else "")
    return f"{body} : {types}  # from {origin}"


def format_graph(graph: Graph, *, show_constants: bool = True) -> str:
    lines = [f"graph {graph.name}  ({len(graph.inputs)} inputs, {len(graph.nodes)} nodes, "
             f"{len(graph.constants)} constants, {graph.parameter_count():,} parameters)"]
    lines += [f"  input  %{name} : {graph.types[name]}" for name in graph.inputs]
    if show_constants:
        lines += [f"  const  @{name} : {graph.types[name]}" for name in graph.constants]
    lines += [f"  {format_node(graph, node)}" for node in graph.nodes]
    lines += [f"  output %{name}" for name in graph.outputs]
    return "\n".join(lines)
