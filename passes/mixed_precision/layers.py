"""The layers a mixed-precision assignment chooses bits for: every conv and linear whose weight
is a constant of the captured graph.

Invariant: a ``QuantLayer``'s ``name`` is the float node name that
``CompileOptions.layer_bits`` takes (clean-up passes keep conv/linear node names), and its
``weight`` is the captured constant's name, which for a torch capture is the module's
parameter name. Shapes are taken at batch size 1 (a symbolic batch ``k*N`` becomes ``k``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.compiler.dims import Sym
from lowbit.compiler.ir import Graph

WEIGHT_OPS = frozenset({"conv", "linear"})


@dataclass(frozen=True)
class QuantLayer:
    """One conv/linear layer: its node, weight and shapes at batch size 1."""

    name: str
    op: str
    weight: str
    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    attrs: tuple[tuple[str, Any], ...]
    has_bias: bool

    @property
    def params(self) -> int:
        """Weight parameter count (biases stay 32-bit whatever the weight bits)."""
        return math.prod(self.weight_shape)

    @property
    def macs(self) -> int:
        """Multiply-accumulates of one sample: each output element reads one weight row."""
        return math.prod(self.output_shape) * math.prod(self.weight_shape[1:])

    def shape_key(self) -> str:
        """The layer's shape as text: op, input, weight and attributes (cost-table key)."""
        attrs = ",".join(f"{k}={v}" for k, v in self.attrs)
        bias = "+b" if self.has_bias else ""
        return (f"{self.op}{bias} x{list(self.input_shape)} w{list(self.weight_shape)} "
                f"{attrs}").strip()


def _batch_one(shape: tuple[Any, ...]) -> tuple[int, ...]:
    return tuple(dim.coeff if isinstance(dim, Sym) else int(dim) for dim in shape)


def quantizable_layers(graph: Graph) -> list[QuantLayer]:
    """The conv/linear nodes of ``graph`` with constant weights, in graph order."""
    layers = []
    for node in graph.nodes:
        if node.op not in WEIGHT_OPS or node.inputs[1] not in graph.constants:
            continue
        layers.append(QuantLayer(
            name=node.name, op=node.op, weight=node.inputs[1],
            input_shape=_batch_one(graph.types[node.inputs[0]].shape),
            weight_shape=tuple(graph.constants[node.inputs[1]].shape),
            output_shape=_batch_one(graph.types[node.outputs[0]].shape),
            attrs=tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                               for k, v in node.attrs.items())),
            has_bias=len(node.inputs) > 2 and bool(node.inputs[2])))
    return layers


def lowered_weights(float_graph: Graph, layers: list[QuantLayer]) -> dict[str, np.ndarray]:
    """Each layer's weight in ``float_graph`` (after float passes: what the lowering
    quantizes), by layer name."""
    return {layer.name: float_graph.constants[float_graph.node(layer.name).inputs[1]]
            for layer in layers}
