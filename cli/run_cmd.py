"""``lowbit run MODEL --input X.npz --output Y.npz [--backend interp|onnx|tvm]``.

MODEL is a compile directory, a graph file or anything ``capture`` accepts (the ``onnx`` and
``tvm`` backends need a compile directory; see ``lowbit.runtime.backends``). Inputs and
outputs are npz files keyed by the graph's input and output names; the output file is
written atomically.
"""

from __future__ import annotations

import argparse
import sys

from lowbit.cli.command import Command
from lowbit.compiler.errors import InputError
from lowbit.runtime.backends import BACKENDS
from lowbit.runtime.npz import load_npz, save_npz


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a .lowbit graph, .onnx file or bundled name")
    parser.add_argument("--input", required=True, metavar="X.npz",
                        help="one array per graph input, keyed by input name")
    parser.add_argument("--output", required=True, metavar="Y.npz",
                        help="written with one array per graph output")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="interp",
                        help="interp: the reference interpreter; onnx: the directory's "
                             "model.onnx in onnxruntime; tvm: its TVM library (aarch64 ones "
                             "under qemu-aarch64 on other hosts)")


def run(args: argparse.Namespace) -> int:
    feeds = load_npz(args.input)
    try:
        outputs = BACKENDS[args.backend](args.model, feeds)
    except InputError as err:
        raise err.located(file=args.input) from None
    save_npz(args.output, outputs)
    shapes = ", ".join(f"{k} {list(v.shape)}" for k, v in outputs.items())
    print(f"ran {args.model} ({args.backend}): {shapes} -> {args.output}", file=sys.stderr)
    return 0


COMMAND = Command("run", "run a graph on npz inputs and write npz outputs", add_arguments, run)
