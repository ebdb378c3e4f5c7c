"""The contenders of the speed suite: lowbit's TVM INT8 library for this host, onnxruntime on
its own ``quantize_static`` INT8 model and on the float model, and eager torch float.

Each is a ``Contender`` whose ``build(model, calib)`` prepares a predict function taking and
returning numpy arrays by name, so that every row is timed through the same interface.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import onnxruntime as ort

from lowbit.bench.contender import Contender, float_torch
from lowbit.bench.onnx_export import export_float_onnx
from lowbit.bench.peers_onnxruntime import onnxruntime_qdq, session_predictor
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

LOWBIT_TVM = "lowbit TVM INT8 (llvm)"
ORT_INT8 = "onnxruntime INT8 (QDQ)"
ORT_FLOAT = "onnxruntime float"
TORCH_FLOAT = "torch float"


def lowbit_tvm_int8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """``compile_graph`` defaults on ``calib``, built by TVM for this host's CPU."""
    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.runtime.tvm_backend import load_tvm

    result = compile_graph(capture_bundled(model.name), calib, CompileOptions(progress=False))
    return load_tvm(build(result.integer_graph, "llvm"))


def onnxruntime_float(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """The float model exported as the INT8 peer exports it, in an ORT CPU session."""
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-ort-float-") as folder:
        path = export_float_onnx(model, calib, Path(folder) / "float.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session_predictor(session, model)


SPEED_CONTENDERS: tuple[Contender, ...] = (
    Contender(LOWBIT_TVM, "`compile_graph` defaults, `tvm_build.build(graph, \"llvm\")` for "
              "this host's CPU, run by the Relax VM (numpy in and out)", lowbit_tvm_int8),
    Contender(ORT_INT8, "onnxruntime `quantize_static` QDQ (per-channel int8 weights, int8 "
              "activations, MinMax) on the same calibration inputs; ORT CPU session",
              onnxruntime_qdq),
    Contender(ORT_FLOAT, "the legacy float ONNX export (opset 17); ORT CPU session",
              onnxruntime_float),
    Contender(TORCH_FLOAT, "the eager float32 torch module under `torch.no_grad`", float_torch),
)
