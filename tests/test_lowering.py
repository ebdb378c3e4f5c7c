"""Integer lowering: bit-exact across backends, integer-only, overflow-proved, and each piece
checked against numbers derived by hand or by torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lowbit.compiler import GraphBuilder, LowbitError, Sym, TensorType
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.passes import PassManager
from lowbit.passes.fold_batch_norm import FoldBatchNorm
from lowbit.passes.quantize.lowering import LoweringOptions, check_integer_only, lower_graph
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.passes.quantize.range_analysis import analyze_ranges
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error, run_onnxruntime

CALIB = {"digits-cnn": 64, "digits-vit": 64, "minilm": 16}


@pytest.fixture(scope="module", params=sorted(CALIB))
def compiled(request, tmp_path_factory):
    model = get_model(request.param)
    result = compile_graph(capture_bundled(model.name),
                           model.sample_inputs(CALIB[model.name], "calib"),
                           CompileOptions(progress=False))
    path = tmp_path_factory.mktemp(model.name) / "model.onnx"
    export_onnx(result.integer_graph, path)
    return model, result, path


def _random_feeds(model, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Random inputs: uniform images over twice the data range, random token ids and masks."""
    rng = np.random.default_rng(seed)
    real = model.sample_inputs(batch, "test")
    feeds = {}
    for name, array in real.items():
        if array.dtype.kind == "f":
            feeds[name] = rng.uniform(-1.0, 2.0, array.shape).astype(array.dtype)
        elif name == "attention_mask":
            lengths = rng.integers(1, array.shape[1] + 1, array.shape[0])
            feeds[name] = (np.arange(array.shape[1]) < lengths[:, None]).astype(array.dtype)
        else:
            feeds[name] = rng.integers(0, 30000, array.shape).astype(array.dtype)
    return feeds


def test_interpreter_and_onnxruntime_give_identical_bits(compiled) -> None:
    model, result, path = compiled
    for feeds in (model.sample_inputs(7, "test"), _random_feeds(model, 5, seed=1)):
        got = run_graph(result.integer_graph, feeds)
        want = run_onnxruntime(str(path), feeds)
        for name in model.output_names:
            assert got[name].dtype == want[name].dtype
            assert np.array_equal(got[name], want[name]), name


def test_program_is_integer_only_and_overflow_proved(compiled) -> None:
    _, result, _ = compiled
    check_integer_only(result.integer_graph)
    ops = set(result.integer_graph.op_histogram())
    assert not ops & {"conv", "linear", "matmul", "softmax", "gelu", "layer_norm"}
    assert result.ranges.unproved == []


def test_integer_program_stays_close_to_float(compiled) -> None:
    model, result, _ = compiled
    feeds = model.sample_inputs(16, "test")
    want = run_graph(result.float_graph, feeds)
    got = run_graph(result.integer_graph, feeds)
    for name in model.output_names:
        if model.name == "minilm":  # embeddings: compare directions
            cosine = np.sum(got[name] * want[name], 1) / np.linalg.norm(got[name], axis=1) \
                / np.linalg.norm(want[name], axis=1)
            assert cosine.mean() > 0.98
        else:
            assert relative_error(got[name], want[name]) < 0.1


def test_provenance_survives_lowering(compiled) -> None:
    _, result, _ = compiled
    assert result.integer_graph.captured == result.float_graph.captured
    assert result.integer_graph.covered_origins() == result.float_graph.covered_origins()


def _one_linear_graph() -> tuple:
    builder = GraphBuilder("one-linear")
    origin = builder.capture("fc", "aten.linear.default")
    relu_origin = builder.capture("relu", "aten.relu.default")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 2)))
    w = builder.add_constant(np.array([[1.0, 2.0], [3.0, -1.0]], np.float32), "w")
    b = builder.add_constant(np.array([0.5, -0.25], np.float32), "b")
    y = builder.add("linear", [x, w, b], origin, hint="fc")
    out = builder.add("relu", [y], relu_origin, hint="out")
    return builder.finish([out]), out


def test_linear_relu_by_hand() -> None:
    """x in [-1, 1] (int8 affine: s = 2/255, zp = round(-128 + 1/s) = 0), W rows scaled by
    2/127 and 3/127; the output is a graph output, so 16-bit: relu range [0, 4.5] gives
    s = 4.5/65535, zp = -32768, and the fused relu clamps at the zero point."""
    graph, out = _one_linear_graph()
    ranges = {"x": (-1.0, 1.0), "fc": (-4.0, 4.5), out: (0.0, 4.5)}
    program, stats = lower_graph(graph, ranges)
    assert stats["fused_activations"] == ["out"]
    assert [n.op for n in program.nodes] == ["quantize", "int_linear", "requantize",
                                            "dequantize"]
    s_x, s_out, zp_out = 2.0 / 255, 4.5 / 65535, -32768
    w_scale = np.array([2.0 / 127, 3.0 / 127])
    w_codes = np.array([[64, 127], [127, -42]])  # round(W / w_scale), ties to even
    x = np.array([[0.5, -0.3], [-1.0, 1.0], [0.1, 0.2]], np.float32)
    x_codes = np.clip(np.rint(x.astype(np.float64) / s_x), -128, 127)  # zp = 0
    bias_codes = np.rint(np.array([0.5, -0.25]) / (s_x * w_scale))
    acc = x_codes @ w_codes.T + bias_codes
    real = acc * s_x * w_scale
    expected_codes = np.clip(np.floor(real / s_out + 0.5) + zp_out, zp_out, 32767)
    got = run_graph(program, {"x": x})[out]
    np.testing.assert_allclose(got, (expected_codes - zp_out) * s_out, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, np.maximum(x @ [[1, 3], [2, -1]] + [0.5, -0.25], 0),
                               atol=0.05)


def test_four_bit_weights_by_hand() -> None:
    """W4: per-row scales max|W_row| / 7 = 2/7 and 3/7; codes round half to even and clamp to
    [-7, 7]; the 8-bit boundary input and the 16-bit output are as in the 8-bit case."""
    graph, out = _one_linear_graph()
    ranges = {"x": (-1.0, 1.0), "fc": (-4.0, 4.5), out: (0.0, 4.5)}
    program, _ = lower_graph(graph, ranges, LoweringOptions(bits=4))
    weight = program.constants[program.nodes[1].inputs[1]]
    np.testing.assert_array_equal(weight, [[4, 7], [7, -2]])  # [1, 2]*7/2, [3, -1]*7/3
    s_x, s_out, zp_out = 2.0 / 255, 4.5 / 65535, -32768
    w_scale = np.array([2.0 / 7, 3.0 / 7])
    x = np.array([[0.5, -0.3], [-1.0, 1.0], [0.1, 0.2]], np.float32)
    x_codes = np.clip(np.rint(x.astype(np.float64) / s_x), -128, 127)
    bias_codes = np.rint(np.array([0.5, -0.25]) / (s_x * w_scale))
    real = (x_codes @ weight.T.astype(np.float64) + bias_codes) * s_x * w_scale
    expected_codes = np.clip(np.floor(real / s_out + 0.5) + zp_out, zp_out, 32767)
    np.testing.assert_allclose(run_graph(program, {"x": x})[out],
                               (expected_codes - zp_out) * s_out, rtol=0, atol=1e-6)


def test_four_bit_activations_stay_in_range_and_bit_exact(tmp_path) -> None:
    """W4A4 on the digits CNN: every requantized int8 code fits 4 bits, ONNX Runtime agrees."""
    model = get_model("digits-cnn")
    result = compile_graph(capture_bundled(model.name), model.sample_inputs(64, "calib"),
                           CompileOptions(bits=4, activation_bits=4, progress=False))
    program = result.integer_graph
    narrow = [n for n in program.nodes if n.op == "requantize" and n.attrs["dtype"] == "int8"]
    assert narrow and all(-8 <= n.attrs["qmin"] and n.attrs["qmax"] <= 7 for n in narrow)
    feeds = model.sample_inputs(16, "test")
    values = run_graph(program, feeds, keep=True)
    assert all(values[n.outputs[0]].min() >= -8 and values[n.outputs[0]].max() <= 7
               for n in narrow)
    export_onnx(program, tmp_path / "w4a4.onnx")
    ours = run_graph(program, feeds)
    theirs = run_onnxruntime(str(tmp_path / "w4a4.onnx"), feeds)
    for name in program.outputs:
        np.testing.assert_array_equal(ours[name], theirs[name])


def test_four_bit_attention_probabilities_round_to_fifteenths(tmp_path) -> None:
    """W4A4 on the digits ViT: A @ V reads 4-bit probability codes (A4 means every product
    input), ``k / 15`` rounded to nearest from the softmax of the integer logits, not floored;
    ONNX Runtime agrees bit for bit."""
    model = get_model("digits-vit")
    program = compile_graph(capture_bundled(model.name), model.sample_inputs(64, "calib"),
                            CompileOptions(bits=4, activation_bits=4, progress=False)
                            ).integer_graph
    feeds = model.sample_inputs(16, "test")
    values = run_graph(program, feeds, keep=True)
    softmaxes = [n for n in program.nodes if n.op == "int_softmax"]
    assert len(softmaxes) == 2
    for node in softmaxes:
        carried = program.metadata["quantized_values"][node.name.rsplit(".", 1)[0]]
        assert carried["scale"] == pytest.approx(1 / 15) and carried["zero_point"] == 0
        codes = values[carried["codes"]].astype(np.float64)
        logits = values[node.inputs[0]].astype(np.float64) * node.attrs["scale"]
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        wanted = 15 * probs / probs.sum(-1, keepdims=True)
        assert codes.min() >= 0 and codes.max() <= 15
        assert np.abs(codes - wanted).max() <= 1.0  # i-exp's error can cross a boundary
        assert np.mean(codes == np.rint(wanted)) > 0.99  # floor(wanted) matches ~83% here
    export_onnx(program, tmp_path / "vit_w4a4.onnx")
    theirs = run_onnxruntime(str(tmp_path / "vit_w4a4.onnx"), feeds)
    for name, ours in run_graph(program, feeds).items():
        np.testing.assert_array_equal(ours, theirs[name])


def test_float_op_inside_is_named() -> None:
    graph, out = _one_linear_graph()
    program, _ = lower_graph(graph, {"x": (-1.0, 1.0), "fc": (-4.0, 4.5), out: (0.0, 4.5)})
    node = program.nodes[1]
    program.nodes.insert(2, type(node)("sneaky", "relu", (program.inputs[0],), ("s",), {},
                                       node.origin))
    program.types["s"] = program.types[program.inputs[0]]
    with pytest.raises(LowbitError) as caught:
        check_integer_only(program)
    assert caught.value.node == "sneaky" and caught.value.op == "relu"


def test_range_analysis_flags_a_possible_overflow() -> None:
    builder = GraphBuilder("wide")
    origin = builder.capture("fc", "linear")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 4096)))
    codes = builder.add("quantize", [x], origin, {"scale": 0.01, "dtype": "int8"})
    w = builder.add_constant(np.full((2, 4096), -127, np.int8), "w")
    b = builder.add_constant(np.array([0, -2**31 + 2**20], np.int32), "b")
    acc = builder.add("int_linear", [codes, w, b], origin)
    report = analyze_ranges(builder.finish([acc]))
    # channel 1: bias - 4096 * 128 * 127 underflows int32; channel 0 alone would not
    assert report.unproved == ["int_linear"]
    assert math.isclose(128 * 127 * 4096 / 2**31, 0.031, rel_tol=0.01)


def test_batch_norm_folding_keeps_torch_output() -> None:
    model = get_model("digits-cnn")
    graph = capture_bundled("digits-cnn")
    folded, records = PassManager([FoldBatchNorm()]).run(graph)
    assert "batch_norm" not in folded.op_histogram() and len(records[0].stats["folded"]) == 4
    feeds = model.sample_inputs(32, "test")
    with torch.no_grad():
        want = model.load()(torch.from_numpy(feeds["image"])).numpy()
    assert relative_error(run_graph(folded, feeds)["logits"], want) < 1e-5
    assert folded.covered_origins() == graph.covered_origins()


class UserNet(torch.nn.Module):
    """A model lowbit does not bundle, with ops the bundled ones lack."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.silu(self.bn(self.conv(pixels)))
        y = torch.nn.functional.avg_pool2d(torch.tanh(y) + torch.sigmoid(y), 2, padding=1)
        return self.fc(y.mean((2, 3)))


def test_user_onnx_model_compiles_bit_exact_and_close(tmp_path) -> None:
    from lowbit.compiler.importers.onnx_import import import_onnx

    torch.manual_seed(0)
    model = UserNet().eval()
    path = tmp_path / "user.onnx"
    torch.onnx.export(model, (torch.randn(2, 3, 12, 12),), str(path), input_names=["pixels"],
                      output_names=["scores"], dynamic_axes={"pixels": {0: "b"}},
                      opset_version=17, dynamo=False)
    rng = np.random.default_rng(0)
    calib = {"pixels": rng.standard_normal((64, 3, 12, 12)).astype(np.float32)}
    result = compile_graph(import_onnx(path), calib, CompileOptions(progress=False))
    assert {"gather", "int_conv"} <= set(result.integer_graph.op_histogram())
    assert len(result.lowering_stats["lookup_tables"]) == 3
    exported = tmp_path / "int.onnx"
    export_onnx(result.integer_graph, exported)
    feeds = {"pixels": rng.standard_normal((5, 3, 12, 12)).astype(np.float32)}
    got = run_graph(result.integer_graph, feeds)["scores"]
    assert np.array_equal(got, run_onnxruntime(str(exported), feeds)["scores"])
    with torch.no_grad():
        want = model(torch.from_numpy(feeds["pixels"])).numpy()
    assert relative_error(got, want) < 0.02
