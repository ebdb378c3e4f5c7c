"""``lowbit capture MODEL --out FILE``: capture a model into one ``.lowbit`` graph file."""

from __future__ import annotations

import argparse
import sys

from lowbit.cli.command import Command
from lowbit.compiler.importers import capture
from lowbit.compiler.serialize import save_graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="path to an .onnx (or .lowbit) file, or a bundled model name "
                             "(digits-cnn, digits-vit, minilm)")
    parser.add_argument("--out", required=True, metavar="FILE", help="graph file to write")


def run(args: argparse.Namespace) -> int:
    graph = capture(args.model)
    save_graph(graph, args.out)
    histogram = ", ".join(f"{op} {n}" for op, n in graph.op_histogram().most_common())
    print(f"captured {graph.name}: {len(graph.nodes)} nodes ({histogram}), "
          f"{graph.parameter_count():,} parameters -> {args.out}", file=sys.stderr)
    return 0


COMMAND = Command("capture", "capture a model (ONNX file or bundled name) into a graph file",
                  add_arguments, run)
