"""``lowbit pass NAME MODEL -o OUT [--calib CALIB.npz]`` and ``lowbit pass --list``: run one
float pass (a row of ``lowbit.passes.registry``) on its own, so pipelines built on other tools
can take a single lowbit pass. MODEL is an ONNX file, a ``.lowbit`` graph or a bundled name;
OUT is written as ONNX (``.onnx``) or as a lowbit graph (``.lowbit``), atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lowbit.cli.command import Command
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers import capture
from lowbit.compiler.serialize import save_graph
from lowbit.passes.manager import PassManager
from lowbit.passes.registry import PassInputs, make_passes, registered_passes
from lowbit.runtime.npz import load_npz

WRITERS = {".onnx": export_onnx, ".lowbit": save_graph}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", nargs="?", help="the pass (see --list)")
    parser.add_argument("model", metavar="MODEL", nargs="?",
                        help="an .onnx or .lowbit file, or a bundled model name")
    parser.add_argument("-o", "--out", metavar="OUT.onnx|OUT.lowbit",
                        help="where to write the transformed model")
    parser.add_argument("--calib", metavar="CALIB.npz",
                        help="calibration inputs keyed by input name (passes that need data)")
    parser.add_argument("--list", action="store_true", help="name every pass and stop")


def pass_listing() -> str:
    rows = sorted(registered_passes().values(), key=lambda entry: entry.name)
    width = max(len(entry.name) for entry in rows)
    return "\n".join(f"{entry.name:<{width}}  "
                     f"{'exact' if entry.equivalence else 'measured'}"
                     f"{', needs --calib' if entry.needs_calibration else ''}: {entry.summary}"
                     for entry in rows)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print(pass_listing())
        return 0
    if not (args.name and args.model and args.out):
        raise LowbitError("usage: lowbit pass NAME MODEL -o OUT [--calib CALIB.npz] "
                          "(or lowbit pass --list)")
    writer = WRITERS.get(Path(args.out).suffix)
    if writer is None:
        raise LowbitError(f"output must end in {' or '.join(WRITERS)}", file=args.out)
    calibration = load_npz(args.calib) if args.calib else None
    passes = make_passes([args.name], PassInputs(calibration))
    graph = capture(args.model)
    result, records = PassManager(passes).run(graph)
    writer(result, args.out)
    record = records[0]
    print(f"{record.name}: {'changed' if record.changed else 'unchanged'}, "
          f"{record.nodes_before} -> {record.nodes_after} nodes -> {args.out}", file=sys.stderr)
    return 0


COMMAND = Command("pass", "run one lowbit pass on a model, ONNX in and ONNX out",
                  add_arguments, run)
