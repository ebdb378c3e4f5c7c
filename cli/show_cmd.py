"""``lowbit show FILE``: op histogram, parameter count and a per-node table of a graph."""

from __future__ import annotations

import argparse

from lowbit.cli.command import Command
from lowbit.compiler.importers import capture
from lowbit.compiler.ir import Graph
from lowbit.compiler.printer import format_graph


def node_table(graph: Graph) -> list[str]:
    rows = [("node", "op", "output", "params", "from")]
    for node in graph.nodes:
        params = sum(graph.constants[v].size for v in node.inputs if v in graph.constants)
        origin = ", ".join(graph.captured[i].name for i in sorted(node.origin))
        rows.append((node.name, node.op, " ".join(str(graph.types[o]) for o in node.outputs),
                     f"{params:,}" if params else "", origin))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
            for row in rows]


def summary(graph: Graph) -> list[str]:
    lines = [f"graph {graph.name}: {len(graph.nodes)} nodes, {graph.parameter_count():,} "
             f"parameters in {len(graph.constants)} constants, "
             f"{len(graph.captured)} captured nodes"]
    lines += [f"input  {name}: {graph.types[name]}" for name in graph.inputs]
    lines += [f"output {name}: {graph.types[name]}" for name in graph.outputs]
    lines.append("ops:")
    lines += [f"  {op:<12} {count}" for op, count in sorted(graph.op_histogram().items())]
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="a .lowbit graph (or .onnx, captured first)")
    parser.add_argument("--ir", action="store_true", help="print the full IR text instead")


def run(args: argparse.Namespace) -> int:
    graph = capture(args.file)
    if args.ir:
        print(format_graph(graph))
        return 0
    print("\n".join(summary(graph) + [""] + node_table(graph)))
    return 0


COMMAND = Command("show", "print a graph's op histogram, parameters and per-node table",
                  add_arguments, run)
