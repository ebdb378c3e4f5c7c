"""``lowbit check MODEL``: does the captured graph compute what the source model computes?

The interpreter's output is compared with an independent run of the source: torch for a bundled
model (on real samples), onnxruntime for an ONNX file (on ``--input`` or random inputs).
Exit 0 within tolerance, 1 outside it, 2 on bad input.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lowbit.cli.command import Command
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.importers import capture
from lowbit.compiler.ir import Graph
from lowbit.runtime.interpreter import run_graph
from lowbit.runtime.npz import load_npz
from lowbit.runtime.references import relative_error, run_onnxruntime, run_torch


def random_feeds(graph: Graph, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal floats and zero integers (always valid indices) for every input."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        ttype = graph.types[name]
        shape = tuple(d if isinstance(d, int) else d.coeff * batch for d in ttype.shape)
        feeds[name] = (rng.standard_normal(shape).astype(ttype.dtype)
                       if ttype.dtype.startswith("float") else np.zeros(shape, ttype.dtype))
    return feeds


def reference_outputs(source: str, graph: Graph, feeds: dict[str, np.ndarray]
                      ) -> tuple[str, dict[str, np.ndarray]]:
    if Path(source).suffix.lower() == ".onnx":
        return "onnxruntime", run_onnxruntime(source, feeds)
    from lowbit.models import get_model

    model = get_model(source)
    return "torch", run_torch(model.load(), feeds, model.output_names)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="an .onnx file or a bundled model name")
    parser.add_argument("--input", metavar="X.npz", help="inputs (default: real samples of a "
                        "bundled model, random inputs for an ONNX file)")
    parser.add_argument("--batch", type=int, default=3, help="batch size of generated inputs")
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="max error relative to the reference output's range")


def run(args: argparse.Namespace) -> int:
    graph = capture(args.model)
    if args.input:
        feeds = load_npz(args.input)
    elif Path(args.model).suffix.lower() == ".onnx":
        feeds = random_feeds(graph, args.batch)
    else:
        from lowbit.models import get_model

        feeds = get_model(args.model).sample_inputs(args.batch, "test")
    got = run_graph(graph, feeds)
    # the importer sanitizes ONNX names ({onnx name: lowbit name}); the reference uses the originals
    source = {new: old for old, new in graph.metadata.get("onnx_names", {}).items()}
    engine, want = reference_outputs(args.model, graph,
                                      {source.get(k, k): v for k, v in feeds.items()})
    worst = 0.0
    for name in graph.outputs:
        if source.get(name, name) not in want:
            raise LowbitError(f"the reference has no output named {name!r}", file=args.model)
        error = relative_error(got[name], want[source.get(name, name)])
        worst = max(worst, error)
        print(f"{name}: {list(got[name].shape)} max error {error:.2e} of the {engine} "
              "output range")
    verdict = "within" if worst <= args.tol else "OUTSIDE"
    print(f"{graph.name}: interpreter vs {engine} {verdict} tolerance {args.tol:g} "
          f"(worst {worst:.2e})")
    return 0 if worst <= args.tol else 1


COMMAND = Command("check", "compare the captured graph's output with torch or onnxruntime",
                  add_arguments, run)
