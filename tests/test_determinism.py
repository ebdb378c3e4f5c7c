"""Determinism: compiling the same model and data twice gives byte-identical artifacts.

Invariant (issue 11): two ``lowbit compile`` runs of one model on one calibration set write the
same bytes into every file of the compile directory (graphs, ONNX program, TVM library,
calibration), and the same manifest and reports once timings are taken out (JSON fields named
for seconds, latency or ms; in the markdown and HTML reports every number and the latency
plot, whose non-timing numbers ``report.json`` holds exactly). The runs are separate processes with different
``PYTHONHASHSEED`` values, so an order taken from a ``set`` or a string hash shows up as a
difference. Covered: the bundled digits-vit (layer norm, attention, GELU; no TVM build, to
keep the test short) and a small ONNX model built for ``llvm`` (the TVM library).

TVM's own code generation needed one fix for this: Relax's shape lowering wrote the
shape heap in an address-dependent order (about one build in four differed), which
``tvm_store_order`` canonicalizes; the TVM library is compared byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.compile_runs import tiny_onnx

TIMING_KEY = re.compile(r"seconds|latency|\bms\b")  # manifest/report.json timing fields
NUMBER = re.compile(r"\d+(\.\d+)?(e[-+]?\d+)?")
LATENCY_PLOT = re.compile(r"<img alt='latency[^>]*>")


def _compile_both(folder: Path, model: Path, calib: Path, hash_seed: str) -> None:
    commands = [["compile", "digits-vit", "--calib-samples", "64", "--target", "none",
                 "--out", str(folder / "vit")],
                ["compile", str(model), "--calib", str(calib), "--out", str(folder / "tiny")]]
    script = ("import sys; from lowbit.cli.main import main\n"
              f"for argv in {commands!r}:\n"
              "    assert main(argv) == 0, argv\n")
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]


def _without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if not TIMING_KEY.search(k)}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _normalized(path: Path) -> bytes:
    """The file's bytes; timings taken out of JSON (by key) and of the human-readable reports
    (every number, and latency plots: their numbers are compared in ``report.json``)."""
    data = path.read_bytes()
    if path.suffix == ".json":
        return json.dumps(_without_timings(json.loads(data)), sort_keys=True).encode()
    if path.suffix in (".md", ".html"):
        text = LATENCY_PLOT.sub("<latency plot>", data.decode())
        return NUMBER.sub("<n>", text).encode()
    return data


def _digests(folder: Path) -> dict[str, str]:
    """sha256 per file, timings taken out."""
    return {str(p.relative_to(folder)): hashlib.sha256(_normalized(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_compiles_are_byte_identical(tmp_path: Path) -> None:
    model, calib = tiny_onnx(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    _compile_both(first, model, calib, "1")
    _compile_both(second, model, calib, "2")
    a, b = _digests(first), _digests(second)
    assert {"vit/integer.lowbit", "vit/model.onnx", "tiny/model.so",
            "tiny/report.md"} <= set(a)
    assert sorted(a) == sorted(b)
    differing = sorted(name for name in a if a[name] != b[name])
    assert differing == []
