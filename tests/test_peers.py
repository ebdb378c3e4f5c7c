"""The accuracy benchmark's peer quantizers, run for real on digits-cnn with a few calibration
samples: NNCF's INT8 model is quantized and close to float, and the W4A8 peers' weights are
4-bit codes (onnxruntime: INT4 initializers; PT2E: int8 codes within [-8, 7])."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, numpy_helper
from onnxruntime.quantization import QuantType

from lowbit.bench.contender import float_torch
from lowbit.bench.peers_nncf import quantize_with_nncf
from lowbit.bench.peers_onnxruntime import cpu_predictor, quantize_with_onnxruntime
from lowbit.bench.peers_pt2e import quantize_with_pt2e, w4a8_config
from lowbit.models import BundledModel, get_model, torch_predictor
from lowbit.models.bundled import ArrayDict

CALIB_SAMPLES = 32
INT8_DROP = 0.01  # INT8 peers: at most 1 point below float on digits-cnn
W4A8_DROP = 0.05  # W4A8 peers: at most 5 points below float (a broken 4-bit scale loses far more)

# the PT2E peer imports torch._inductor, whose import of torch.utils.mkldnn warns about torch.jit
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


@pytest.fixture(scope="module")
def model() -> BundledModel:
    return get_model("digits-cnn")


@pytest.fixture(scope="module")
def calib(model: BundledModel) -> ArrayDict:
    return model.sample_inputs(CALIB_SAMPLES, "calib")


@pytest.fixture(scope="module")
def float_accuracy(model: BundledModel, calib: ArrayDict) -> float:
    return model.evaluate(float_torch(model, calib))["accuracy"]


@pytest.fixture()
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="lowbit-test-peers-") as name:
        yield Path(name)


def _weight_dequantizers(proto: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The DequantizeLinear node feeding each Conv/Gemm weight; fails if one has none."""
    producers = {out: node for node in proto.graph.node for out in node.output}
    layers = [node for node in proto.graph.node if node.op_type in ("Conv", "Gemm")]
    assert layers
    found = [producers.get(node.input[1]) for node in layers]
    assert all(dq is not None and dq.op_type == "DequantizeLinear" for dq in found), found
    return found


def _initializers(proto: onnx.ModelProto) -> dict[str, TensorProto]:
    return {tensor.name: tensor for tensor in proto.graph.initializer}


@pytest.mark.parametrize("transformer", [False, True])
def test_nncf_int8_is_quantized_and_close_to_float(model: BundledModel, calib: ArrayDict,
                                                    float_accuracy: float, folder: Path,
                                                    transformer: bool) -> None:
    path = quantize_with_nncf(model, calib, folder, transformer)
    proto = onnx.load(path)
    initializers = _initializers(proto)
    for dq in _weight_dequantizers(proto):
        assert initializers[dq.input[0]].data_type == TensorProto.INT8
    accuracy = model.evaluate(cpu_predictor(path, model))["accuracy"]
    assert accuracy >= float_accuracy - INT8_DROP


def test_onnxruntime_w4a8_has_int4_weights_and_int8_activations(
        model: BundledModel, calib: ArrayDict, float_accuracy: float, folder: Path) -> None:
    path = quantize_with_onnxruntime(model, calib, folder, QuantType.QInt4)
    proto = onnx.load(path)
    initializers = _initializers(proto)
    for dq in _weight_dequantizers(proto):
        weight = initializers[dq.input[0]]
        assert weight.data_type == TensorProto.INT4
        codes = numpy_helper.to_array(weight).astype(np.int8)
        assert codes.min() >= -8 and codes.max() <= 7 and np.abs(codes).max() >= 7
    activations = [node for node in proto.graph.node if node.op_type == "QuantizeLinear"]
    assert activations and all(initializers[node.input[2]].data_type == TensorProto.INT8
                               for node in activations)
    accuracy = model.evaluate(cpu_predictor(path, model))["accuracy"]
    assert accuracy >= float_accuracy - W4A8_DROP


def test_pt2e_w4a8_weights_are_4bit_codes(model: BundledModel, calib: ArrayDict,
                                          float_accuracy: float) -> None:
    module = quantize_with_pt2e(model, calib, w4a8_config())
    dequantize = torch.ops.quantized_decomposed.dequantize_per_channel.default
    layers = [node for node in module.graph.nodes
              if node.target in (torch.ops.aten.conv2d.default, torch.ops.aten.linear.default)]
    assert layers
    for layer in layers:
        weight = layer.args[1]
        assert weight.target == dequantize, layer
        codes_node, _, _, _, low, high, dtype = weight.args
        assert (low, high, dtype) == (-8, 7, torch.int8)
        codes = getattr(module, codes_node.target)
        assert codes.dtype == torch.int8
        assert int(codes.min()) >= -8 and int(codes.max()) <= 7 and int(codes.abs().max()) >= 7
    predict = torch_predictor(module, model.input_names, model.output_names)
    assert model.evaluate(predict)["accuracy"] >= float_accuracy - W4A8_DROP
