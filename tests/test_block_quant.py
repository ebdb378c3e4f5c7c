"""Block quantization: INT4 packing, the ``int_block_linear`` op and its lowering.

References are independent of the code under test: hand-made bytes and bounds, numpy loops
over blocks written here, and onnxruntime / TVM running the exported program bit for bit
against the interpreter."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from lowbit.compiler import GraphBuilder, Sym, TensorType
from lowbit.compiler.exporters import to_onnx_model
from lowbit.compiler.packing import pack_int4, unpack_int4
from lowbit.passes.quantize.block_quant import block_multipliers, quantize_blocks
from lowbit.passes.quantize.lowering import LoweringOptions, check_integer_only, lower_graph
from lowbit.passes.quantize.range_analysis import analyze_ranges
from lowbit.runtime import run_graph

from tests.integer_graphs import one_op, random_feeds

RNG = np.random.default_rng(5)


# -- packing --------------------------------------------------------------------------------
def test_int4_packing_by_hand() -> None:
    """Low nibble = even index, high nibble = odd index, two's complement."""
    codes = np.array([[-8, 7, 1, -1, 0, 5]], np.int8)
    packed = pack_int4(codes)
    assert packed.dtype == np.uint8
    np.testing.assert_array_equal(packed, [[0x78, 0xF1, 0x50]])
    np.testing.assert_array_equal(unpack_int4(packed), codes)
    every = np.arange(-8, 8).reshape(2, 8)
    np.testing.assert_array_equal(unpack_int4(pack_int4(every)), every)
    with pytest.raises(ValueError):
        pack_int4(np.array([[8, 0]]))
    with pytest.raises(ValueError):
        pack_int4(np.zeros((1, 3), np.int8))


# -- the quantizer --------------------------------------------------------------------------
def test_block_scales_and_codes_by_hand() -> None:
    """Row [1, 2, 3, 7 | 0.5, 0, 0, -1]: scales 7/7 and 1/7 at 4 bits; codes round half even."""
    weight = np.array([[1.0, 2.0, 3.0, 7.0, 0.5, 0.0, 0.0, -1.0]])
    codes, scales = quantize_blocks(weight, 4, 4)
    np.testing.assert_allclose(scales, [[1.0, 1.0 / 7]])
    np.testing.assert_array_equal(codes, [[1, 2, 3, 7, 4, 0, 0, -7]])  # 3.5 -> 4 (even)
    zero_codes, zero_scales = quantize_blocks(np.zeros((1, 4)), 4, 8)
    assert not zero_codes.any() and not zero_scales.any()


def test_block_multipliers_share_one_shift_per_row() -> None:
    ratios = np.array([[0.25, 0.125, 0.0], [3e-3, -1e-3, 2e-3], [0.0, 0.0, 0.0]])
    mult, shift = block_multipliers(ratios)
    assert np.abs(mult).max() <= 2**29
    np.testing.assert_allclose(mult / 2.0 ** shift[:, None], ratios, rtol=2**-18, atol=0)
    assert shift[0] == 31 and mult[0, 0] == 2**29  # 0.25 = 2^29 / 2^31
    assert shift[2] == 0 and not mult[2].any()


# -- the op ---------------------------------------------------------------------------------
def _reference_block_linear(x: np.ndarray, codes: np.ndarray, mult: np.ndarray, zp: int,
                            block: int) -> np.ndarray:
    """Python integers, one block at a time."""
    flat = x.reshape(-1, x.shape[-1]).astype(object) - zp
    out = np.zeros((flat.shape[0], codes.shape[0]), dtype=object)
    for j in range(codes.shape[1] // block):
        part = flat[:, j * block:(j + 1) * block] @ codes[:, j * block:(j + 1) * block].T.astype(
            object)
        out += part * mult[:, j].astype(object)
    return out.reshape(x.shape[:-1] + (codes.shape[0],)).astype(np.int64)


def _block_graph(bits: int, x_dtype: str, zp: int, block: int, features: int = 64,
                 rows: int = 6) -> tuple:
    limit = 8 if bits == 4 else 128
    codes = RNG.integers(-limit, limit, (rows, features)).astype(np.int8)
    mult = RNG.integers(-2**29, 2**29, (rows, features // block)).astype(np.int64)
    stored = pack_int4(codes) if bits == 4 else codes
    graph = one_op("int_block_linear", [TensorType(x_dtype, (Sym(1), 3, features)), stored,
                                        mult],
                   {"x_zero_point": zp, "block_size": block, "weight_bits": bits})
    return graph, codes, mult


CASES = [(4, "int8", 3, 16), (4, "uint8", 128, 32), (8, "int8", -2, 64), (8, "int16", 7, 16),
         (4, "int16", -300, 64)]


@pytest.mark.parametrize("bits, x_dtype, zp, block", CASES)
def test_int_block_linear_matches_python_integers_and_onnxruntime(bits: int, x_dtype: str,
                                                                   zp: int, block: int) -> None:
    graph, codes, mult = _block_graph(bits, x_dtype, zp, block)
    model = to_onnx_model(graph)
    assert all(node.domain == "" for node in model.graph.node)
    if bits == 4:  # the exported model keeps the packed bytes
        packed = [t for t in model.graph.initializer if t.data_type == 2]  # UINT8
        assert packed and packed[0].dims == [6, 32]
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                  ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        for batch in (1, 4):
            feeds = random_feeds(graph)(batch)
            want = run_graph(graph, feeds)[graph.outputs[0]]
            x = feeds[graph.inputs[0]]
            np.testing.assert_array_equal(want, _reference_block_linear(x, codes, mult, zp,
                                                                        block))
            got = session.run(None, feeds)[0]
            assert got.dtype == want.dtype == np.int64
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bits, x_dtype, zp, block", [CASES[0], CASES[3]])
def test_int_block_linear_tvm_bit_exact(bits: int, x_dtype: str, zp: int, block: int) -> None:
    pytest.importorskip("tvm")
    from lowbit.compiler.codegen import build
    from lowbit.runtime.tvm_backend import run_tvm

    graph, _, _ = _block_graph(bits, x_dtype, zp, block)
    executable = build(graph)
    for batch in (1, 3):
        feeds = random_feeds(graph)(batch)
        want = run_graph(graph, feeds)[graph.outputs[0]]
        got = run_tvm(executable, feeds)[graph.outputs[0]]
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_int_block_linear_on_wide_inputs_by_hand() -> None:
    """int64 codes near 2^50 (the exact int64 path): x = [2^50, 2^50, 3, 0], one block of 4,
    w = [1, -1, 5, 7]: the partial is 15, times the multiplier 3 gives 45."""
    graph = one_op("int_block_linear", [TensorType("int64", (Sym(1), 4)),
                                        np.array([[1, -1, 5, 7]], np.int8),
                                        np.array([[3]], np.int64)], {"block_size": 4})
    x = np.array([[2**50, 2**50, 3, 0]], np.int64)
    np.testing.assert_array_equal(run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]],
                                  [[45]])


# -- range analysis -------------------------------------------------------------------------
def test_range_rule_bounds_partials_and_accumulator_by_hand() -> None:
    """x int8 (zp 0) in [-128, 127]; block 0 all +127, block 1 all -127, mult [1, 2]:
    P0 in [-128*127*16, 127*127*16], P1 in [-127*127*16, 128*127*16],
    acc = P0 + 2 P1 in [-128*127*16 - 2*127*127*16, 127*127*16 + 2*128*127*16]."""
    codes = np.concatenate([np.full((1, 16), 127), np.full((1, 16), -127)], axis=1)
    graph = one_op("int_block_linear", [TensorType("int8", (Sym(1), 32)),
                                        codes.astype(np.int8), np.array([[1, 2]], np.int64)],
                   {"block_size": 16, "weight_bits": 8})
    report = analyze_ranges(graph)
    assert report.intervals[graph.outputs[0]] == (-128 * 127 * 16 - 2 * 127 * 127 * 16,
                                                  127 * 127 * 16 + 2 * 128 * 127 * 16)
    assert report.unproved == []
    # the extremes are reached, in the interpreter and in onnxruntime (whose sum over the
    # blocks is one ReduceSum here: the exporter's static bound is below 2^53)
    x = np.array([[-128] * 16 + [127] * 16, [127] * 16 + [-128] * 16], np.int8)
    session = ort.InferenceSession(to_onnx_model(graph).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    want = run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]]
    np.testing.assert_array_equal(want[:, 0], report.intervals[graph.outputs[0]])
    np.testing.assert_array_equal(session.run(None, {graph.inputs[0]: x})[0], want)
    assert [n.op_type for n in to_onnx_model(graph).graph.node].count("ReduceSum") == 1


def test_range_rule_flags_int32_partials_that_could_overflow() -> None:
    """int32 inputs: a block of 16 products of 2^31 * 127 leaves int32."""
    graph = one_op("int_block_linear", [TensorType("int32", (Sym(1), 16)),
                                        np.full((1, 16), 127, np.int8),
                                        np.array([[1]], np.int64)],
                   {"block_size": 16, "weight_bits": 8})
    assert analyze_ranges(graph).unproved == [graph.nodes[0].name]


# -- lowering -------------------------------------------------------------------------------
def _one_linear(weight: np.ndarray, bias: np.ndarray) -> tuple:
    builder = GraphBuilder("one-linear")
    origin = builder.capture("fc", "aten.linear.default")
    x = builder.add_input("x", TensorType("float32", (Sym(1), weight.shape[1])))
    w = builder.add_constant(weight.astype(np.float32), "w")
    b = builder.add_constant(bias.astype(np.float32), "b")
    return builder.finish([builder.add("linear", [x, w, b], origin, hint="fc")])


@pytest.mark.parametrize("bits", [4, 8])
def test_block_lowering_matches_a_numpy_fake_quant_reference(bits: int) -> None:
    """Output within one output code (plus multiplier rounding) of the real-valued result of
    quantized inputs times block-dequantized weights, computed here from scratch."""
    weight = RNG.standard_normal((5, 64))
    weight[:, 3] *= 10.0  # an outlier column in block 0
    bias = RNG.standard_normal(5)
    graph = _one_linear(weight, bias)
    out = graph.outputs[0]
    ranges = {"x": (-2.0, 2.0), out: (-200.0, 200.0)}
    program, stats = lower_graph(graph, ranges, LoweringOptions(bits=bits, block_size=16))
    check_integer_only(program)
    assert stats["block_linears"] == ["fc"]
    assert [n.op for n in program.nodes] == ["quantize", "int_block_linear", "requantize",
                                            "dequantize"]
    stored = program.constants[program.nodes[1].inputs[1]]
    assert stored.dtype == (np.uint8 if bits == 4 else np.int8)
    assert stored.shape == (5, 32 if bits == 4 else 64)
    assert analyze_ranges(program).unproved == []

    limit = 2 ** (bits - 1) - 1
    dequantized = np.empty_like(weight)
    for j in range(4):  # the reference block quantizer
        block = weight[:, 16 * j:16 * (j + 1)]
        scale = np.abs(block).max(axis=1, keepdims=True) / limit
        dequantized[:, 16 * j:16 * (j + 1)] = np.clip(np.round(block / scale), -limit,
                                                      limit) * scale
    x = RNG.uniform(-2.0, 2.0, (7, 64)).astype(np.float32)
    s_x = 4.0 / 255
    zp_x = round(-128 + 2.0 / s_x)
    x_real = (np.clip(np.rint(x / s_x) + zp_x, -128, 127) - zp_x) * s_x
    want = x_real @ dequantized.T + bias
    s_out = 400.0 / 65535
    got = run_graph(program, {"x": x})[out]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=s_out * 1.01)
    session = ort.InferenceSession(to_onnx_model(program).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run([out], {"x": x})[0], got)
    pytest.importorskip("tvm")
    from lowbit.compiler.codegen import build
    from lowbit.runtime.tvm_backend import run_tvm

    np.testing.assert_array_equal(run_tvm(build(program), {"x": x})[out], got)


def test_matmul_by_a_constant_matrix_is_block_lowered() -> None:
    """``x @ B`` with a constant ``B [32, 5]`` is a linear with weight ``B.T``; attention-like
    products of two activations keep ``int_matmul``."""
    builder = GraphBuilder("matmul")
    origin = builder.capture("mm", "aten.matmul.default")
    x = builder.add_input("x", TensorType("float32", (Sym(1), 4, 32)))
    b = builder.add_constant(RNG.standard_normal((32, 5)).astype(np.float32), "b")
    product = builder.add("matmul", [x, b], origin, hint="mm")
    scores = builder.add("matmul", [x, builder.add("transpose", [x], origin,
                                                   {"perm": (0, 2, 1)})], origin, hint="xx")
    graph = builder.finish([product, scores])
    ranges = {"x": (-1.0, 1.0), product: (-20.0, 20.0), scores: (-40.0, 40.0)}
    program, stats = lower_graph(graph, ranges, LoweringOptions(bits=8, block_size=16))
    assert stats["block_linears"] == ["mm"]
    assert program.op_histogram()["int_block_linear"] == 1
    assert program.op_histogram()["int_matmul"] == 1
    feeds = {"x": RNG.uniform(-1.0, 1.0, (3, 4, 32)).astype(np.float32)}
    want = feeds["x"] @ graph.constants[b]
    got = run_graph(program, feeds)[product]
    assert np.abs(got - want).max() < 0.05  # mostly the 8-bit input codes (step 2/255)
    session = ort.InferenceSession(to_onnx_model(program).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run([product], feeds)[0], got)


def test_block_lowering_declines_ragged_layers() -> None:
    graph = _one_linear(RNG.standard_normal((3, 40)), np.zeros(3))
    out = graph.outputs[0]
    program, stats = lower_graph(graph, {"x": (-1.0, 1.0), out: (-9.0, 9.0)},
                                 LoweringOptions(bits=4, block_size=32))
    assert "int_linear" in program.op_histogram()
    assert stats["block_declined"] == {"fc": "40 input features are not a multiple of 32"}


# -- a bundled model end to end -----------------------------------------------------------
@pytest.fixture(scope="module")
def vit_w4_block16(tmp_path_factory):
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.compiler.serialize import save_graph
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    model = get_model("digits-vit")
    graph = capture_bundled(model.name)
    calib = model.sample_inputs(64, "calib")
    result = compile_graph(graph, calib, CompileOptions(bits=4, block_size=16, progress=False))
    folder = tmp_path_factory.mktemp("vit")
    save_graph(graph, folder / "vit.lowbit")
    np.savez(folder / "calib.npz", **calib)
    return model, result, folder


def test_bundled_vit_block16_is_bit_exact_in_onnxruntime(vit_w4_block16) -> None:
    from lowbit.runtime.references import relative_error

    model, result, _ = vit_w4_block16
    program = result.integer_graph
    check_integer_only(program)
    assert result.ranges.unproved == []
    assert program.op_histogram()["int_block_linear"] == 13  # every linear: 48 and 96 features
    assert all(program.constants[n.inputs[1]].dtype == np.uint8
               for n in program.nodes if n.op == "int_block_linear")
    feeds = model.sample_inputs(6, "test")
    want = run_graph(program, feeds)["logits"]
    session = ort.InferenceSession(to_onnx_model(program).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(["logits"], feeds)[0], want)
    assert relative_error(want, run_graph(result.float_graph, feeds)["logits"]) < 0.2


def test_cli_compile_block_size(vit_w4_block16, capsys) -> None:
    import json

    from lowbit.cli.main import main

    _, _, folder = vit_w4_block16
    out = folder / "compiled"
    code = main(["compile", str(folder / "vit.lowbit"), "--calib", str(folder / "calib.npz"),
                 "--bits", "w4a8", "--block-size", "32", "--target", "none", "--out", str(out)])
    assert code == 0
    assert "block size: `32`" in (out / "report.md").read_text()
    from lowbit.compiler.serialize import load_graph

    program = load_graph(out / json.loads((out / "manifest.json").read_text())["files"]["integer"])
    assert program.op_histogram()["int_block_linear"] == 2  # the two 96-feature MLP outputs
    assert program.metadata["block_size"] == 32
