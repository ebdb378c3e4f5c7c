"""``lowbit compile MODEL --calib CALIB.npz --out DIR [--bits 8]``: calibrate and lower to an
integer-only program; writes the compile directory (see ``lowbit.compiler.artifact``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lowbit import __version__
from lowbit.cli.command import Command
from lowbit.compiler.artifact import FLOAT_GRAPH, INTEGER_GRAPH, MANIFEST, write_directory
from lowbit.compiler.errors import InputError, LowbitError
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers import capture
from lowbit.compiler.serialize import save_graph
from lowbit.passes.quantize.observers import OBSERVERS
from lowbit.passes.quantize.pipeline import CompileOptions, CompileResult, compile_graph
from lowbit.passes.quantize.report import agreement, render_report
from lowbit.runtime.backends import ONNX_PROGRAM
from lowbit.runtime.npz import load_npz

AGREEMENT_SAMPLES = 32
BIT_SETTINGS = {"8": (8, 8), "4": (4, 4), "w4a8": (4, 8)}


def calibration_data(model: str, path: str | None, samples: int) -> dict[str, np.ndarray]:
    if path:
        return load_npz(path)
    from lowbit.models import model_names, get_model

    if model not in model_names():
        raise LowbitError("--calib CALIB.npz is required for a model that is not bundled",
                          file=model)
    return get_model(model).sample_inputs(samples, "calib")


def boundary(result: CompileResult) -> dict[str, dict[str, object]]:
    """Quantization at the graph boundary, per input and output name."""
    graph = result.integer_graph
    info: dict[str, dict[str, object]] = {}
    for node in graph.nodes:
        if node.op == "quantize" and node.inputs[0] in graph.inputs:
            info[node.inputs[0]] = {"role": "input", **node.attrs}
        if node.op == "dequantize" and node.outputs[0] in graph.outputs:
            info[node.outputs[0]] = {"role": "output", **node.attrs}
    return info


def manifest(result: CompileResult, source: str, options: CompileOptions) -> dict[str, object]:
    graph = result.integer_graph
    return {
        "format": "lowbit-compile", "version": 1, "lowbit": __version__, "source": source,
        "name": graph.name, "stage": "integer", "bits": options.bits,
        "activation_bits": options.activation_bits,
        "calibration_method": options.calibration_method,
        "passes": [record.name for record in result.pass_records],
        "inputs": {n: str(graph.types[n]) for n in graph.inputs},
        "outputs": {n: str(graph.types[n]) for n in graph.outputs},
        "boundary": boundary(result),
        "files": {"integer": INTEGER_GRAPH, "float": FLOAT_GRAPH, "onnx": ONNX_PROGRAM,
                  "report": "report.md",
                  "calibration": "calibration.json"},
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="an .onnx file or a bundled model name")
    parser.add_argument("--calib", metavar="CALIB.npz",
                        help="calibration inputs keyed by input name, first axis = samples "
                             "(default for bundled models: their calibration split)")
    parser.add_argument("--calib-samples", type=int, default=256,
                        help="samples taken from a bundled model's calibration split")
    parser.add_argument("--out", required=True, metavar="DIR", help="compile directory to write")
    parser.add_argument("--bits", choices=sorted(BIT_SETTINGS), default="8",
                        help="8 = W8A8, 4 = W4A4, w4a8 = 4-bit weights with 8-bit activations "
                             "(graph inputs and outputs keep 8 and 16 bits)")
    parser.add_argument("--calib-method", choices=OBSERVERS, default="minmax",
                        help="activation range observer")
    parser.add_argument("--symmetric", action="store_true",
                        help="symmetric (zero point 0) activations everywhere")
    parser.add_argument("--passes", type=_pass_list, metavar="NAME,NAME|none",
                        help="float passes to run after clean-up, in order (default: the "
                             "model family's pipeline; `lowbit pass --list` names them)")
    parser.add_argument("--migration-alpha", type=_alpha, default=0.8, metavar="ALPHA|none",
                        help="SmoothQuant strength for LayerNorm -> linear scale migration "
                             "(default 0.8; 'none' keeps per-tensor LayerNorm codes)")


def _pass_list(text: str) -> tuple[str, ...]:
    return () if text == "none" else tuple(name for name in text.split(",") if name)


def _alpha(text: str) -> float | None:
    if text == "none":
        return None
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("alpha must lie in [0, 1] or be 'none'")
    return value


def run(args: argparse.Namespace) -> int:
    graph = capture(args.model)
    data = calibration_data(args.model, args.calib, args.calib_samples)
    weight_bits, activation_bits = BIT_SETTINGS[args.bits]
    options = CompileOptions(bits=weight_bits, activation_bits=activation_bits,
                             calibration_method=args.calib_method,
                             symmetric_activations=args.symmetric,
                             migration_alpha=args.migration_alpha, passes=args.passes)
    try:
        result = compile_graph(graph, data, options)
    except InputError as err:
        raise err.located(file=args.calib) from None
    sample = {k: v[:AGREEMENT_SAMPLES] for k, v in data.items()}
    errors = agreement(result, sample)
    settings = {"weight bits": options.bits, "activation bits": options.activation_bits,
                "calibration method": options.calibration_method,
                "symmetric activations": options.symmetric_activations,
                "migration alpha": options.migration_alpha}
    report = render_report(result, args.model, settings, errors)

    def fill(folder: Path) -> None:
        save_graph(result.integer_graph, folder / INTEGER_GRAPH)
        export_onnx(result.integer_graph, folder / ONNX_PROGRAM)
        save_graph(result.float_graph, folder / FLOAT_GRAPH)
        result.calibration.save(folder / "calibration.json")
        (folder / "report.md").write_text(report)
        (folder / MANIFEST).write_text(json.dumps(manifest(result, args.model, options),
                                                  indent=1, default=str))

    write_directory(args.out, fill)
    worst = max(errors.values())
    print(f"compiled {graph.name} to an integer-only program: "
          f"{len(result.integer_graph.nodes)} nodes, {result.ranges.summary()}; "
          f"max error vs float {worst:.2e} of the output range -> {args.out}", file=sys.stderr)
    return 0


COMMAND = Command("compile", "calibrate and lower a model to an integer-only program",
                  add_arguments, run)
