"""The ``pipeline`` suite: wall time and peak memory of lowbit's own work on each bundled
model, each measured in a fresh child process so that one model's memory never counts for
another's.

Two rows per model: the pass pipeline alone (capture, the family's passes, calibration,
integer lowering and the overflow proof: ``compile_graph``) and the whole main job
(``lowbit compile MODEL --out DIR``: the same plus ONNX export, the TVM build for this host and
the measured HTML/JSON report). Peak memory is the child's maximum resident set size as the
kernel reports it (``os.wait4``). The main job issue's target: MiniLM's pipeline under 60 s
and 2 GB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lowbit.bench.suites import suite
from lowbit.models.bundled import ArrayDict

PIPELINE_SCRIPT = """
import sys
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
name, samples = sys.argv[1], int(sys.argv[2])
compile_graph(capture_bundled(name), get_model(name).sample_inputs(samples, "calib"),
              CompileOptions(progress=False))
"""
TARGET_SECONDS, TARGET_BYTES = 60.0, 2 << 30


@dataclass(frozen=True)
class Usage:
    seconds: float
    peak_bytes: int
    returncode: int


def measure_child(argv: Sequence[str]) -> Usage:
    """Wall time, peak resident memory and exit status of one child process."""
    started = time.perf_counter()
    child = subprocess.Popen(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return Usage(time.perf_counter() - started, usage.ru_maxrss * 1024, child.returncode)


def _rows(name: str, samples: int) -> list[tuple[str, Usage]]:
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as folder:
        return [
            ("pass pipeline (`compile_graph`)",
             measure_child([sys.executable, "-c", PIPELINE_SCRIPT, name, str(samples)])),
            ("main job (`lowbit compile`)",
             measure_child([sys.executable, "-m", "lowbit.cli.main", "compile", name,
                            "--calib-samples", str(samples), "--out",
                            os.path.join(folder, name)])),
        ]


@suite("pipeline", "wall time and peak memory of the pass pipeline and the main job")
def pipeline_suite(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> str:
    lines = ["Each row is one fresh child process; calibration samples as in the accuracy "
             "suite.", "", "| model | what | calibration samples | wall time (s) | "
             "peak memory (MiB) | exit |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    verdicts = []
    for name in names:
        samples = len(next(iter(calib[name].values())))
        for what, usage in _rows(name, samples):
            lines.append(f"| {name} | {what} | {samples} | {usage.seconds:.1f} | "
                         f"{usage.peak_bytes / 2**20:.0f} | {usage.returncode} |")
            if name == "minilm" and what.startswith("pass pipeline"):
                ok = (usage.returncode == 0 and usage.seconds < TARGET_SECONDS
                      and usage.peak_bytes < TARGET_BYTES)
                verdicts.append(f"- **{'PASS' if ok else 'FAIL'}** MiniLM pass pipeline under "
                                f"{TARGET_SECONDS:.0f} s and 2 GiB: {usage.seconds:.1f} s, "
                                f"{usage.peak_bytes / 2**20:.0f} MiB")
    return "\n".join(lines + ["", "Targets:", *verdicts] if verdicts else lines) + "\n"
