"""The ONNX exporter: onnxruntime running the exported model against the reference interpreter.

Every test builds a small lowbit graph, exports it, runs it with onnxruntime's CPU provider
(with its graph optimizations on and off) at two batch sizes through one session, and asserts
that every output equals ``run_graph``'s bit for bit, with the same dtype and shape. Inputs
cover the full range of their dtype unless the op has a documented precondition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from lowbit.compiler import Graph, GraphBuilder, LowbitError, OP_TABLE, Sym, TensorType
from lowbit.compiler.exporters import ONNX_EXPORT_RULES, OPSET, export_onnx, to_onnx_model
from lowbit.compiler.exporters.onnx_emit import ONNX_ELEM_TYPES, ORT_DTYPES, Emitter
from lowbit.compiler.exporters.onnx_int_math import bit_length, exact_sum
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan
from lowbit.kernels import dyadic
from lowbit.runtime import run_graph

from tests.integer_graphs import (Feeds, dyadic_pair, full_range, i8, one_op,  # noqa: E402
                                  random_feeds)

RNG = np.random.default_rng(11)
BATCHES = (1, 3)
LEVELS = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
N = Sym(1)



# -- helpers ------------------------------------------------------------------------------------
def session(model: onnx.ModelProto | str, level: ort.GraphOptimizationLevel = LEVELS[0]
            ) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    source = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def assert_bit_exact(graph: Graph, feeds: Feeds, batches: Sequence[int] = BATCHES) -> None:
    model = to_onnx_model(graph)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)]
    assert all(node.domain == "" for node in model.graph.node)
    onnx.checker.check_model(model, full_check=True)  # strict shape inference agrees too
    runs = [(batch, feeds(batch)) for batch in batches]
    for level in LEVELS:
        engine = session(model, level)
        for batch, feed in runs:
            want = run_graph(graph, feed)
            got = engine.run(graph.outputs, feed)
            for name, value in zip(graph.outputs, got):
                expected = want[name]
                assert value.dtype == expected.dtype and value.shape == expected.shape, name
                differ = int(np.sum(value != expected))
                assert np.array_equal(value, expected), (
                    f"{name} at batch {batch}, {level}: {differ} of {value.size} differ")


# -- boundary ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, scale, zero_point", [
    ("int8", 0.1, 3), ("uint8", 0.037, 128), ("int16", 1e-3, -5), ("int32", 0.3, 0)])
def test_quantize_matches_including_near_ties(dtype: str, scale: float, zero_point: int) -> None:
    graph = one_op("quantize", [TensorType("float32", (N, 40))],
                   {"scale": scale, "zero_point": zero_point, "dtype": dtype})
    lo, hi = INT_RANGES[dtype]

    def feeds(batch: int) -> dict[str, np.ndarray]:
        ties = (RNG.integers(-300, 300, (batch, 20)) + 0.5) * scale  # x / scale near k + 1/2
        spread = RNG.standard_normal((batch, 20)) * scale * max(abs(lo), hi) / 2
        return {graph.inputs[0]: np.concatenate([ties, spread], axis=1).astype(np.float32)}
    assert_bit_exact(graph, feeds)


@pytest.mark.parametrize("dtype, zero_point", [("int8", -4), ("uint8", 131), ("int32", 7)])
def test_dequantize(dtype: str, zero_point: int) -> None:
    graph = one_op("dequantize", [TensorType(dtype, (N, 33))],
                   {"scale": 0.0123, "zero_point": zero_point})
    assert_bit_exact(graph, random_feeds(graph))


# -- products -----------------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype, zero_point", [
    ("int8", 7), ("uint8", 130), ("int8", 200), ("int16", -1000)])
def test_int_linear_with_bias(x_dtype: str, zero_point: int) -> None:
    w, b = i8(6, 16), RNG.integers(-10**6, 10**6, 6).astype(np.int32)
    graph = one_op("int_linear", [TensorType(x_dtype, (N, 5, 16)), w, b],
                   {"x_zero_point": zero_point})
    assert_bit_exact(graph, random_feeds(graph))


def test_int_linear_with_a_weight_input_and_no_bias() -> None:
    graph = one_op("int_linear", [TensorType("uint8", (N, 16)), TensorType("int8", (4, 16))],
                   {"x_zero_point": 3})
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("a_dtype, b_dtype, a_zero_point, b_zero_point", [
    ("int8", "int8", 2, -3), ("uint8", "int8", 200, 0), ("uint8", "uint8", 255, 1),
    ("int8", "int8", 200, 0), ("int16", "int8", -7, 5)])
def test_int_matmul_with_zero_points(a_dtype: str, b_dtype: str, a_zero_point: int,
                                     b_zero_point: int) -> None:
    a, b = TensorType(a_dtype, (N, 3, 4, 8)), TensorType(b_dtype, (3, 8, 5))
    graph = one_op("int_matmul", [a, b],
                   {"a_zero_point": a_zero_point, "b_zero_point": b_zero_point})
    assert_bit_exact(graph, random_feeds(graph))


CONV_CASES = {
    "int8 grouped, padded": ("int8", 5, (4, 7, 7), (8, 2, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 2),
    "uint8 strided, dilated": ("uint8", 131, (3, 9, 8), (4, 3, 3, 2), (2, 1), (1, 0, 2, 1),
                               (2, 2), 1),
    "int8 zero point off range": ("int8", -200, (2, 6, 6), (3, 2, 3, 3), (1, 1), (1, 1, 1, 1),
                                  (1, 1), 1),
    "int16 limbs": ("int16", 500, (4, 6, 6), (4, 2, 3, 3), (2, 1), (1, 0, 1, 2), (1, 2), 2),
    "int8 1-d": ("int8", -1, (3, 11), (5, 3, 4), (3,), (2, 1), (1,), 1),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_int_conv(case: str) -> None:
    dtype, zp, x_shape, w_shape, strides, pads, dilations, groups = CONV_CASES[case]
    w, b = i8(*w_shape), RNG.integers(-10**5, 10**5, w_shape[0]).astype(np.int32)
    graph = one_op("int_conv", [TensorType(dtype, (N,) + x_shape), w, b],
                   {"x_zero_point": zp, "strides": strides, "pads": pads,
                    "dilations": dilations, "groups": groups})
    assert_bit_exact(graph, random_feeds(graph))


def test_int_conv_with_wide_weight_and_bias_inputs() -> None:
    graph = one_op("int_conv", [TensorType("uint8", (N, 2, 5, 5)),
                                TensorType("int16", (3, 2, 2, 2)), TensorType("int32", (3,))],
                   {"x_zero_point": 17, "strides": (1, 1), "pads": (0, 0, 1, 1),
                    "dilations": (1, 1)})
    assert_bit_exact(graph, random_feeds(graph, {"x1": (-3000, 3000), "x2": (-10**6, 10**6)}))


def test_int_mul_broadcasting() -> None:
    graph = one_op("int_mul", [TensorType("int16", (N, 3, 4)), TensorType("uint8", (4,))],
                   {"a_zero_point": -9, "b_zero_point": 200})
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("dtype, axes, keepdims, zero_point", [
    ("int8", (1, 3), True, 4), ("uint8", (-1,), False, 128), ("int32", (2,), False, 0),
    ("int16", (0, 2), True, -3)])  # the last reduces the batch axis: a symbolic count
def test_int_sum(dtype: str, axes: tuple[int, ...], keepdims: bool, zero_point: int) -> None:
    graph = one_op("int_sum", [TensorType(dtype, (N, 3, 4, 5))],
                   {"axes": axes, "keepdims": keepdims, "zero_point": zero_point})
    ranges = {"x0": (-2**28, 2**28)} if dtype == "int32" else None  # the sum must fit int32
    assert_bit_exact(graph, random_feeds(graph, ranges))


# -- rescaling ------------------------------------------------------------------------------
def rounding_shift_graph(channels: int, width: int, shift: np.ndarray | None) -> Graph:
    """requantize with multiplier 1 and an int64 clamp: exactly ``rounding_shift(x, shift)``;
    ``shift=None`` makes the shift a graph input."""
    shift_input = TensorType("int64", (channels, 1)) if shift is None else shift
    lo, hi = INT_RANGES["int64"]
    return one_op("requantize", [TensorType("int64", (N, channels, width)),
                                 np.ones((channels, 1), np.int64), shift_input],
                  {"dtype": "int64", "qmin": lo, "qmax": hi})


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_rounding_shift_per_channel_is_bit_exact(data: st.DataObject) -> None:
    channels = data.draw(st.integers(1, 5))
    shifts = data.draw(st.lists(st.integers(0, 62), min_size=channels, max_size=channels))
    values = st.integers(-(1 << 62) + 1, (1 << 62) - 1)
    rows = {batch: data.draw(st.lists(values, min_size=channels * 6 * batch,
                                      max_size=channels * 6 * batch)) for batch in BATCHES}
    graph = rounding_shift_graph(channels, 6, np.array(shifts, np.int64).reshape(-1, 1))
    assert_bit_exact(graph, lambda batch: {"x0": np.array(rows[batch], np.int64).reshape(
        batch, channels, 6)})


def test_rounding_shift_with_a_runtime_shift_at_ties_and_extremes() -> None:
    graph = rounding_shift_graph(63, 8, None)
    shifts = np.arange(63, dtype=np.int64).reshape(63, 1)
    ties = np.left_shift(np.int64(1), shifts) >> 1  # 2^(c-1): exactly half a step

    def feeds(batch: int) -> dict[str, np.ndarray]:
        x = RNG.integers(-(1 << 62) + 1, 1 << 62, (batch, 63, 8))
        x[0, :, :6] = np.concatenate([ties, -ties, ties - 1, -ties - 1, 3 * (ties >> 1),
                                   -3 * (ties >> 1)], 1)
        x[0, :, 6:] = [(1 << 62) - 1, -(1 << 62) + 1]
        return {"x0": x.astype(np.int64), "x2": shifts}
    assert_bit_exact(graph, feeds)


def test_requantize_per_channel_with_offset_and_relu_clamp() -> None:
    mult, shift = dyadic_pair(RNG.uniform(1e-4, 3e-4, 8), (8, 1, 1))
    offset = RNG.integers(-2**40, 2**40, (8, 1, 1))
    graph = one_op("requantize", [TensorType("int32", (N, 8, 3, 3)), mult, shift, offset],
                   {"zero_point": -128, "dtype": "int8", "qmin": -128, "qmax": 127})
    assert_bit_exact(graph, random_feeds(graph, {"x0": (-2**20, 2**20)}))


def test_int_add_broadcasting() -> None:
    graph = one_op("int_add", [TensorType("int8", (N, 4, 16)), TensorType("uint8", (1, 16))],
                   {"a_zero_point": 3, "b_zero_point": 140, "a_mult": 1234567,
                    "b_mult": 7654321, "shift": 23, "zero_point": -1, "dtype": "int8",
                    "qmin": 0, "qmax": 127})
    assert_bit_exact(graph, random_feeds(graph))


def test_int_div_truncates_toward_zero() -> None:
    graph = one_op("int_div", [TensorType("int32", (N, 50)), TensorType("int16", (N, 50))],
                   {"shift": 8})

    def feeds(batch: int) -> dict[str, np.ndarray]:
        b = full_range("int16", (batch, 50))
        b[b == 0] = -1
        return {"x0": full_range("int32", (batch, 50)), "x1": b}
    assert_bit_exact(graph, feeds)


# -- I-BERT -----------------------------------------------------------------------------------
CLAMPING_SCALE = 5.099321018671222e-05
"""A scale whose i-exp maximum is exactly 2^15 after the 16-bit shift: a dominant element then
maps to 2^out_bits before the clamp."""


@pytest.mark.parametrize("dtype, axis, scale, out_bits", [
    ("int16", -1, 0.05, 8), ("int16", 1, 0.002, 12), ("int32", -1, CLAMPING_SCALE, 8),
    ("int32", 1, CLAMPING_SCALE, 12), ("int8", 2, 0.1, 8)])
def test_int_softmax(dtype: str, axis: int, scale: float, out_bits: int) -> None:
    graph = one_op("int_softmax", [TensorType(dtype, (N, 4, 17))],
                   {"axis": axis, "scale": scale, "out_bits": out_bits})
    lo, hi = INT_RANGES[dtype]

    def feeds(batch: int) -> dict[str, np.ndarray]:
        x = full_range(dtype, (batch, 4, 17))
        x[0] = lo
        x[0, 0, 0] = hi  # one dominant element: the output hits the clamp 2^out_bits - 1
        return {"x0": x}
    assert_bit_exact(graph, feeds)


def test_int_softmax_over_the_batch_axis() -> None:
    graph = one_op("int_softmax", [TensorType("int16", (N, 5))], {"axis": 0, "scale": 0.01})
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("dtype, scale, zero_point", [
    ("int8", 0.05, 3), ("int16", 0.02, -100), ("int32", 2e-4, 0)])
def test_int_gelu(dtype: str, scale: float, zero_point: int) -> None:
    graph = one_op("int_gelu", [TensorType(dtype, (N, 7, 19))],
                   {"zero_point": zero_point, "scale": scale})
    lo, hi = INT_RANGES[dtype]
    limit = min(hi, gelu_plan(scale).max_abs_input - 1 - abs(zero_point))
    assert_bit_exact(graph, random_feeds(graph, {"x0": (max(lo, -limit), limit)}))


def test_int_layernorm_then_requantize_with_gamma_and_beta() -> None:
    channels = 32
    builder = GraphBuilder("layernorm")
    origin = builder.capture("ln", "layer_norm")
    x = builder.add_input("x", TensorType("int32", (N, 5, channels)))
    normed = builder.add("int_layernorm", [x], origin, {"scale": 0.01, "zero_point": 3})
    mult, shift = dyadic(RNG.uniform(0.5, 2.0, channels) * 2.0**-24 / 0.05)
    offset = (RNG.integers(-40, 40, channels) << shift.astype(np.int64)) >> 1
    out = builder.add("requantize", [normed, builder.add_constant(mult, "gamma.mult"),
                                     builder.add_constant(shift, "gamma.shift"),
                                     builder.add_constant(offset, "beta")], origin,
                      {"zero_point": 2, "dtype": "int8", "qmin": -128, "qmax": 127})
    graph = builder.finish([normed, out])

    def feeds(batch: int) -> dict[str, np.ndarray]:
        q = RNG.integers(-2**21, 2**21, (batch, 5, channels))
        q[0, 0] = 7                                        # a constant row: variance 0, eps
        q[0, 1] = RNG.integers(-2, 3, channels)            # a row a few codes wide
        q[0, 2, 0] = 2**22 - 1 + 3                         # the input limit, after the zp
        return {x: q.astype(np.int32)}
    assert_bit_exact(graph, feeds)


def hard_square_roots() -> np.ndarray:
    """Inputs next to powers of two and to squares of 2^j + d: the cases where the Newton
    iteration needs all six steps (five steps get some of them wrong)."""
    near_powers = {(1 << j) + d for j in range(63) for d in range(-3, 4)}
    near_squares = {((1 << j) + d) ** 2 + e for j in range(1, 32) for d in range(-2, 3)
                    for e in (-1, 0, 1)}
    return np.array(sorted(v for v in near_powers | near_squares if 0 <= v < 1 << 62), np.int64)


def test_int_sqrt_on_hard_inputs() -> None:
    edges = hard_square_roots()
    graph = one_op("int_sqrt", [TensorType("int64", (N, edges.size))])

    def feeds(batch: int) -> dict[str, np.ndarray]:
        n = RNG.integers(0, 1 << 62, (batch, edges.size))
        n[0] = edges
        return {"x0": n.astype(np.int64)}
    assert_bit_exact(graph, feeds)


# -- chains -------------------------------------------------------------------------------------
def test_cnn_chain_quantize_to_dequantize() -> None:
    """quantize -> int_conv -> per-channel requantize with ReLU clamp -> max_pool -> int_sum ->
    requantize -> dequantize."""
    builder = GraphBuilder("cnn")
    origin = builder.capture("cnn", "cnn")
    image = builder.add_input("image", TensorType("float32", (N, 3, 8, 8)))
    q = builder.add("quantize", [image], origin, {"scale": 0.05, "zero_point": -3})
    w = builder.add_constant(i8(8, 3, 3, 3), "conv.w")
    b = builder.add_constant(RNG.integers(-5000, 5000, 8).astype(np.int32), "conv.b")
    acc = builder.add("int_conv", [q, w, b], origin, {
        "x_zero_point": -3, "strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)})
    mult, shift = dyadic_pair(RNG.uniform(1e-4, 4e-4, 8), (8, 1, 1))
    act = builder.add("requantize", [acc, builder.add_constant(mult, "rq.mult"),
                                     builder.add_constant(shift, "rq.shift")], origin,
                      {"zero_point": -128, "dtype": "int8", "qmin": -128, "qmax": 127})
    pooled = builder.add("max_pool", [act], origin, {
        "kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0), "dilations": (1, 1)})
    total = builder.add("int_sum", [pooled], origin, {"axes": (2, 3), "zero_point": -128})
    mult2, shift2 = dyadic(np.array(0.01))
    code = builder.add("requantize", [total, builder.add_constant(mult2, "head.mult"),
                                      builder.add_constant(shift2, "head.shift")], origin, {})
    out = builder.add("dequantize", [code], origin, {"scale": 0.25}, hint="logits")
    graph = builder.finish([out])
    assert_bit_exact(graph, lambda batch: {image: (RNG.standard_normal((batch, 3, 8, 8)) * 3
                                                   ).astype(np.float32)})


def test_data_movement_chain_with_batch_sized_reshapes() -> None:
    builder = GraphBuilder("moves")
    origin = builder.capture("moves", "moves")
    x = builder.add_input("x", TensorType("int8", (N, 4, 6)))
    row = builder.add_input("row", TensorType("int16", (1, 6)))
    flat = builder.add("reshape", [x], origin, {"shape": (Sym(4), 6)})
    picked = builder.add("slice", [flat], origin,
                         {"axes": (1,), "starts": (5,), "ends": (-100,), "steps": (-2,)})
    back = builder.add("reshape", [picked], origin, {"shape": (N, 4, 3)})
    swapped = builder.add("transpose", [back], origin, {"perm": (0, 2, 1)})
    joined = builder.add("concat", [swapped, swapped], origin, {"axis": -1})
    pairs = builder.add("reshape", [joined], origin, {"shape": (Sym(3), 2, 4)})
    spread = builder.add("expand", [row], origin, {"shape": (N, 3, 6)})
    kept = builder.add("expand", [builder.add("reshape", [x], origin, {"shape": (N, 1, 24)})],
                       origin, {"shape": (N, 2, 24)})
    graph = builder.finish([pairs, spread, kept])
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_from_an_int8_table(axis: int) -> None:
    table = i8(50, 8) if axis == 0 else i8(8, 50)
    graph = one_op("gather", [table, TensorType("int64", (N, 7))], {"axis": axis})
    assert_bit_exact(graph, random_feeds(graph, {"x1": (-50, 49)}))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "int64", "float32"])
def test_relu_clip_where_reduce_max(dtype: str) -> None:
    builder = GraphBuilder("elementwise")
    origin = builder.capture("e", "e")
    x = builder.add_input("x", TensorType(dtype, (N, 3, 10)))
    cond = builder.add_input("cond", TensorType("bool", (N, 1, 10)))
    other = builder.add_constant(full_range(dtype, (3, 10)), "other")
    outs = [builder.add("relu", [x], origin),
            builder.add("clip", [x], origin, {"min": -6.5, "max": 100.9}),
            builder.add("clip", [x], origin, {"min": 0.5}),
            builder.add("where", [cond, x, other], origin),
            builder.add("reduce_max", [x], origin, {"axes": (1, 2), "keepdims": True})]
    graph = builder.finish(outs)
    # eval_clip clips an int64 tensor with float bounds in float64, rounding |x| > 2^53; the
    # exporter clips exactly, so int64 inputs stay where float64 holds them.
    ranges = {"x": (-2**53, 2**53)} if dtype == "int64" else None
    assert_bit_exact(graph, random_feeds(graph, ranges))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int64", "float32"])
def test_equal_mask_where_and_wrapping_neg(dtype: str) -> None:
    """The lowering's attention mask (codes == zero point ? scores : lowest) and ``neg``."""
    builder = GraphBuilder("mask")
    origin = builder.capture("mask", "mask")
    mask = builder.add_input("mask", TensorType(dtype, (N, 1, 6)))
    scores = builder.add_input("scores", TensorType("int8", (N, 4, 6)))
    zero = builder.add_constant(np.array(1, dtype), "zero")
    keep = builder.add("equal", [mask, zero], origin)
    lowest = builder.add_constant(np.array(-128, np.int8), "lowest")
    graph = builder.finish([builder.add("where", [keep, scores, lowest], origin),
                            builder.add("neg", [mask], origin),
                            builder.add("neg", [scores], origin)])
    assert_bit_exact(graph, random_feeds(graph, {"mask": (0, 2)}))


POOLS = {  # kernel, strides, pads, dilations, ceil_mode on a [N, 2, 5, 7] input
    "ceil drops a window": ((2, 3), (2, 2), (1, 1, 1, 1), (1, 2), True),
    "ceil, no padding": ((3, 2), (3, 4), (0, 0, 0, 0), (1, 1), True),
    "floor": ((3, 3), (2, 1), (1, 0, 0, 2), (1, 1), False),
}


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int32", "float32"])
@pytest.mark.parametrize("pool", POOLS)
def test_max_pool(dtype: str, pool: str) -> None:
    kernel, strides, pads, dilations, ceil_mode = POOLS[pool]
    graph = one_op("max_pool", [TensorType(dtype, (N, 2, 5, 7))], {
        "kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations,
        "ceil_mode": ceil_mode})
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int16", "int64", "float32"])
def test_elementwise_arithmetic_wraps_like_numpy(dtype: str) -> None:
    """add/sub/mul on integers wrap; maximum/minimum select (the lowering's mask arithmetic,
    ``1 - attention_mask``, is a sub on int64)."""
    builder = GraphBuilder("arith")
    origin = builder.capture("arith", "arith")
    a = builder.add_input("a", TensorType(dtype, (N, 4, 6)))
    b = builder.add_input("b", TensorType(dtype, (N, 1, 6)))
    one = builder.add_constant(np.array(1, dtype), "one")
    outs = [builder.add(op, [a, b], origin) for op in ("add", "sub", "mul", "maximum", "minimum")]
    graph = builder.finish(outs + [builder.add("sub", [one, b], origin)])
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("source, target", [
    ("int32", "int8"), ("int64", "uint8"), ("float32", "int32"), ("int8", "float32"),
    ("int16", "bool")])
def test_cast(source: str, target: str) -> None:
    graph = one_op("cast", [TensorType(source, (N, 20))], {"to": target})
    assert_bit_exact(graph, random_feeds(graph))


# -- the contract -------------------------------------------------------------------------------
def test_export_onnx_writes_a_model_with_names_and_a_symbolic_batch(tmp_path) -> None:
    graph = one_op("int_sum", [TensorType("int8", (N, 3, 4))], {"axes": (2,), "zero_point": 1})
    path = export_onnx(graph, tmp_path / "sub" / "model.onnx")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == (graph.inputs[0], graph.outputs[0])
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["N", 3, 4]
    assert [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim] == ["N", 3]
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["model.onnx"]
    feed = {graph.inputs[0]: i8(5, 3, 4)}
    got = session(str(path)).run(None, feed)[0]
    np.testing.assert_array_equal(got, run_graph(graph, feed)[graph.outputs[0]])


def test_an_op_without_a_rule_names_the_node_and_op(monkeypatch) -> None:
    graph = one_op("int_gelu", [TensorType("int8", (N, 4))], {"scale": 0.1})
    monkeypatch.delitem(ONNX_EXPORT_RULES, "int_gelu")
    with pytest.raises(LowbitError, match="no ONNX export rule") as err:
        to_onnx_model(graph)
    assert (err.value.node, err.value.op) == (graph.nodes[0].name, "int_gelu")
    assert graph.nodes[0].name in str(err.value) and "int_gelu" in str(err.value)


def test_every_integer_op_has_an_export_rule() -> None:
    integer_ops = {name for name, spec in OP_TABLE.items()
                   if spec.evaluate.__module__ == "lowbit.compiler.ops.integer"}
    assert len(integer_ops) == 14
    assert integer_ops <= ONNX_EXPORT_RULES.keys()


def op_types(graph: Graph) -> list[str]:
    return [node.op_type for node in to_onnx_model(graph).graph.node]


def test_byte_operands_use_the_onnx_integer_kernels() -> None:
    linear = one_op("int_linear", [TensorType("int8", (N, 16)), i8(4, 16)], {"x_zero_point": 1})
    assert "MatMulInteger" in op_types(linear) and "MatMul" not in op_types(linear)
    matmul = one_op("int_matmul", [TensorType("uint8", (N, 4, 8)), TensorType("int8", (8, 3))],
                    {"a_zero_point": 128})
    assert op_types(matmul) == ["MatMulInteger"]
    conv_attrs = {"strides": (1, 1), "pads": (0, 0, 0, 0), "dilations": (1, 1)}
    conv = one_op("int_conv", [TensorType("int8", (N, 2, 4, 4)), i8(3, 2, 2, 2)],
                  {"x_zero_point": -5, **conv_attrs})
    assert op_types(conv).count("ConvInteger") == 1
    wide = one_op("int_conv", [TensorType("int16", (N, 2, 4, 4)), i8(3, 2, 2, 2)],
                  {"x_zero_point": 0, **conv_attrs})
    assert op_types(wide).count("ConvInteger") == 2  # two byte limbs of the int16 input


INTEGER_ONLY = {
    "int_layernorm": ("int32", {"scale": 0.01, "zero_point": 1}),
    "int_softmax": ("int16", {"scale": 0.05}),
    "int_gelu": ("int16", {"scale": 0.02}),
    "int_sqrt": ("int64", {}),
    "int_sum": ("int16", {"axes": (0, 1)}),
}


@pytest.mark.parametrize("op", INTEGER_ONLY)
def test_integer_ops_export_without_any_float_value(op: str) -> None:
    dtype, attrs = INTEGER_ONLY[op]
    model = onnx.shape_inference.infer_shapes(
        to_onnx_model(one_op(op, [TensorType(dtype, (N, 24))], attrs)), strict_mode=True)
    values = list(model.graph.value_info) + list(model.graph.output)
    floats = {ONNX_ELEM_TYPES[d] for d in ("float16", "float32", "float64")}
    assert values and not any(v.type.tensor_type.elem_type in floats for v in values)
    assert not any(t.data_type in floats for t in model.graph.initializer)


def run_emitted(build: Callable[[Emitter, str], str], x: np.ndarray) -> np.ndarray:
    """Run ``build(em, "x")`` (emitter code on an int64 input) in onnxruntime."""
    host = one_op("int_sqrt", [TensorType("int64", x.shape)])  # an emitter needs a graph
    em = Emitter(host)
    out = build(em, host.inputs[0])
    int64 = ONNX_ELEM_TYPES["int64"]
    model = helper.make_model(helper.make_graph(
        em.nodes, "emitted", [helper.make_tensor_value_info(host.inputs[0], int64, x.shape)],
        [helper.make_tensor_value_info(out, int64, None)], em.initializer_protos()),
        opset_imports=[helper.make_opsetid("", OPSET)])
    return session(model).run(None, {host.inputs[0]: x})[0]


def test_exact_sum_beyond_float64_precision() -> None:
    """onnxruntime's integer ReduceSum goes through float64; the limb sum must not."""
    x = RNG.integers(-2**62, 2**62, (3, 40))
    x[0] = (1 << 53) + 1
    x[1] = RNG.integers(0, 2**62, 40) | 1
    got = run_emitted(lambda em, v: exact_sum(em, v, [-1], keepdims=False, bound=None), x)
    np.testing.assert_array_equal(got, x.sum(axis=-1))  # numpy wraps like int64 ONNX Add


def test_bit_length_matches_python() -> None:
    values = [0] + [(1 << j) + d for j in range(63) for d in (-1, 0, 1)] + [(1 << 63) - 1]
    x = np.array(sorted({v for v in values if 0 <= v < 1 << 63}), np.int64)
    got = run_emitted(bit_length, x)
    assert got.tolist() == [int(v).bit_length() for v in x.tolist()]


@pytest.mark.parametrize("op_type", sorted(ORT_DTYPES))
def test_the_onnxruntime_dtype_table_holds(op_type: str) -> None:
    """Each dtype ORT_DTYPES claims for an op runs in onnxruntime (the exporter relies on it)."""
    for dtype in sorted(ORT_DTYPES[op_type]):
        elem = ONNX_ELEM_TYPES[dtype]
        shape = [1, 1, 4, 4]
        inputs = [helper.make_tensor_value_info("x", elem, shape)]
        names, attrs, inits = ["x"], {}, []
        if op_type in ("Max", "Min"):
            names = ["x", "x"]
        elif op_type == "Clip":
            inits = [numpy_helper.from_array(np.array(v, dtype), n) for n, v in (("lo", 0),
                                                                                 ("hi", 1))]
            names = ["x", "lo", "hi"]
        elif op_type == "Where":
            inputs.append(helper.make_tensor_value_info("c", ONNX_ELEM_TYPES["bool"], shape))
            names = ["c", "x", "x"]
        elif op_type == "ReduceMax":
            attrs = {"axes": [1], "keepdims": 1}
        elif op_type == "MaxPool":
            attrs = {"kernel_shape": [2, 2]}
        node = helper.make_node(op_type, names, ["y"], **attrs)
        model = helper.make_model(helper.make_graph(
            [node], "probe", inputs, [helper.make_tensor_value_info("y", elem, None)], inits),
            opset_imports=[helper.make_opsetid("", OPSET)])
        feeds = {"x": np.ones(shape, dtype)}
        if op_type == "Where":
            feeds["c"] = np.ones(shape, bool)
        session(model).run(None, feeds)
