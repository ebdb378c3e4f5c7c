"""Determinism: compiling the same model and data twice gives byte-identical artifacts.

Invariant (issue 11): two ``lowbit compile`` runs of one model on one calibration set write the
same bytes into every file of the compile directory (graphs, ONNX program, TVM library,
calibration, manifest, report), timings aside. The runs are separate processes with different
``PYTHONHASHSEED`` values, so an order taken from a ``set`` or a string hash shows up as a
difference. Covered: the bundled digits-vit (layer norm, attention, GELU; no TVM build, to
keep the test short) and a small ONNX model built for ``llvm`` (the TVM library).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TIMING = re.compile(r"\b\d+(\.\d+)? s\b")  # "in 49.4 s" in the report


def _tiny_onnx(folder: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["h"], transB=1),
         helper.make_node("Relu", ["h"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    path = folder / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    calib = folder / "calib.npz"
    np.savez(calib, x=rng.standard_normal((32, 16)).astype(np.float32))
    return path, calib


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


def _normalized(path: Path) -> bytes:
    """The file's bytes, with build times taken out of the manifest and the report."""
    data = path.read_bytes()
    if path.name == "manifest.json":
        manifest = json.loads(data)
        manifest.pop("build_seconds", None)
        return json.dumps(manifest, sort_keys=True).encode()
    if path.name == "report.md":
        return TIMING.sub("<time> s", data.decode()).encode()
    return data


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(_normalized(p)).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_compiles_are_byte_identical(tmp_path: Path) -> None:
    model, calib = _tiny_onnx(tmp_path)
    first, second = tmp_path / "first", tmp_path / "second"
    _compile_both(first, model, calib, "1")
    _compile_both(second, model, calib, "2")
    a, b = _digests(first), _digests(second)
    assert {"vit/integer.lowbit", "vit/model.onnx", "tiny/model.so",
            "tiny/report.md"} <= set(a)
    assert sorted(a) == sorted(b)
    differing = sorted(name for name in a if a[name] != b[name])
    assert differing == []
    # only the timing was taken out: the raw reports differ at most in numbers followed by "s"
    raw = [(f / "tiny/report.md").read_text() for f in (first, second)]
    assert TIMING.sub("", raw[0]) == TIMING.sub("", raw[1])
