"""``lowbit bench MODEL|all [--suite NAME] [--calib-samples N] [--out FILE.md]``.

Runs one benchmark suite (``lowbit.bench.suites``; default ``accuracy``: float torch, lowbit's
float interpreter, lowbit INT8 and W4A8, onnxruntime QDQ INT8 and W4A8, NNCF INT8, torch PT2E
INT8 and W4A8 on the same calibration inputs) in one process and prints its markdown report
with a provenance header. With ``--out`` it also writes the report to FILE.md (atomically) and
the suite's pictures beside it (FILE-NAME.png, linked from the report).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

from lowbit.cli.command import Command
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.fileio import write_atomically, write_text_atomically
from lowbit.models import get_model, model_names
from lowbit.models.bundled import ArrayDict

DEFAULT_CALIB_SAMPLES = {"minilm": 128}
FALLBACK_CALIB_SAMPLES = 256


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL|all",
                        help=f"a bundled model ({', '.join(model_names())}) or all of them")
    parser.add_argument("--calib-samples", type=positive_int, metavar="N",
                        help="calibration samples for every contender (default: 256; "
                             "128 for minilm)")
    parser.add_argument("--suite", default="accuracy", metavar="NAME",
                        help="which benchmark suite to run (default: accuracy)")
    parser.add_argument("--out", metavar="FILE.md", help="also write the report here")


def command_line(args: argparse.Namespace) -> str:
    """The command as it was given, options in canonical order."""
    words = ["lowbit", "bench", args.model]
    if args.suite != "accuracy":
        words += ["--suite", args.suite]
    if args.calib_samples is not None:
        words += ["--calib-samples", str(args.calib_samples)]
    if args.out is not None:
        words += ["--out", args.out]
    return shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from lowbit.bench.report import provenance
    from lowbit.bench.suites import suite_output, suites

    available = suites()
    if args.suite not in available:
        raise LowbitError(f"unknown suite; expected one of {', '.join(sorted(available))}",
                          file=args.suite)
    chosen = available[args.suite]
    names = model_names() if args.model == "all" else [args.model]
    if not set(names) <= set(model_names()):
        raise LowbitError(f"unknown model; expected 'all' or one of {', '.join(model_names())}",
                          file=args.model)
    calib: dict[str, ArrayDict] = {}
    for name in names:  # load every calibration set first: a bad N fails before any long run
        count = args.calib_samples or DEFAULT_CALIB_SAMPLES.get(name, FALLBACK_CALIB_SAMPLES)
        try:
            calib[name] = get_model(name).sample_inputs(count, "calib")
        except ValueError as err:
            raise LowbitError(f"--calib-samples: {err}", file=name) from None
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    output = suite_output(chosen.run(names, calib))
    report = provenance(chosen.title, command_line(args), started,
                        time.perf_counter() - clock) + "\n\n" + output.markdown
    if args.out is not None and output.figures:
        report += "\n" + "\n".join(f"![{name}]({path.name})" for name, path
                                   in _write_figures(Path(args.out), output.figures).items()) + "\n"
    elif output.figures:
        print(f"pictures ({', '.join(output.figures)}) are written with --out", file=sys.stderr)
    print(report, end="")
    if args.out is not None:
        write_text_atomically(args.out, report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _write_figures(out: Path, figures: Mapping[str, bytes]) -> dict[str, Path]:
    """Each picture as ``<out stem>-<name>.png`` beside the report; returns the paths."""
    written = {}
    for name, png in figures.items():
        path = out.with_name(f"{out.stem}-{name}.png")
        write_atomically(path, lambda stream, data=png: stream.write(data))
        print(f"wrote {path}", file=sys.stderr)
        written[name] = path
    return written


COMMAND = Command("bench", "benchmark suites side by side with peers (lowbit bench --help)",
                  add_arguments, run)
