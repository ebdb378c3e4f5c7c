"""Each bundled real model, captured two ways, against independent references.

- torch.export capture -> interpreter  vs  torch eager on the original module;
- torch.onnx.export -> lowbit ONNX import -> interpreter  vs  onnxruntime on that file;
- both captures give the same interpreter output.
Tolerance: max abs error / output range <= 1e-5 (1e-4 for MiniLM, whose own float32 and
float64 runs differ by ~5e-5).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from lowbit.compiler.importers.onnx_import import import_onnx
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error, run_onnxruntime, run_torch

TOLERANCE = {"digits-cnn": 1e-5, "digits-vit": 1e-5, "minilm": 1e-4}
BATCH = 5  # differs from the capture batch, so the symbolic batch is exercised


@pytest.fixture(scope="module", params=sorted(TOLERANCE))
def bundled(request, tmp_path_factory):
    model = get_model(request.param)
    module = model.load()
    feeds = model.sample_inputs(BATCH, "test")
    onnx_path = tmp_path_factory.mktemp(request.param) / f"{request.param}.onnx"
    args = tuple(torch.from_numpy(a) for a in model.sample_inputs(2, "calib").values())
    axes = {name: {0: "batch"} for name in model.input_names + model.output_names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(onnx_path), input_names=list(model.input_names),
                          output_names=list(model.output_names), dynamic_axes=axes,
                          opset_version=17, dynamo=False)
    return model, module, feeds, onnx_path


def test_torch_capture_matches_torch(bundled) -> None:
    model, module, feeds, _ = bundled
    graph = capture_bundled(model.name)
    got = run_graph(graph, feeds)
    want = run_torch(module, feeds, model.output_names)
    assert list(got) == list(model.output_names)
    for name in model.output_names:
        assert relative_error(got[name], want[name]) <= TOLERANCE[model.name], name


def test_onnx_capture_matches_onnxruntime(bundled) -> None:
    model, _, feeds, onnx_path = bundled
    graph = import_onnx(onnx_path)
    got = run_graph(graph, feeds)
    want = run_onnxruntime(str(onnx_path), feeds)
    for name in model.output_names:
        assert relative_error(got[name], want[name]) <= TOLERANCE[model.name], name


def test_both_captures_agree(bundled) -> None:
    model, _, feeds, onnx_path = bundled
    from_torch = run_graph(capture_bundled(model.name), feeds)
    from_onnx = run_graph(import_onnx(onnx_path), feeds)
    for name in model.output_names:
        assert relative_error(from_onnx[name], from_torch[name]) <= TOLERANCE[model.name]


def test_captured_graph_keeps_the_real_layers(bundled) -> None:
    model, *_ = bundled
    ops = capture_bundled(model.name).op_histogram()
    expected = {"digits-cnn": {"conv", "batch_norm", "max_pool", "linear"},
                "digits-vit": {"conv", "layer_norm", "softmax", "matmul", "gelu", "linear"},
                "minilm": {"gather", "layer_norm", "softmax", "matmul", "gelu", "linear"}}
    assert expected[model.name] <= set(ops)
