"""Composites: which rule each node gets, as ordered, named lists (zennit ``LayerMapComposite``).

An entry matches nodes by op, by name (an IR node name or the name of a captured node in its
origin, so overrides survive passes) and/or by a predicate; the first matching entry wins, in
this order: the user's overrides, the first-layer entries (zennit's
``SpecialFirstLayerMapComposite``: they apply to the first node, in topological order, that one
of them matches), the composite's own entries, and finally the op's default from the relevance
table. Canonizers are lowbit passes run before any rule (zennit's canonizers):
``fold-batch-norm`` is zennit's ``SequentialMergeBatchNorm``, so z+ and gamma see the merged
affine layer, and a batch norm left unmerged passes relevance through as in zennit.

Built-ins: ``epsilon``, ``gamma``, ``zplus``, ``alphabeta`` (that rule on every
conv/linear/matmul), zennit's ``epsilon-plus``, ``epsilon-plus-flat``, ``epsilon-alpha2-beta1``,
``epsilon-alpha2-beta1-flat``, and the transformer presets ``attnlrp`` (Achtibat et al. 2024,
with LXT's epsilons) and ``cp-lrp`` (Ali et al. 2022: attention weights stopped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph, Node
from lowbit.passes.relevance.attention_rules import LayerNormIdentity, SoftmaxTaylor, Stop
from lowbit.passes.relevance.base import Rule
from lowbit.passes.relevance.elementwise_rules import Identity, ProportionalSplit
from lowbit.passes.relevance.linear_rules import AlphaBeta, Epsilon, Flat, ZPlus
from lowbit.passes.relevance.rules import LINEAR_RULES, RELEVANCE_TABLE

NodePredicate = Callable[[Node, Graph], bool]
CONTRACTIONS = frozenset({"conv", "linear", "matmul"})


@dataclass(frozen=True)
class Entry:
    rule: Rule
    ops: frozenset[str] = frozenset()
    nodes: frozenset[str] = frozenset()
    where: NodePredicate | None = None

    def __post_init__(self) -> None:
        if not (self.ops or self.nodes or self.where):
            raise ValueError("a composite entry needs ops, node names or a predicate")

    def matches(self, node: Node, graph: Graph) -> bool:
        if self.ops and node.op not in self.ops:
            return False
        if self.nodes and node.name not in self.nodes and not any(
                graph.captured[i].name in self.nodes for i in node.origin if i in graph.captured):
            return False
        return self.where is None or self.where(node, graph)


@dataclass(frozen=True)
class Composite:
    name: str
    summary: str
    entries: tuple[Entry, ...]
    first: tuple[Entry, ...] = ()
    canonizers: tuple[str, ...] = ("fold-batch-norm",)
    overrides: tuple[Entry, ...] = ()

    def with_overrides(self, *entries: Entry) -> "Composite":
        """The same composite with ``entries`` checked before everything else."""
        return replace(self, overrides=tuple(entries) + self.overrides)

    def without_canonizers(self) -> "Composite":
        return replace(self, canonizers=())

    def assign(self, graph: Graph) -> dict[str, Rule | None]:
        """Node name -> rule (None where neither an entry nor the relevance table has one)."""
        first = next((node.name for node in graph.nodes
                      if any(entry.matches(node, graph) for entry in self.first)), None)
        chosen: dict[str, Rule | None] = {}
        for node in graph.nodes:
            ordered = self.overrides + (self.first if node.name == first else ()) + self.entries
            entry = next((e for e in ordered if e.matches(node, graph)), None)
            row = RELEVANCE_TABLE.get(node.op)
            chosen[node.name] = entry.rule if entry else (row.rule if row else None)
        return chosen


# zennit's layer_map_base: an (unmerged) BatchNorm passes relevance through
_BASE = (Entry(Identity(), ops=frozenset({"batch_norm"})),)


def _zennit(name: str, summary: str, conv: Rule, first: Rule | None = None) -> Composite:
    entries = _BASE + (Entry(conv, ops=frozenset({"conv"})),
                       Entry(Epsilon(), ops=frozenset({"linear", "matmul"})))
    first_entries = () if first is None else (Entry(first, ops=frozenset({"conv", "linear"})),)
    return Composite(name, summary, entries, first_entries)


def _single_rule(name: str, rule: Rule) -> Composite:
    return Composite(name, f"{name} on every conv/linear/matmul",
                     _BASE + (Entry(rule, ops=CONTRACTIONS),))


def _attention(name: str, summary: str, softmax: Rule) -> Composite:
    """LXT's epsilons, added without their sign: 1e-6 on linear maps and norms, 1e-8 on sums
    and products of activations (``add2``, ``matmul``)."""
    return Composite(name, summary, (
        Entry(Epsilon(1e-6, signed=False), ops=frozenset({"conv", "linear"})),
        Entry(Epsilon(1e-8, signed=False), ops=frozenset({"matmul"})),
        Entry(ProportionalSplit(1e-8, signed=False), ops=frozenset({"add", "sub"})),
        Entry(softmax, ops=frozenset({"softmax"})),
        Entry(LayerNormIdentity(1e-6, signed=False), ops=frozenset({"layer_norm"})),
        Entry(Epsilon(1e-6, signed=False),
              ops=frozenset({"reduce_mean", "reduce_sum", "avg_pool"})),
    ) + _BASE)


COMPOSITES: dict[str, Composite] = {c.name: c for c in (
    *(_single_rule(name, rule) for name, rule in LINEAR_RULES.items() if name != "flat"),
    _zennit("epsilon-plus", "z+ on conv, epsilon on linear/matmul", ZPlus()),
    _zennit("epsilon-plus-flat", "epsilon-plus, flat on the first conv/linear", ZPlus(), Flat()),
    _zennit("epsilon-alpha2-beta1", "alpha2-beta1 on conv, epsilon on linear/matmul",
            AlphaBeta()),
    _zennit("epsilon-alpha2-beta1-flat", "epsilon-alpha2-beta1, flat on the first conv/linear",
            AlphaBeta(), Flat()),
    _attention("attnlrp", "AttnLRP: epsilon, uniform products, softmax Taylor rule, "
               "layer-norm identity, PA-LRP positional tables", SoftmaxTaylor()),
    _attention("cp-lrp", "CP-LRP: attnlrp with the attention weights stopped", Stop()),
)}


def default_rule(graph: Graph) -> str:
    """AttnLRP for attention models, epsilon / z+ / flat for the rest."""
    return "attnlrp" if any(node.op == "softmax" for node in graph.nodes) else "epsilon-plus-flat"


def composite_named(name: str) -> Composite:
    try:
        return COMPOSITES[name]
    except KeyError:
        raise LowbitError(f"unknown rule or composite {name!r}; choose one of "
                          f"{', '.join(sorted(COMPOSITES))}") from None
