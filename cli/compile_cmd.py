"""``lowbit compile MODEL --calib CALIB.npz --out DIR [--bits 8] [--target llvm]``: calibrate
and lower to an integer-only program, build it with TVM for the target; writes the compile
directory (see ``lowbit.compiler.artifact`` and ``lowbit.compiler.codegen.library``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lowbit import __version__
from lowbit.cli.command import Command
from lowbit.compiler.artifact import FLOAT_GRAPH, INTEGER_GRAPH, MANIFEST, write_directory
from lowbit.compiler.codegen.library import (DEFAULT_TARGET, parse_target, target_names,
                                             write_library)
from lowbit.compiler.errors import InputError, LowbitError
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers import capture
from lowbit.compiler.serialize import save_graph
from lowbit.passes.mixed_precision.cli_support import (add_mixed_arguments, plan_from_args,
                                                      write_plan)
from lowbit.passes.quantize.block_quant import BLOCK_SIZES
from lowbit.passes.quantize.observers import OBSERVERS
from lowbit.passes.quantize.pipeline import CompileOptions, CompileResult, compile_graph
from lowbit.passes.quantize.report import agreement, render_report
from lowbit.runtime.backends import ONNX_PROGRAM
from lowbit.report.write import REPORT_HTML, REPORT_JSON, write_reports
from lowbit.runtime.npz import load_npz

AGREEMENT_SAMPLES = 32
BIT_SETTINGS = {"8": (8, 8), "4": (4, 4), "w4a8": (4, 8), "mixed": (8, 8)}


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
                  "report": "report.md", "report_html": REPORT_HTML, "report_json": REPORT_JSON,
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
                        help="8 = W8A8, 4 = W4A4, w4a8 = 4-bit weights with 8-bit activations, "
                             "mixed = 4 or 8 weight bits per layer by HAWQ-V3's ILP with 8-bit "
                             "activations (graph inputs and outputs keep 8 and 16 bits)")
    add_mixed_arguments(parser)
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
    parser.add_argument("--block-size", type=int, choices=BLOCK_SIZES, metavar="N",
                        help="block-quantized linear weights: one scale per N input channels "
                             f"({', '.join(map(str, BLOCK_SIZES))}; default: per output channel)")
    parser.add_argument("--target", type=parse_target, default=DEFAULT_TARGET,
                        metavar=target_names(),
                        help="build the integer program with TVM into DIR/model.so for this "
                             "target (default: llvm, this host's CPU; 'none' builds nothing)")


def _pass_list(text: str) -> tuple[str, ...]:
    return () if text == "none" else tuple(name for name in text.split(",") if name)


def _alpha(text: str) -> float | None:
    if text == "none":
        return None
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("alpha must lie in [0, 1] or be 'none'")
    return value


def _say(message: str) -> None:
    print(f"compile: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    graph = capture(args.model)
    timings = {"capture": time.perf_counter() - started}
    data = calibration_data(args.model, args.calib, args.calib_samples)
    weight_bits, activation_bits = BIT_SETTINGS[args.bits]
    options = CompileOptions(bits=weight_bits, activation_bits=activation_bits,
                             calibration_method=args.calib_method,
                             symmetric_activations=args.symmetric,
                             migration_alpha=args.migration_alpha, passes=args.passes,
                             block_size=args.block_size)
    plan = plan_from_args(args, graph, data, options)
    if plan is not None:
        options = replace(options, layer_bits=plan.layer_bits())
    started = time.perf_counter()
    try:
        result = compile_graph(graph, data, options)
    except InputError as err:
        raise err.located(file=args.calib) from None
    timings["passes, calibration and lowering"] = time.perf_counter() - started
    sample = {k: v[:AGREEMENT_SAMPLES] for k, v in data.items()}
    errors = agreement(result, sample)
    settings = {"weight bits": options.bits, "activation bits": options.activation_bits,
                "calibration method": options.calibration_method,
                "symmetric activations": options.symmetric_activations,
                "migration alpha": options.migration_alpha,
                "block size": options.block_size}
    report = render_report(result, args.model, settings, errors)

    def fill(folder: Path) -> None:
        library = write_library(result.integer_graph, args.target, folder)
        save_graph(result.integer_graph, folder / INTEGER_GRAPH)
        export_onnx(result.integer_graph, folder / ONNX_PROGRAM)
        save_graph(result.float_graph, folder / FLOAT_GRAPH)
        result.calibration.save(folder / "calibration.json")
        mixed = "" if plan is None else write_plan(plan, folder)
        (folder / "report.md").write_text(report + library.report_markdown + mixed)
        (folder / MANIFEST).write_text(json.dumps(
            {**manifest(result, args.model, options), **library.manifest}, indent=1,
            default=str))
        write_reports(folder, result, args.model, settings, sample, library.manifest.get("tvm"),
                      graph.metadata.get("bundled_model"), timings, _say)

    write_directory(args.out, fill)
    worst = max(errors.values())
    print(f"compiled {graph.name} to an integer-only program: "
          f"{len(result.integer_graph.nodes)} nodes, {result.ranges.summary()}; "
          f"max error vs float {worst:.2e} of the output range -> {args.out}", file=sys.stderr)
    return 0


COMMAND = Command("compile", "calibrate and lower a model to an integer-only program",
                  add_arguments, run)
