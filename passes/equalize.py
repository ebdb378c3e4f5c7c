"""Cross-layer equalization of conv/linear pairs joined by positively homogeneous ops.

DFQ (Nagel et al., ICCV 2019, section 4.1; AIMET ``ScaleFactorCalculator.cpp``): for
``y = W2 f(W1 x + b1)`` with ``f(s x) = s f(x)`` per channel for ``s > 0`` (ReLU, max/avg
pooling, means over other axes, reshapes that keep the channel), output channel ``i`` of layer
1 is divided by ``S_i`` and input channel ``i`` of layer 2 multiplied by it. With
``r1_i = max |W1[i]|`` and ``r2_i = max |W2[:, i]|``, ``S_i = sqrt(r1_i / r2_i)`` makes both
ranges ``sqrt(r1_i r2_i)``; a zero range gives ``S_i = 1``. Pairs sharing a layer (a chain)
are equalized in turn, ``iterations`` sweeps, as DFQ does for longer chains. A depthwise conv
(``groups`` = channels) can be either layer: its input channel ``i`` is its row ``i``.

Invariant: float outputs unchanged (exact in real arithmetic; float32 rounding only); only
weight and bias constants change, every node keeps its origin. Declines: ReLU6 and other
clips with an upper bound (not homogeneous), values with several readers, grouped convs other
than depthwise, run-time weights. BatchNorm must be folded first (clean-up does it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, register_pass
from lowbit.passes.scale_folding import set_constant, spread, tabulated

LAYERS = ("conv", "linear")


@dataclass(frozen=True)
class Pair:
    first: str
    second: str


def _homogeneous(graph: Graph, node: Node, axis: int) -> int | None:
    """The channel axis of ``node``'s output if ``node`` commutes with positive per-channel
    scaling on ``axis`` of its input, else None."""
    in_shape = graph.types[node.inputs[0]].shape
    out_shape = graph.types[node.outputs[0]].shape
    if node.op == "relu" or (node.op == "clip" and node.attrs.get("min") == 0.0
                             and node.attrs.get("max") is None):
        return axis
    if node.op in ("max_pool", "avg_pool"):
        return axis if axis == 1 else None
    if node.op in ("reduce_mean", "reduce_max"):
        axes = [a % len(in_shape) for a in node.attrs["axes"]]
        if axis in axes:
            return None
        return axis if node.attrs.get("keepdims") else axis - sum(a < axis for a in axes)
    if node.op == "reshape":
        kept = [i for i, d in enumerate(in_shape) if d != 1]
        out_kept = [i for i, d in enumerate(out_shape) if d != 1]
        if [in_shape[i] for i in kept] != [out_shape[i] for i in out_kept] or axis not in kept:
            return None
        return out_kept[kept.index(axis)]
    return None


def _channel_axis(graph: Graph, layer: Node) -> int:
    return 1 if layer.op == "conv" else graph.types[layer.outputs[0]].rank - 1


def _depthwise(graph: Graph, layer: Node) -> bool:
    weight = graph.constants[layer.inputs[1]]
    return layer.op == "conv" and layer.attrs.get("groups", 1) == weight.shape[0] > 1 \
        and weight.shape[1] == 1


def _constant_layer(graph: Graph, node: Node) -> bool:
    return (node.op in LAYERS and node.inputs[1] in graph.constants
            and (len(node.inputs) < 3 or not node.inputs[2] or node.inputs[2] in graph.constants)
            and (node.op == "linear" or node.attrs.get("groups", 1) == 1
                 or _depthwise(graph, node)))


def find_pairs(graph: Graph) -> list[Pair]:
    """Layer pairs joined by a single-reader chain of homogeneous ops."""
    users = graph.consumers()
    pairs = []
    for first in graph.nodes:
        if not _constant_layer(graph, first):
            continue
        value, axis = first.outputs[0], _channel_axis(graph, first)
        while axis is not None and len(users.get(value, [])) == 1 and value not in graph.outputs:
            reader = users[value][0]
            if _constant_layer(graph, reader) and reader.inputs[0] == value:
                if axis == _channel_axis(graph, reader) and \
                        (reader.op == "linear" or axis == 1):
                    pairs.append(Pair(first.name, reader.name))
                break
            if reader.inputs[0] != value:
                break
            axis, value = _homogeneous(graph, reader, axis), reader.outputs[0]
    return pairs


def output_ranges(weight: np.ndarray) -> np.ndarray:
    return np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1)


def input_ranges(weight: np.ndarray, depthwise: bool) -> np.ndarray:
    if depthwise:
        return output_ranges(weight)
    return np.abs(np.moveaxis(weight, 1, 0).reshape(weight.shape[1], -1)).max(axis=1)


def equalization_scales(r1: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """DFQ's ``S = sqrt(r1 / r2)``, 1 where either range is 0."""
    ok = (r1 > 0) & (r2 > 0)
    return np.where(ok, np.sqrt(np.where(ok, r1, 1.0) / np.where(ok, r2, 1.0)), 1.0)


def _scale_output(weight: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return weight / scale.reshape((-1,) + (1,) * (weight.ndim - 1))


def _scale_input(weight: np.ndarray, scale: np.ndarray, depthwise: bool) -> np.ndarray:
    if depthwise:
        return _scale_output(weight, 1.0 / scale)
    return weight * scale.reshape((1, -1) + (1,) * (weight.ndim - 2))


@dataclass(frozen=True)
class CrossLayerEqualization:
    iterations: int = 10
    name: str = "equalize"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        pairs = find_pairs(result)
        weights = {n: result.constants[result.node(n).inputs[1]].astype(np.float64)
                   for p in pairs for n in (p.first, p.second)}
        biases = {p.first: _bias(result, result.node(p.first)) for p in pairs}
        depthwise = {n: _depthwise(result, result.node(n)) for n in weights}
        before = {p: self._ranges(weights, depthwise, p) for p in pairs}
        for _ in range(self.iterations):
            for pair in pairs:
                r1, r2 = self._ranges(weights, depthwise, pair)
                scale = equalization_scales(r1, r2)
                weights[pair.first] = _scale_output(weights[pair.first], scale)
                weights[pair.second] = _scale_input(weights[pair.second], scale,
                                                    depthwise[pair.second])
                if biases[pair.first] is not None:
                    biases[pair.first] = biases[pair.first] / scale
        for name, weight in weights.items():
            node = result.node(name)
            dtype = result.constants[node.inputs[1]].dtype
            set_constant(result, node, 1, weight.astype(dtype), "equalized_weight")
            if biases.get(name) is not None:
                set_constant(result, node, 2, biases[name].astype(dtype), "equalized_bias")
        stats: dict[str, Any] = {"pairs": {}}
        for pair in pairs:
            (r1, r2), (a1, a2) = before[pair], self._ranges(weights, depthwise, pair)
            stats["pairs"][f"{pair.first} -> {pair.second}"] = {
                "first_range_spread_before": spread(r1), "first_range_spread_after": spread(a1),
                "second_range_spread_before": spread(r2),
                "second_range_spread_after": spread(a2)}
        return PassResult(result, bool(pairs), tabulated(stats, "pairs"))

    @staticmethod
    def _ranges(weights: dict[str, np.ndarray], depthwise: dict[str, bool], pair: Pair
                ) -> tuple[np.ndarray, np.ndarray]:
        return (output_ranges(weights[pair.first]),
                input_ranges(weights[pair.second], depthwise[pair.second]))


def _bias(graph: Graph, node: Node) -> np.ndarray | None:
    name = node.inputs[2] if len(node.inputs) > 2 else ""
    return graph.constants[name].astype(np.float64) if name else None


register_pass(PassEntry("equalize", "DFQ cross-layer equalization of conv/linear pairs "
                        "through ReLU-like ops", lambda inputs: CrossLayerEqualization()))
