"""The backward sweep: layer-wise relevance propagation over a lowbit graph, op by op.

The composite's canonizers run first (through the pass manager, so the IR is verified and
provenance kept), then the reference interpreter runs the canonical graph once keeping every
value, then nodes are visited in reverse topological order: each node's rule splits the
relevance its output received over its operands, and relevance arriving at a value from several
consumers adds up. Rules act on IR ops rather than on framework modules, as in DynamicLRP
("Always Keep Your Promises", operation-level rules over the traced graph); with every forward
value kept, no deferred computation ("promise") is needed.

Which values carry relevance ("live"): float graph inputs; outputs of embedding lookups (a
gather from a constant table whose indices come from a graph input: where an integer input's
relevance is collected); and the outputs of a node with a live operand, unless the node's rule
is ``Stop``. Values computed from integer inputs alone (token ids outside lookups, attention
masks) carry none, as in autograd; integer values computed from live ones (a lowered program)
do, so relevance reaching an integer op stops at its missing rule instead of vanishing.

Forward activations can be given (``activations``: value name -> array, e.g. an integer
program's dequantized values, see ``quantized``): the forward then runs node by node and each
named value is replaced as soon as it is computed, so later nodes compute from the replacement
and the rules see the replaced values. Without them the forward is the reference interpreter's.

Invariants: relevance reaches only live values, with their exact shape; a node reached by
relevance whose op has no rule stops the run with an error naming the node and op (never a
silent zero); every visited node records a ``Balance`` of where its relevance went.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import FLOAT_DTYPES
from lowbit.passes.dead_code import DeadCodeElimination
from lowbit.passes.fold_batch_norm import FoldBatchNorm
from lowbit.passes.manager import Pass, PassManager
from lowbit.passes.relevance.attention_rules import Stop
from lowbit.passes.relevance.base import Rule, Split, Step
from lowbit.passes.relevance.composites import Composite
from lowbit.passes.relevance.objectives import Objective, Seed
from lowbit.passes.relevance.rules import RELEVANCE_TABLE
from lowbit.runtime.interpreter import check_inputs, run_graph

CANONIZERS: dict[str, Pass] = {"fold-batch-norm": FoldBatchNorm(),
                               "dead-code": DeadCodeElimination()}


@dataclass(frozen=True)
class Balance:
    """Relevance through one node, summed over the batch."""

    received: float
    mass: float
    passed: float
    constants: float
    stabilizer: float
    positional: float

    @property
    def deviation(self) -> float:
        """|passed + constants + stabilizer + positional - received| relative to the received
        relevance mass (sum of absolute values)."""
        leak = abs(self.passed + self.constants + self.stabilizer + self.positional
                   - self.received)
        return leak / self.mass if self.mass > 0 else 0.0


@dataclass(frozen=True)
class Propagation:
    graph: Graph
    batch: int
    seed: Seed
    values: dict[str, np.ndarray]
    relevance: dict[str, np.ndarray]
    rules: dict[str, Rule]
    balances: dict[str, Balance]
    positional: dict[str, np.ndarray]
    sources: dict[str, str]


def canonicalize(graph: Graph, composite: Composite) -> Graph:
    unknown = [name for name in composite.canonizers if name not in CANONIZERS]
    if unknown:
        raise LowbitError(f"unknown canonizer(s) {unknown}; available: {sorted(CANONIZERS)}")
    if not composite.canonizers:
        return graph
    canonical, _ = PassManager([CANONIZERS[name] for name in composite.canonizers]).run(graph)
    return canonical


def propagate(graph: Graph, feeds: Mapping[str, np.ndarray], composite: Composite,
              objective: Objective,
              activations: Mapping[str, np.ndarray] | None = None) -> Propagation:
    """``activations`` replace forward values by name (names of the canonical graph)."""
    canonical = canonicalize(graph, composite)
    batch = check_inputs(canonical, feeds)
    values = forward(canonical, feeds, activations)
    assigned = composite.assign(canonical)
    live, sources = _liveness(canonical, assigned)
    seed = objective.seed(canonical, values)
    _check_seed(canonical, seed, live)
    prop = Propagation(canonical, batch, seed, values,
                       {name: r.copy() for name, r in seed.relevance.items()}, {}, {}, {}, sources)
    for node in reversed(canonical.nodes):
        if any(v in prop.relevance for v in node.outputs):
            _visit(prop, node, assigned[node.name], live)
    return prop


def forward(graph: Graph, feeds: Mapping[str, np.ndarray],
            activations: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every value of one forward run; a value named in ``activations`` (a graph input or a node
    output; same shape, cast to its dtype) is replaced where it is defined."""
    if not activations:
        return run_graph(graph, feeds, keep=True)
    unknown = sorted(n for n in activations if n not in graph.types or n in graph.constants)
    if unknown:
        raise LowbitError(f"activation overrides name {unknown}, which are no graph inputs or "
                          "node outputs of the explained graph")
    return run_graph(graph, feeds, keep=True,
                     replace=lambda name, value: _replaced(graph, name, value, activations))


def _replaced(graph: Graph, name: str, computed: np.ndarray,
              activations: Mapping[str, np.ndarray]) -> np.ndarray:
    if name not in activations:
        return computed
    given = np.asarray(activations[name])
    if given.shape != np.shape(computed):
        raise LowbitError(f"the activation override for {name!r} has shape {list(given.shape)}, "
                          f"the value has {list(np.shape(computed))}")
    return given.astype(graph.types[name].dtype, copy=False)


def _check_seed(graph: Graph, seed: Seed, live: set[str]) -> None:
    for name in seed.relevance:
        if name not in live:
            producer = graph.producers().get(name)
            raise LowbitError(f"the explained output {name!r} does not depend on a float input "
                              "or an embedding lookup, so no relevance can reach the inputs",
                              node=producer.name if producer else None,
                              op=producer.op if producer else None)


def _visit(prop: Propagation, node: Node, rule: Rule | None, live: set[str]) -> None:
    if len(node.outputs) != 1:
        raise LowbitError("relevance reached a node with several outputs",
                          node=node.name, op=node.op)
    received = prop.relevance[node.outputs[0]]
    total, mass = float(received.sum()), float(np.abs(received).sum())
    if node.name in prop.sources:  # an embedding lookup: the integer input's relevance
        prop.balances[node.name] = Balance(total, mass, total, 0.0, 0.0, 0.0)
        return
    if rule is None:
        raise _no_rule(node)
    step = _step(prop.graph, node, prop.values, live, received)
    split = rule(step)
    passed = _accumulate(step, split, prop.relevance)
    positional = 0.0
    if split.positional is not None:
        prop.positional[node.name] = split.positional
        positional = float(split.positional.sum())
    prop.rules[node.name] = rule
    prop.balances[node.name] = Balance(total, mass, passed, split.constants, split.stabilizer,
                                       positional)


def _is_float(graph: Graph, value: str) -> bool:
    return graph.types[value].dtype in FLOAT_DTYPES


def _liveness(graph: Graph, assigned: Mapping[str, Rule | None]
              ) -> tuple[set[str], dict[str, str]]:
    live = {v for v in graph.inputs if _is_float(graph, v)}
    from_inputs = set(graph.inputs)
    sources: dict[str, str] = {}
    for node in graph.nodes:
        operands = list(node.present_inputs())
        if any(v in from_inputs for v in operands):
            from_inputs.update(node.outputs)
        if (node.op == "gather" and node.inputs[0] in graph.constants
                and node.inputs[1] in from_inputs):
            sources[node.name] = node.inputs[1]
        elif isinstance(assigned[node.name], Stop) or not any(v in live for v in operands):
            continue
        live.update(node.outputs)
    return live, sources


def _no_rule(node: Node) -> LowbitError:
    row = RELEVANCE_TABLE.get(node.op)
    why = row.reason if row is not None else "the op has no row in the relevance table"
    return LowbitError(f"relevance reached this node but it has no rule: {why}",
                       node=node.name, op=node.op)


def _operand(graph: Graph, values: Mapping[str, np.ndarray], name: str) -> np.ndarray | None:
    if not name:
        return None
    value = values[name]
    return value.astype(np.float64) if _is_float(graph, name) else value


def _step(graph: Graph, node: Node, values: Mapping[str, np.ndarray], live: set[str],
          received: np.ndarray) -> Step:
    spec = OP_TABLE[node.op]
    row = RELEVANCE_TABLE.get(node.op)
    return Step(node, spec.with_defaults(node.attrs),
                tuple(_operand(graph, values, v) for v in node.inputs),
                tuple(bool(v) and v in live for v in node.inputs),
                tuple(bool(v) and v in graph.constants for v in node.inputs),
                values[node.outputs[0]].astype(np.float64), received,
                row.affine if row is not None else None)


def _accumulate(step: Step, split: Split, relevance: dict[str, np.ndarray]) -> float:
    if len(split.inputs) != len(step.inputs):
        raise step.fail(f"rule returned {len(split.inputs)} operand shares for "
                        f"{len(step.inputs)} operands")
    passed = 0.0
    for value, share, operand, live in zip(step.node.inputs, split.inputs, step.inputs,
                                          step.live):
        if share is None:
            continue
        if not live or operand is None or share.shape != operand.shape:
            raise step.fail(f"rule gave relevance of shape {list(share.shape)} to operand "
                            f"{value!r}, which is {'live' if live else 'not live'}"
                            + ("" if operand is None else f" with shape {list(operand.shape)}"))
        passed += float(share.sum())
        relevance[value] = relevance[value] + share if value in relevance else np.array(share)
    return passed
