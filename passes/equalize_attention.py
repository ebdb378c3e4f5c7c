"""Query/key equalization: channel ranges of Q and K balanced through ``Q K^T``.

The attention logits ``Q K^T`` contract the head channel ``j``: scaling channel ``c`` of the
query projection's output by ``s_c`` and the same channel of the key projection's output by
``1 / s_c`` leaves every logit unchanged, so it is exact (the DFQ idea of section 4.1 of Nagel
et al., ICCV 2019, applied to an activation-activation product, with SmoothQuant's
activation-based scale at strength 1/2: ``s_c = sqrt(max|K_c| / max|Q_c|)`` from the
calibration split, after which both ranges are ``sqrt(max|Q_c| max|K_c|)``). The scales are
folded into the rows and biases of the two linears.

Matching: ``matmul(A, B)`` where ``A`` and ``B`` are reached from two linears through reshapes
and transposes only. Which linear channel lands at each position is found by running those
ops on channel-index tensors; the pair qualifies when, along the contracted axis, ``A`` and
``B`` read the same channel of their linears (and that channel does not depend on the other
axes). Invariant: float outputs unchanged (float32 rounding only); only weight and bias
constants change, every node keeps its origin. Declines everything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.dims import concrete_shape
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, PassInputs, register_pass
from lowbit.passes.scale_folding import channel_samples, set_constant, spread, tabulated

MOVES = ("reshape", "transpose")


def _source(graph: Graph, value: str, producers: Mapping[str, Node],
            users: Mapping[str, list[Node]]) -> tuple[Node, list[Node]] | None:
    """The constant-weight linear that ``value`` is a reshaped/transposed view of, and the
    chain of views in order; None if something else sits in between."""
    chain: list[Node] = []
    node = producers.get(value)
    while node is not None and node.op in MOVES and len(users[node.outputs[0]]) == 1:
        chain.insert(0, node)
        node = producers.get(node.inputs[0])
    if node is None or node.op != "linear" or node.inputs[1] not in graph.constants:
        return None
    if len(users[node.outputs[0]]) != 1 or (chain and chain[0].inputs[0] != node.outputs[0]):
        return None
    return node, chain


def _channel_map(graph: Graph, linear: Node, chain: list[Node]) -> np.ndarray:
    """For a batch of one, the linear output channel at each position of the chain's end."""
    shape = concrete_shape(graph.types[linear.outputs[0]].shape, 1)
    index = np.broadcast_to(np.arange(shape[-1]), shape)
    for node in chain:
        spec = OP_TABLE[node.op]
        (index,) = spec.run([index], spec.with_defaults(node.attrs), 1)
    return np.asarray(index)


def _contracted_channels(a_map: np.ndarray, b_map: np.ndarray) -> bool:
    """Whether ``A[..., i, j]`` and ``B[..., j, t]`` read one channel per ``(..., j)``."""
    a_channels = a_map[..., :1, :]
    b_channels = np.swapaxes(b_map[..., :, :1], -1, -2)
    return (bool(np.all(a_map == a_channels)) and bool(np.all(b_map == b_map[..., :, :1]))
            and a_channels.shape == b_channels.shape and bool(np.all(a_channels == b_channels)))


@dataclass(frozen=True)
class QueryKeyPair:
    matmul: str
    query: str
    key: str


def find_query_key_pairs(graph: Graph) -> list[QueryKeyPair]:
    producers, users = graph.producers(), graph.consumers()
    pairs = []
    for node in graph.nodes:
        if node.op != "matmul":
            continue
        found = [_source(graph, v, producers, users) for v in node.inputs]
        if None in found:
            continue
        (query, q_chain), (key, k_chain) = found
        if query.name != key.name and _contracted_channels(_channel_map(graph, query, q_chain),
                                                           _channel_map(graph, key, k_chain)):
            pairs.append(QueryKeyPair(node.name, query.name, key.name))
    return pairs


def _rescale_rows(graph: Graph, layer: Node, factor: np.ndarray) -> None:
    weight = graph.constants[layer.inputs[1]]
    set_constant(graph, layer, 1, (weight.astype(np.float64) * factor[:, None])
                 .astype(weight.dtype), "qk_weight")
    if len(layer.inputs) > 2 and layer.inputs[2]:
        bias = graph.constants[layer.inputs[2]]
        set_constant(graph, layer, 2, (bias.astype(np.float64) * factor).astype(bias.dtype),
                     "qk_bias")


@dataclass(frozen=True)
class QueryKeyEqualization:
    calibration: Mapping[str, np.ndarray] = field(repr=False)
    name: str = "equalize-attention"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        pairs = find_query_key_pairs(result)
        values = [result.node(n).outputs[0] for p in pairs for n in (p.query, p.key)]
        samples = channel_samples(result, self.calibration, values)
        stats: dict[str, Any] = {"pairs": {}}
        for pair in pairs:
            query, key = result.node(pair.query), result.node(pair.key)
            q = np.abs(samples[query.outputs[0]]).max(axis=0).astype(np.float64)
            k = np.abs(samples[key.outputs[0]]).max(axis=0).astype(np.float64)
            ok = (q > 0) & (k > 0)
            s = np.where(ok, np.sqrt(np.where(ok, k, 1.0) / np.where(ok, q, 1.0)), 1.0)
            _rescale_rows(result, query, s)
            _rescale_rows(result, key, 1.0 / s)
            stats["pairs"][pair.matmul] = {
                "query": pair.query, "key": pair.key,
                "query_channel_spread_before": spread(q), "query_channel_spread_after":
                    spread(q * s), "key_channel_spread_before": spread(k),
                "key_channel_spread_after": spread(k / s)}
        return PassResult(result, bool(pairs), tabulated(stats, "pairs"))


def make(inputs: PassInputs) -> QueryKeyEqualization:
    assert inputs.calibration is not None
    return QueryKeyEqualization(inputs.calibration)


register_pass(PassEntry("equalize-attention", "balance query/key channel ranges through "
                        "Q K^T (exact rescaling of the two projections)", make,
                        needs_calibration=True))
