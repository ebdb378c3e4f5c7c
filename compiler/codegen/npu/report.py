"""The NPU compile report: where each node runs, the share of ops and MACs offloaded, and why
every host node stays on the host.

Invariant: every node of the graph appears exactly once, either offloaded (with its NPU op and
region) or as a fallback with a reason. MACs are multiply-accumulates of one sample (batch 1):
``int_conv``, ``int_linear`` and ``int_matmul`` count one per weight tap of each output
element; every other op counts none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.compiler.codegen.npu.kinds import Group, static
from lowbit.compiler.ir import Graph, Node


def _conv_macs(node: Node, graph: Graph) -> int:
    taps = int(np.prod(static(graph.types[node.inputs[1]])[1:]))
    return int(np.prod(static(graph.types[node.outputs[0]]))) * taps


def _product_macs(node: Node, graph: Graph) -> int:
    depth = static(graph.types[node.inputs[0]])[-1]
    return int(np.prod(static(graph.types[node.outputs[0]]))) * depth


MACS: dict[str, Callable[[Node, Graph], int]] = {
    "int_conv": _conv_macs, "int_linear": _product_macs, "int_matmul": _product_macs,
}


@dataclass(frozen=True)
class Placement:
    node: str
    op: str
    macs: int
    npu_op: str | None = None
    region: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class NpuReport:
    graph: str
    spec: str
    spec_file: str
    placements: tuple[Placement, ...]
    regions: tuple[tuple[str, tuple[str, ...]], ...]
    """Each region's packed-function symbol and the nodes it runs, in region order."""

    def as_json(self) -> dict[str, Any]:
        npu = [p for p in self.placements if p.region is not None]
        total_macs = sum(p.macs for p in self.placements)
        npu_macs = sum(p.macs for p in npu)
        return {
            "graph": self.graph, "spec": self.spec, "spec_file": self.spec_file,
            "ops": {"total": len(self.placements), "offloaded": len(npu),
                    "share": _share(len(npu), len(self.placements))},
            "macs": {"total": total_macs, "offloaded": npu_macs,
                     "share": _share(npu_macs, total_macs), "unit": "MACs per sample"},
            "regions": [{"index": i, "symbol": symbol, "nodes": list(nodes)}
                        for i, (symbol, nodes) in enumerate(self.regions)],
            "offloaded": [{"node": p.node, "op": p.op, "npu_op": p.npu_op, "region": p.region}
                          for p in npu],
            "fallbacks": [{"node": p.node, "op": p.op, "reason": p.reason}
                          for p in self.placements if p.region is None],
        }

    def markdown(self) -> str:
        data = self.as_json()
        ops, macs = data["ops"], data["macs"]
        lines = [f"## NPU partition of {self.graph} for {self.spec}", "",
                 f"Spec file: `{self.spec_file}`", "",
                 "| | offloaded | total | share |", "| --- | ---: | ---: | ---: |",
                 f"| ops | {ops['offloaded']} | {ops['total']} | {ops['share']:.1%} |",
                 f"| MACs per sample | {macs['offloaded']:,} | {macs['total']:,} | "
                 f"{macs['share']:.1%} |", "", "### NPU regions", ""]
        kinds = {p["node"]: p["npu_op"] for p in data["offloaded"]}
        lines += [f"- region {r['index']}: " + ", ".join(f"`{n}` ({kinds[n]})" for n in r["nodes"])
                  for r in data["regions"]] or ["- none: everything runs on the host"]
        lines += ["", "### Host fallback", "", "| node | op | reason |", "| --- | --- | --- |"]
        lines += [f"| `{f['node']}` | {f['op']} | {f['reason']} |" for f in data["fallbacks"]]
        return "\n".join(lines) + "\n"


def report(graph: Graph, spec_name: str, spec_file: str, reasons: dict[str, str],
           offloaded: list[tuple[str, list[Group]]]) -> NpuReport:
    """``offloaded``: each region's symbol and groups; ``reasons``: why other nodes stay."""
    where: dict[str, tuple[int, str]] = {}
    for index, (_, groups) in enumerate(offloaded):
        for group in groups:
            where.update({n.name: (index, group.kind) for n in group.nodes})
    placements = []
    for node in graph.nodes:
        macs = MACS[node.op](node, graph) if node.op in MACS else 0
        if node.name in where:
            region, kind = where[node.name]
            placements.append(Placement(node.name, node.op, macs, kind, region))
        else:
            placements.append(Placement(node.name, node.op, macs, reason=reasons[node.name]))
    regions = tuple((symbol, tuple(n.name for g in groups for n in g.nodes))
                    for symbol, groups in offloaded)
    return NpuReport(graph.name, spec_name, spec_file, tuple(placements), regions)


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


__all__ = ["MACS", "NpuReport", "Placement", "report"]
