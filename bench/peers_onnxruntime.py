"""Peer: onnxruntime `quantize_static` in QDQ format, run by an onnxruntime CPU session.

Settings: per-channel int8 (INT8 row) or int4 (W4A8 row) weights, per-tensor int8 (asymmetric)
activations, MinMax calibration on the same calibration inputs lowbit gets; every other option
is ORT's default. The float export goes through `quant_pre_process` (shape inference and graph
clean-up) first, as the ORT quantization docs recommend.

The export is opset 17, and ONNX's own QuantizeLinear/DequantizeLinear take 4-bit types only
from opset 21, so the W4A8 model uses ORT's `com.microsoft` Q/DQ ops (`UseQDQContribOps`, what
ORT itself falls back to, with a warning, below opset 21); its weights are INT4 initializers.
"""

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from lowbit.bench.onnx_export import export_float_onnx
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn

CALIB_BATCH = 32


class BatchReader(CalibrationDataReader):
    """Feeds the calibration inputs to ORT's calibrator in batches of CALIB_BATCH."""

    def __init__(self, calib: ArrayDict) -> None:
        self._batches = self._split(calib)

    @staticmethod
    def _split(calib: ArrayDict) -> Iterator[ArrayDict]:
        count = len(next(iter(calib.values())))
        for start in range(0, count, CALIB_BATCH):
            yield {name: array[start : start + CALIB_BATCH] for name, array in calib.items()}

    def get_next(self) -> ArrayDict | None:
        return next(self._batches, None)


def quantize_with_onnxruntime(model: BundledModel, calib: ArrayDict, folder: Path,
                              weight_type: QuantType = QuantType.QInt8) -> Path:
    """Export, pre-process and statically quantize `model` with `weight_type` weights and int8
    activations; returns the QDQ model's path."""
    float_path = export_float_onnx(model, calib, folder / "float.onnx")
    prepared = folder / "prepared.onnx"
    quant_pre_process(str(float_path), str(prepared))
    quantized = folder / "qdq.onnx"
    contrib_qdq = weight_type in (QuantType.QInt4, QuantType.QUInt4)  # see the module docstring
    quantize_static(str(prepared), str(quantized), BatchReader(calib),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=weight_type,
                    calibrate_method=CalibrationMethod.MinMax,
                    extra_options={"UseQDQContribOps": contrib_qdq})
    return quantized


def session_predictor(session: ort.InferenceSession, model: BundledModel) -> PredictFn:
    """A predictor feeding ``model``'s inputs to ``session`` (contiguous, as ORT wants them)
    and returning its outputs by name."""
    def predict(feeds: ArrayDict) -> ArrayDict:
        outputs = session.run(list(model.output_names),
                              {name: np.ascontiguousarray(feeds[name])
                               for name in model.input_names})
        return dict(zip(model.output_names, outputs, strict=True))
    return predict


def cpu_predictor(path: Path, model: BundledModel) -> PredictFn:
    """A predictor running the ONNX file at `path` in an onnxruntime CPU session (the file is
    read now; it may be deleted afterwards)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session_predictor(session, model)


def _quantized_predictor(model: BundledModel, calib: ArrayDict,
                         weight_type: QuantType) -> PredictFn:
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-ort-") as folder:
        return cpu_predictor(quantize_with_onnxruntime(model, calib, Path(folder), weight_type),
                             model)


def onnxruntime_qdq(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """A predictor running the QDQ INT8 model in an onnxruntime CPU session."""
    return _quantized_predictor(model, calib, QuantType.QInt8)


def onnxruntime_qdq_w4a8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """A predictor running the QDQ model with INT4 weights, int8 activations (W4A8)."""
    return _quantized_predictor(model, calib, QuantType.QInt4)
