"""Peer: NNCF post-training quantization (`nncf.quantize`, ONNX backend), run by an onnxruntime
CPU session.

The float model is the same opset-17 export the onnxruntime peer quantizes; the calibration
data is an `nncf.Dataset` over the same calibration inputs, one sample per item, with
`subset_size` = every sample. Everything else is NNCF's default: the performance preset
(symmetric int8 weights per channel, symmetric 8-bit activations), MinMax ranges, fast bias
correction. A second row passes `model_type=nncf.ModelType.TRANSFORMER`, which NNCF's docs ask
for on transformers: the mixed preset (asymmetric activations, symmetric activations into
MatMuls of two activations) and its transformer ignored patterns (such as multi-head attention
outputs) where they match. On MiniLM it is
the difference between a mean cosine of about 0.87 and 0.997, so both rows are INT8 peers.

There is no NNCF W4A8 row: `nncf.quantize`'s ONNX backend writes only 8-bit Q/DQ pairs (it
raises for other widths in `convert_fq_params_to_onnx_params`), and `nncf.compress_weights`
INT4 keeps float activations (W4A16), which is not W4A8.

NNCF is imported on first use only (it is in the `bench` extra); its log lines are limited to
errors and its progress bars (rich, on stdout, where `lowbit bench` prints its report) are
swallowed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import onnx

from lowbit.bench.onnx_export import export_float_onnx
from lowbit.bench.peers_onnxruntime import cpu_predictor
from lowbit.bench.peers_packages import installed_version, require
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn


def nncf_version() -> str | None:
    """The installed NNCF version, or None when it is not installed."""
    return installed_version("nncf")


def quantize_with_nncf(model: BundledModel, calib: ArrayDict, folder: Path,
                       transformer: bool = False) -> Path:
    """Export `model` and quantize it with `nncf.quantize`'s defaults (plus the transformer
    model type when asked) on every sample of `calib`; returns the quantized ONNX model's path.
    Raises ImportError without NNCF."""
    require("nncf")
    import nncf

    nncf.set_log_level(logging.ERROR)
    float_model = onnx.load(export_float_onnx(model, calib, folder / "float.onnx"))
    count = len(next(iter(calib.values())))
    samples = [{name: array[index : index + 1] for name, array in calib.items()}
               for index in range(count)]
    with contextlib.redirect_stdout(io.StringIO()):  # NNCF's progress bars
        quantized = nncf.quantize(float_model, nncf.Dataset(samples), subset_size=count,
                                  model_type=nncf.ModelType.TRANSFORMER if transformer else None)
    path = folder / "nncf.onnx"
    onnx.save(quantized, path)
    return path


def _predictor(model: BundledModel, calib: ArrayDict, transformer: bool) -> PredictFn:
    with tempfile.TemporaryDirectory(prefix="lowbit-bench-nncf-") as folder:
        return cpu_predictor(quantize_with_nncf(model, calib, Path(folder), transformer), model)


def nncf_int8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """A predictor running NNCF's default INT8 model in an onnxruntime CPU session."""
    return _predictor(model, calib, transformer=False)


def nncf_int8_transformer(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """As `nncf_int8`, quantized with `model_type=nncf.ModelType.TRANSFORMER`."""
    return _predictor(model, calib, transformer=True)
