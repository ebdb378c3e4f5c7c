"""Pass protocol and the pass manager that guards provenance between passes.

Contract of a pass: ``run(graph)`` returns a ``PassResult`` and never mutates its input graph
(it works on ``graph.copy()``). The manager verifies the IR after every pass and checks that
every captured node that had an IR node before the pass still has one after it, unless the pass
lists it in ``removed_origins`` (with the reason in its stats). Relevance tracking relies on
this: any value in any compiled graph can be traced back to nodes of the user's model.
Errors name the failing pass and the passes that ran before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph


@dataclass
class PassResult:
    graph: Graph
    changed: bool
    stats: dict[str, Any] = field(default_factory=dict)
    removed_origins: frozenset[int] = frozenset()


class Pass(Protocol):
    name: str

    def run(self, graph: Graph) -> PassResult: ...


class PassError(LowbitError):
    """A pass broke the IR or dropped provenance."""


@dataclass(frozen=True)
class PassRecord:
    name: str
    changed: bool
    stats: dict[str, Any]
    nodes_before: int
    nodes_after: int


class PassManager:
    def __init__(self, passes: Sequence[Pass]) -> None:
        self.passes = list(passes)

    def run(self, graph: Graph) -> tuple[Graph, list[PassRecord]]:
        records: list[PassRecord] = []
        for index, current in enumerate(self.passes):
            before = graph.covered_origins()
            result = current.run(graph)
            where = self._where(index)
            try:
                result.graph.verify()
            except LowbitError as err:
                raise PassError(f"after {where}: {err}", node=err.node, op=err.op) from None
            lost = before - result.graph.covered_origins() - result.removed_origins
            if lost:
                names = sorted(graph.captured[i].name for i in lost)
                raise PassError(f"after {where}: captured node(s) {names} lost their mapping "
                                "without being declared removed")
            records.append(PassRecord(current.name, result.changed, result.stats,
                                      len(graph.nodes), len(result.graph.nodes)))
            graph = result.graph
        return graph, records

    def _where(self, index: int) -> str:
        ran = [p.name for p in self.passes[:index]]
        return f"pass {self.passes[index].name!r}" + (f" (after {', '.join(ran)})" if ran else "")
