"""A tiny ONNX model and calibration set shared by the tests that run ``lowbit compile`` in
another process (determinism, interrupted compiles)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_onnx(folder: Path) -> tuple[Path, Path]:
    """``Gemm`` (16 -> 8) then ``Relu``, saved as ``folder/tiny.onnx``, and 32 calibration
    samples as ``folder/calib.npz``; returns both paths."""
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
