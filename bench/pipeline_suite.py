"""The ``pipeline`` suite: wall time and peak memory of lowbit's own work on each bundled
model, each measured in a fresh child process so that one model's memory never counts for
another's.

Two rows per model: the pass pipeline alone (capture, the family's passes, calibration,
integer lowering and the overflow proof: ``compile_graph``) and the whole main job
(``lowbit compile MODEL --out DIR``: the same plus ONNX export, the TVM build for this host and
the measured HTML/JSON report). Peak memory is the child's own high-water resident set size
(``VmHWM`` of ``/proc/self/status``, written by the child as it exits): ``ru_maxrss`` from
``wait4`` would also count the parent's pages the child shared between fork and exec. The
main job issue's target: MiniLM's pipeline under 60 s and 2 GB.
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
HIGH_WATER_WRAPPER = """
import atexit, runpy, sys
report, code, args = sys.argv[1], sys.argv[2], sys.argv[3:]

def high_water():
    with open("/proc/self/status") as status, open(report, "w") as out:
        out.write(next(l.split()[1] for l in status if l.startswith("VmHWM:")))

atexit.register(high_water)
sys.argv = ["-c", *args]
if code.startswith("-m "):
    runpy.run_module(code[3:], run_name="__main__")
else:
    exec(compile(code, "<pipeline>", "exec"))
"""


@dataclass(frozen=True)
class Usage:
    seconds: float
    peak_bytes: int
    returncode: int


def measure_child(code: str, args: Sequence[str] = ()) -> Usage:
    """Wall time, peak resident memory and exit status of a fresh Python running ``code``
    (source text, or ``-m MODULE``) with ``args`` as its ``sys.argv[1:]``."""
    with tempfile.TemporaryDirectory(prefix="lowbit-hwm-") as folder:
        report = os.path.join(folder, "vmhwm")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", HIGH_WATER_WRAPPER, report, code, *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        seconds = time.perf_counter() - started
        with open(report) as kib:
            return Usage(seconds, int(kib.read()) * 1024, done.returncode)


def _rows(name: str, samples: int) -> list[tuple[str, Usage]]:
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-") as folder:
        return [
            ("pass pipeline (`compile_graph`)",
             measure_child(PIPELINE_SCRIPT, [name, str(samples)])),
            ("main job (`lowbit compile`)",
             measure_child("-m lowbit.cli.main", ["compile", name, "--calib-samples",
                                                  str(samples), "--out",
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
