"""Dead-code elimination: drop nodes none of whose outputs reach a graph output.

Invariant: graph outputs are unchanged bit for bit (only unused computation goes). The captured
nodes whose only IR nodes were removed are declared in ``removed_origins``. Unused constants
are dropped too.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.compiler.ir import Graph
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, register_pass


@dataclass(frozen=True)
class DeadCodeElimination:
    name: str = "dead-code"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        live = set(result.outputs)
        kept = []
        for node in reversed(result.nodes):
            if live.intersection(node.outputs):
                kept.append(node)
                live.update(node.present_inputs())
        kept.reverse()
        removed_nodes = len(result.nodes) - len(kept)
        result.nodes = kept
        unused = [name for name in result.constants if name not in live]
        for name in unused:
            del result.constants[name]
            del result.types[name]
        dead_values = {out for n in graph.nodes for out in n.outputs} - live
        for name in dead_values:
            result.types.pop(name, None)
        removed = frozenset(graph.covered_origins() - result.covered_origins())
        return PassResult(result, bool(removed_nodes or unused),
                          {"nodes_removed": removed_nodes, "constants_removed": len(unused)},
                          removed)


register_pass(PassEntry("dead-code", "remove nodes whose outputs nothing reads",
                        lambda inputs: DeadCodeElimination()))
