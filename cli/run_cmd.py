"""``lowbit run MODEL --input X.npz --output Y.npz [--backend interp]``.

MODEL is a graph file (or anything ``capture`` accepts). Inputs and outputs are npz files keyed
by the graph's input and output names; the output file is written atomically.
"""

from __future__ import annotations

import argparse
import sys

from lowbit.cli.command import Command
from lowbit.compiler.errors import InputError
from lowbit.compiler.importers import capture
from lowbit.runtime.interpreter import run_graph
from lowbit.runtime.npz import load_npz, save_npz

BACKENDS = {"interp": run_graph}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a .lowbit graph, .onnx file or bundled name")
    parser.add_argument("--input", required=True, metavar="X.npz",
                        help="one array per graph input, keyed by input name")
    parser.add_argument("--output", required=True, metavar="Y.npz",
                        help="written with one array per graph output")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="interp")


def run(args: argparse.Namespace) -> int:
    graph = capture(args.model)
    feeds = load_npz(args.input)
    try:
        outputs = BACKENDS[args.backend](graph, feeds)
    except InputError as err:
        raise err.located(file=args.input) from None
    save_npz(args.output, outputs)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"ran {graph.name} ({args.backend}): {shapes} -> {args.output}", file=sys.stderr)
    return 0


COMMAND = Command("run", "run a graph on npz inputs and write npz outputs", add_arguments, run)
