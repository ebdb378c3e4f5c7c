"""Relevance reported on the user's model: per captured node, per graph input, and conservation.

Mapping through provenance (works for any graph lowbit produced): a captured node is
represented by the IR nodes whose ``origin`` contains it, and its relevance is the relevance at
that group's exit values (outputs used outside the group, or graph outputs), summed per sample.
Split rule for fused nodes: a node made from several captured nodes (a conv with its batch norm
folded in) reports its whole output relevance on each of them; relevance is not divided,
because every one of them lies on the path that carried it (so sums over captured nodes are not
a partition). A captured node with no IR node left (removed by a pass) reports ``None``.
Relevance is computed on the canonical graph (after the composite's canonizers), so a graph and
the same graph after canonicalizing passes (fold-batch-norm, dead-code) report the same
relevance per captured node.

Inputs: a float input's relevance has its shape. An integer input used as embedding indices
gets the relevance of the lookups' outputs summed over their feature axes (the ids' shape);
other integer inputs receive none (zeros), as they are not differentiable.

Conservation: per visited node, ``|passed + constants + stabilizer + positional - received|``
relative to ``sum|received|`` must stay within the rule's tolerance (rules with tolerance None
are reported, not checked). The stabilizer's share is reported apart: ``stabilizer_share``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.compiler.ops import OP_TABLE
from lowbit.passes.relevance.base import EXACT
from lowbit.passes.relevance.composites import Composite
from lowbit.passes.relevance.engine import Propagation, propagate
from lowbit.passes.relevance.objectives import Objective


@dataclass(frozen=True)
class NodeRelevance:
    source_op: str
    ir_nodes: tuple[str, ...]
    rules: tuple[str, ...]
    relevance: np.ndarray | None


@dataclass(frozen=True)
class LayerCheck:
    node: str
    op: str
    captured: tuple[str, ...]
    rule: str
    deviation: float
    tolerance: float | None
    stabilizer_share: float

    @property
    def within(self) -> bool:
        return self.tolerance is None or self.deviation <= self.tolerance


@dataclass(frozen=True)
class Explanation:
    composite: str
    propagation: Propagation
    inputs: dict[str, np.ndarray]
    nodes: dict[str, NodeRelevance]
    positional: dict[str, np.ndarray]
    checks: tuple[LayerCheck, ...]

    def worst_layer(self) -> LayerCheck | None:
        """The checked layer (its rule states a tolerance) with the largest relative deviation."""
        checked = [c for c in self.checks if c.tolerance is not None]
        return max(checked, key=lambda c: c.deviation, default=None)

    def most_stabilized(self) -> LayerCheck | None:
        """The layer whose stabilizer kept the largest share of its relevance."""
        return max(self.checks, key=lambda c: c.stabilizer_share, default=None)

    def violations(self) -> list[LayerCheck]:
        return [c for c in self.checks if not c.within]


def explain(graph: Graph, feeds: Mapping[str, np.ndarray], composite: Composite,
            objective: Objective,
            activations: Mapping[str, np.ndarray] | None = None) -> Explanation:
    """``activations`` replace forward values by name (see ``engine.forward``)."""
    prop = propagate(graph, feeds, composite, objective, activations)
    return Explanation(composite.name, prop, input_relevance(prop, feeds),
                       captured_relevance(prop), positional_relevance(prop), conservation(prop))


def per_sample(values: np.ndarray, batch: int) -> np.ndarray:
    if values.ndim == 0 or values.shape[0] % batch:
        raise LowbitError(f"a value of shape {list(values.shape)} has no leading batch axis "
                          f"(batch {batch}); relevance cannot be reported per sample")
    return values.reshape(batch, -1).sum(axis=1)


def _captured_names(graph: Graph, origin: frozenset[int]) -> tuple[str, ...]:
    return tuple(graph.captured[i].name for i in sorted(origin) if i in graph.captured)


def captured_relevance(prop: Propagation) -> dict[str, NodeRelevance]:
    graph = prop.graph
    users = graph.consumers()
    report: dict[str, NodeRelevance] = {}
    for cid, captured in sorted(graph.captured.items()):
        group = [n for n in graph.nodes if cid in n.origin]
        names = {n.name for n in group}
        exits = [v for n in group for v in n.outputs
                 if v in graph.outputs or any(u.name not in names for u in users.get(v, []))]
        relevance = None
        if group:
            relevance = np.zeros(prop.batch)
            for value in exits:
                if value in prop.relevance:
                    relevance = relevance + per_sample(prop.relevance[value], prop.batch)
        rules = tuple(sorted({prop.rules[n.name].name for n in group if n.name in prop.rules}))
        key = captured.name if captured.name not in report else f"{captured.name}#{cid}"
        report[key] = NodeRelevance(captured.source_op, tuple(n.name for n in group), rules,
                                    relevance)
    return report


def input_relevance(prop: Propagation, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    graph = prop.graph
    result: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        shape = np.shape(feeds[name])
        result[name] = prop.relevance.get(name, np.zeros(shape)).copy()
    for node_name, indices in prop.sources.items():
        node = graph.node(node_name)
        if indices not in result:
            raise LowbitError("embedding lookup indices are computed from an input; relevance "
                              "cannot be mapped back onto that input", node=node.name, op=node.op)
        looked_up = prop.relevance.get(node.outputs[0])
        if looked_up is None:
            continue
        axis = normalize_axis(OP_TABLE[node.op].with_defaults(node.attrs)["axis"],
                              prop.values[node.inputs[0]].ndim)
        ids = np.ndim(feeds[indices])
        features = tuple(range(axis)) + tuple(range(axis + ids, looked_up.ndim))
        result[indices] = result[indices] + looked_up.sum(axis=features)
    return result


def positional_relevance(prop: Propagation) -> dict[str, np.ndarray]:
    """PA-LRP positional relevance per position (summed over features), keyed by the captured
    name of the add that brought in the position table."""
    graph = prop.graph
    return {",".join(_captured_names(graph, graph.node(name).origin)) or name: share.sum(axis=-1)
            for name, share in prop.positional.items()}


def conservation(prop: Propagation) -> tuple[LayerCheck, ...]:
    graph = prop.graph
    nodes = {node.name: node for node in graph.nodes}
    checks = []
    for name, balance in prop.balances.items():
        node = nodes[name]
        rule = prop.rules.get(name)
        share = abs(balance.stabilizer) / balance.mass if balance.mass > 0 else 0.0
        checks.append(LayerCheck(name, node.op, _captured_names(graph, node.origin),
                                 rule.name if rule else "embedding-source", balance.deviation,
                                 rule.tolerance if rule else EXACT, share))
    return tuple(checks)
