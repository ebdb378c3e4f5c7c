"""The TVM code generator: compiled Relax modules against the reference interpreter.

Every test builds a lowbit graph once for the host (``llvm``), runs the module at two batch
sizes (one build: the batch is symbolic) and asserts that every output equals ``run_graph``'s
bit for bit, with the same dtype and shape. Inputs cover the full range of their dtype unless
the op has a documented precondition. The lowered bundled programs run on real test inputs
and on random ones. CUDA is built (source only) without a GPU; running it, and exporting for
aarch64, skip where the machine lacks a GPU or the cross compiler.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence

import numpy as np
import pytest

from lowbit.compiler import (Graph, GraphBuilder, InputError, LowbitError, OP_TABLE, Sym,
                             TensorType)
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from lowbit.compiler.codegen import TVM_EMITTERS  # noqa: E402 - after the TVM check
from lowbit.compiler.codegen.tvm_build import (AARCH64_CC, build, device_source,  # noqa: E402
                                               export_library)
from lowbit.compiler.codegen.tvm_emit import to_relax  # noqa: E402
from lowbit.runtime.tvm_backend import load_tvm, run_tvm  # noqa: E402

from tests.integer_graphs import (Feeds, assert_same, dyadic_pair, full_range, i8,  # noqa: E402
                                  one_op, random_feeds)

RNG = np.random.default_rng(23)
BATCHES = (1, 3)
N = Sym(1)



# -- helpers ------------------------------------------------------------------------------------
def assert_bit_exact(graph: Graph, feeds: Feeds, batches: Sequence[int] = BATCHES) -> None:
    program = load_tvm(build(graph, "llvm"))
    for batch in batches:
        feed = feeds(batch)
        assert_same(program(feed), run_graph(graph, feed), f"at batch {batch}")


# -- boundary ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, scale, zero_point", [
    ("int8", 0.1, 3), ("uint8", 0.037, 128), ("int16", 0.25, -5), ("int32", 0.3, 0)])
def test_quantize_rounds_half_to_even_including_near_ties(dtype: str, scale: float,
                                                          zero_point: int) -> None:
    """With the power-of-two scale the ties are exact: half to even decides them."""
    graph = one_op("quantize", [TensorType("float32", (N, 40))],
                   {"scale": scale, "zero_point": zero_point, "dtype": dtype})
    lo, hi = INT_RANGES[dtype]

    def feeds(batch: int) -> dict[str, np.ndarray]:
        ties = (RNG.integers(-300, 300, (batch, 20)) + 0.5) * scale  # x / scale near k + 1/2
        spread = RNG.standard_normal((batch, 20)) * scale * max(abs(lo), hi) / 2
        return {graph.inputs[0]: np.concatenate([ties, spread], axis=1).astype(np.float32)}
    assert_bit_exact(graph, feeds)


@pytest.mark.parametrize("dtype, zero_point", [("int8", -4), ("int32", 7)])
def test_dequantize(dtype: str, zero_point: int) -> None:
    graph = one_op("dequantize", [TensorType(dtype, (N, 33))],
                   {"scale": 0.0123, "zero_point": zero_point})
    assert_bit_exact(graph, random_feeds(graph))


# -- products -----------------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype, zero_point", [("int8", 7), ("uint8", 130), ("int16", -1000)])
def test_int_linear_with_bias(x_dtype: str, zero_point: int) -> None:
    w, b = i8(6, 16), RNG.integers(-10**6, 10**6, 6).astype(np.int32)
    graph = one_op("int_linear", [TensorType(x_dtype, (N, 5, 16)), w, b],
                   {"x_zero_point": zero_point})
    assert_bit_exact(graph, random_feeds(graph))


def test_int_linear_with_a_weight_input_and_an_int64_accumulator() -> None:
    """int32 operands: no static bound keeps the partial sums in int32, so int64 is used."""
    graph = one_op("int_linear", [TensorType("int32", (N, 16)), TensorType("int32", (4, 16))],
                   {"x_zero_point": 3})
    assert_bit_exact(graph, random_feeds(graph, {"x0": (-2**20, 2**20), "x1": (-100, 100)}))


@pytest.mark.parametrize("a_dtype, b_dtype, a_zero_point, b_zero_point", [
    ("int8", "int8", 2, -3), ("uint8", "uint8", 255, 1), ("int16", "int8", -7, 5)])
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
    "int16 zero point": ("int16", 500, (4, 6, 6), (4, 2, 3, 3), (2, 1), (1, 0, 1, 2), (1, 2), 2),
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
    ("uint8", (-1,), False, 128), ("int16", (0, 2), True, -3)])  # the last reduces the batch
def test_int_sum(dtype: str, axes: tuple[int, ...], keepdims: bool, zero_point: int) -> None:
    graph = one_op("int_sum", [TensorType(dtype, (N, 3, 4, 5))],
                   {"axes": axes, "keepdims": keepdims, "zero_point": zero_point})
    assert_bit_exact(graph, random_feeds(graph))


# -- rescaling ------------------------------------------------------------------------------
def test_requantize_per_channel_with_offset_and_relu_clamp() -> None:
    mult, shift = dyadic_pair(RNG.uniform(1e-4, 3e-4, 8), (8, 1, 1))
    offset = RNG.integers(-2**40, 2**40, (8, 1, 1))
    graph = one_op("requantize", [TensorType("int32", (N, 8, 3, 3)), mult, shift, offset],
                   {"zero_point": -128, "dtype": "int8", "qmin": -128, "qmax": 127})
    assert_bit_exact(graph, random_feeds(graph, {"x0": (-2**20, 2**20)}))


@pytest.mark.parametrize("shift_is_input", [True, False])
def test_rounding_shift_per_channel_at_ties_and_extremes(shift_is_input: bool) -> None:
    """requantize with multiplier 1 and an int64 clamp is ``rounding_shift(x, shift)``; the
    63 channels shift by 0..62, given at run time or as a constant."""
    lo, hi = INT_RANGES["int64"]
    shifts = np.arange(63, dtype=np.int64).reshape(63, 1)
    shift = TensorType("int64", (63, 1)) if shift_is_input else shifts
    graph = one_op("requantize", [TensorType("int64", (N, 63, 8)), np.ones((63, 1), np.int64),
                                  shift], {"dtype": "int64", "qmin": lo, "qmax": hi})
    ties = np.left_shift(np.int64(1), shifts) >> 1  # 2^(c-1): exactly half a step

    def feeds(batch: int) -> dict[str, np.ndarray]:
        x = RNG.integers(-(1 << 62) + 1, 1 << 62, (batch, 63, 8))
        x[0, :, :6] = np.concatenate([ties, -ties, ties - 1, -ties - 1, 3 * (ties >> 1),
                                      -3 * (ties >> 1)], 1)
        x[0, :, 6:] = [(1 << 62) - 1, -(1 << 62) + 1]
        return {"x0": x.astype(np.int64), **({"x2": shifts} if shift_is_input else {})}
    assert_bit_exact(graph, feeds)


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
        a = full_range("int32", (batch, 50))
        a[0, :4], b[0, :4] = [7, -7, 7, -7], [2, 2, -2, -2]
        return {"x0": a, "x1": b}
    assert_bit_exact(graph, feeds)


# -- I-BERT -----------------------------------------------------------------------------------
CLAMPING_SCALE = 5.099321018671222e-05
"""A scale whose i-exp maximum is exactly 2^15 after the 16-bit shift: a dominant element then
maps to 2^out_bits before the clamp."""


@pytest.mark.parametrize("dtype, axis, scale, out_bits", [
    ("int16", -1, 0.05, 8), ("int32", 1, CLAMPING_SCALE, 12), ("int8", 2, 0.1, 8)])
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


@pytest.mark.parametrize("dtype, scale, zero_point", [("int8", 0.05, 3), ("int32", 2e-4, 0)])
def test_int_gelu(dtype: str, scale: float, zero_point: int) -> None:
    graph = one_op("int_gelu", [TensorType(dtype, (N, 7, 19))],
                   {"zero_point": zero_point, "scale": scale})
    lo, hi = INT_RANGES[dtype]
    limit = min(hi, gelu_plan(scale).max_abs_input - 1 - abs(zero_point))
    assert_bit_exact(graph, random_feeds(graph, {"x0": (max(lo, -limit), limit)}))


def test_int_layernorm() -> None:
    graph = one_op("int_layernorm", [TensorType("int32", (N, 5, 32))],
                   {"scale": 0.01, "zero_point": 3})

    def feeds(batch: int) -> dict[str, np.ndarray]:
        q = RNG.integers(-2**21, 2**21, (batch, 5, 32))
        q[0, 0] = 7                                        # a constant row: variance 0, eps
        q[0, 1] = RNG.integers(-2, 3, 32)                  # a row a few codes wide
        q[0, 2, 0] = 2**22 - 1 + 3                         # the input limit, after the zp
        return {"x0": q.astype(np.int32)}
    assert_bit_exact(graph, feeds)


def hard_square_roots() -> np.ndarray:
    """Inputs next to powers of two and to squares of 2^j + d: the cases where the Newton
    iteration needs all six steps."""
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


# -- data movement and the float-table ops used on integers ---------------------------------
def test_data_movement_chain_with_batch_sized_reshapes() -> None:
    builder = GraphBuilder("moves")
    origin = builder.capture("moves", "moves")
    x = builder.add_input("x", TensorType("int8", (N, 4, 6)))
    row = builder.add_input("row", TensorType("int16", (1, 6)))
    flat = builder.add("reshape", [x], origin, {"shape": (Sym(4), 6)})
    picked = builder.add("slice", [flat], origin,
                         {"axes": (1,), "starts": (5,), "ends": (-100,), "steps": (-2,)})
    forward = builder.add("slice", [flat], origin,
                          {"axes": (-1,), "starts": (1,), "ends": (100,), "steps": (2,)})
    back = builder.add("reshape", [picked], origin, {"shape": (N, 4, 3)})
    swapped = builder.add("transpose", [back], origin, {"perm": (0, 2, 1)})
    joined = builder.add("concat", [swapped, swapped], origin, {"axis": -1})
    pairs = builder.add("reshape", [joined], origin, {"shape": (Sym(3), 2, 4)})
    spread = builder.add("expand", [row], origin, {"shape": (N, 3, 6)})
    kept = builder.add("expand", [builder.add("reshape", [x], origin, {"shape": (N, 1, 24)})],
                       origin, {"shape": (N, 2, 24)})
    graph = builder.finish([pairs, forward, spread, kept])
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("axis", [0, 1])
def test_gather_from_an_int8_table_with_negative_indices(axis: int) -> None:
    table = i8(50, 8) if axis == 0 else i8(8, 50)
    graph = one_op("gather", [table, TensorType("int64", (N, 7))], {"axis": axis})
    assert_bit_exact(graph, random_feeds(graph, {"x1": (-50, 49)}))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64", "float32"])
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
    # eval_clip clips int64 with float bounds in float64, which rounds |x| > 2^53
    ranges = {"x": (-2**53, 2**53)} if dtype == "int64" else None
    assert_bit_exact(graph, random_feeds(graph, ranges))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64"])
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

    def feeds(batch: int) -> dict[str, np.ndarray]:
        feed = random_feeds(graph, {"mask": (0, 2)})(batch)
        feed["scores"][0, 0, :2] = [-128, 127]  # -(-128) wraps to -128 in int8
        return feed
    assert_bit_exact(graph, feeds)


POOLS = {  # kernel, strides, pads, dilations, ceil_mode on a [N, 2, 5, 7] input
    "ceil drops a window": ((2, 3), (2, 2), (1, 1, 1, 1), (1, 2), True),
    "ceil, no padding": ((3, 2), (3, 4), (0, 0, 0, 0), (1, 1), True),
    "floor": ((3, 3), (2, 1), (1, 0, 0, 2), (1, 1), False),
}


@pytest.mark.parametrize("dtype", ["int8", "int32"])
@pytest.mark.parametrize("pool", POOLS)
def test_max_pool_never_lets_padding_win(dtype: str, pool: str) -> None:
    kernel, strides, pads, dilations, ceil_mode = POOLS[pool]
    graph = one_op("max_pool", [TensorType(dtype, (N, 2, 5, 7))], {
        "kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations,
        "ceil_mode": ceil_mode})
    assert_bit_exact(graph, random_feeds(graph))


@pytest.mark.parametrize("dtype", ["int8", "uint8", "int64"])
def test_elementwise_arithmetic_wraps_like_numpy(dtype: str) -> None:
    builder = GraphBuilder("arith")
    origin = builder.capture("arith", "arith")
    a = builder.add_input("a", TensorType(dtype, (N, 4, 6)))
    b = builder.add_input("b", TensorType(dtype, (N, 1, 6)))
    one = builder.add_constant(np.array(1, dtype), "one")
    outs = [builder.add(op, [a, b], origin) for op in ("add", "sub", "mul", "maximum", "minimum")]
    graph = builder.finish(outs + [builder.add("sub", [one, b], origin)])
    assert_bit_exact(graph, random_feeds(graph))


def test_two_inputs_of_one_shape_stay_apart_over_calls() -> None:
    """Small inputs are staged in kept buffers; two of one shape and dtype get one each, and
    a second call sees its own values."""
    builder = GraphBuilder("pair")
    origin = builder.capture("pair", "pair")
    a = builder.add_input("a", TensorType("int8", (N, 5)))
    b = builder.add_input("b", TensorType("int8", (N, 5)))
    graph = builder.finish([builder.add("sub", [a, b], origin)])
    program = load_tvm(build(graph, "llvm"))
    make = random_feeds(graph)
    for call in (1, 2):
        feeds = make(2)
        assert np.any(feeds["a"] != feeds["b"])
        assert_same(program(feeds), run_graph(graph, feeds), f"call {call}")


@pytest.mark.parametrize("source, target", [
    ("int32", "int8"), ("int64", "uint8"), ("float32", "int32"), ("int16", "bool")])
def test_cast(source: str, target: str) -> None:
    graph = one_op("cast", [TensorType(source, (N, 20))], {"to": target})
    assert_bit_exact(graph, random_feeds(graph))


# -- the contract -------------------------------------------------------------------------------
def test_an_op_without_an_emitter_names_the_node_and_op(monkeypatch) -> None:
    graph = one_op("int_gelu", [TensorType("int8", (N, 4))], {"scale": 0.1})
    monkeypatch.delitem(TVM_EMITTERS, "int_gelu")
    with pytest.raises(LowbitError, match="no TVM emitter") as err:
        to_relax(graph)
    assert (err.value.node, err.value.op) == (graph.nodes[0].name, "int_gelu")


def test_a_float_op_is_refused_with_its_name() -> None:
    graph = one_op("sigmoid", [TensorType("float32", (N, 4))])
    with pytest.raises(LowbitError, match="node sigmoid, op sigmoid: op has no TVM emitter"):
        to_relax(graph)


def test_every_integer_op_has_an_emitter() -> None:
    integer_ops = {name for name, spec in OP_TABLE.items()
                   if spec.evaluate.__module__ == "lowbit.compiler.ops.integer"}
    assert len(integer_ops) == 14
    assert integer_ops <= TVM_EMITTERS.keys()


def test_int64_constants_keep_their_dtype() -> None:
    """relax.const without a dtype turns int64 into int32: multipliers near 2^31 and shifts
    near 62 must arrive as int64, and the product overflows int32."""
    mult, shift = dyadic_pair(np.array([3e-10, 2e-4]), (2, 1))
    graph = one_op("requantize", [TensorType("int32", (N, 2, 3)), mult, shift],
                   {"dtype": "int32", "qmin": -2**31, "qmax": 2**31 - 1})
    main = to_relax(graph)["main"]
    constants = [arg for block in main.body.blocks for binding in block.bindings
                 for arg in getattr(binding.value, "args", ())
                 if isinstance(arg, tvm.ir.expr.GenericConst)]
    assert len(constants) == 3  # multiplier, rounding half, shift
    assert {str(c.ty.dtype) for c in constants} == {"int64"}
    assert_bit_exact(graph, random_feeds(graph))


# -- the lowered bundled programs ---------------------------------------------------------------
CALIB = {"digits-cnn": 64, "digits-vit": 64}


@functools.cache
def lowered_program(name: str) -> tuple[object, Graph]:
    """The bundled model and its integer program (lowered once per test session)."""
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    model = get_model(name)
    program = compile_graph(capture_bundled(name), model.sample_inputs(CALIB[name], "calib"),
                            CompileOptions(progress=False)).integer_graph
    return model, program


@pytest.fixture(scope="module", params=sorted(CALIB))
def lowered(request):
    model, program = lowered_program(request.param)
    return model, program, build(program, "llvm")


def _random_images(model, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Uniform images over twice the data range, shaped like the real ones."""
    rng = np.random.default_rng(seed)
    return {name: rng.uniform(-1.0, 2.0, array.shape).astype(array.dtype)
            for name, array in model.sample_inputs(batch, "test").items()}


def test_every_op_of_the_lowered_programs_has_an_emitter(lowered) -> None:
    _, program, _ = lowered
    assert set(program.op_histogram()) <= TVM_EMITTERS.keys()


def test_every_op_the_onnx_exporter_covers_has_an_emitter() -> None:
    """Integer programs only: the float rules export captured float graphs (``lowbit pass``),
    which TVM never builds."""
    from lowbit.compiler.exporters import ONNX_EXPORT_RULES
    from lowbit.compiler.exporters.onnx_float_rules import FLOAT_RULES

    assert ONNX_EXPORT_RULES.keys() - FLOAT_RULES.keys() <= TVM_EMITTERS.keys()


def test_lowered_program_is_bit_exact_on_real_and_random_inputs(lowered) -> None:
    model, program, executable = lowered
    runnable = load_tvm(executable)
    for feeds in (model.sample_inputs(32, "test"), model.sample_inputs(7, "test"),
                  _random_images(model, 5, seed=1)):
        got = runnable(feeds)
        assert list(got) == list(model.output_names)
        assert_same(got, run_graph(program, feeds), f"{model.name}, batch {len(feeds['image'])}")


def test_misaligned_and_strided_inputs_give_the_same_outputs(lowered) -> None:
    """Inputs TVM cannot take by DLPack as they are (not 64-byte aligned, not contiguous) are
    copied, not refused or misread."""
    model, program, executable = lowered
    runnable = load_tvm(executable)
    image = model.sample_inputs(3, "test")["image"]
    raw = np.empty(image.nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + 4
    misaligned = raw[start:start + image.nbytes].view(image.dtype).reshape(image.shape)
    misaligned[...] = image
    strided = np.repeat(image, 2, axis=0)[::2]
    assert misaligned.ctypes.data % 64 and not strided.flags.c_contiguous
    expected = run_graph(program, {"image": image})
    for variant in (misaligned, strided):
        assert_same(runnable({"image": variant}), expected, model.name)


def test_exported_library_runs_by_name_without_the_graph(lowered, tmp_path) -> None:
    model, program, executable = lowered
    path = export_library(executable, tmp_path / "lib" / "model.so")
    feeds = model.sample_inputs(4, "test")
    assert_same(run_tvm(path, feeds), run_graph(program, feeds), f"{model.name} from {path}")
    with pytest.raises(InputError, match="missing input"):
        run_tvm(path, {})
    with pytest.raises(InputError, match="float64"):
        run_tvm(path, {"image": feeds["image"].astype(np.float64)})


@pytest.fixture(scope="module")
def digits_cnn_program() -> Graph:
    return lowered_program("digits-cnn")[1]


@pytest.fixture(scope="module")
def cuda_build(digits_cnn_program):
    return build(digits_cnn_program, "cuda")


def test_cuda_build_generates_kernels_without_a_gpu(cuda_build) -> None:
    source = device_source(cuda_build, "cuda")
    assert "__global__" in source
    assert source.count("__global__") >= 5  # convolutions, requantizations, pooling, head


CUDA_OPS = {
    "int_layernorm": ("int32", {"scale": 0.01, "zero_point": 1}),
    "int_softmax": ("int16", {"scale": 0.05}),
    "int_gelu": ("int16", {"scale": 0.02}),
    "int_sqrt": ("int64", {}),
}


@pytest.mark.parametrize("op", CUDA_OPS)
def test_cuda_builds_the_ibert_ops(op: str) -> None:
    """Their square-root recurrences once made dlight's GPU rules run for minutes."""
    dtype, attrs = CUDA_OPS[op]
    executable = build(one_op(op, [TensorType(dtype, (N, 4, 24))], attrs), "cuda")
    assert "__global__" in device_source(executable, "cuda")


def test_cuda_module_runs_bit_exact_on_a_gpu(cuda_build, digits_cnn_program) -> None:
    if not (tvm.runtime.enabled("cuda") and tvm.cuda(0).exist):
        pytest.skip("no CUDA GPU on this machine (tvm.cuda(0).exist is false)")
    model, _ = lowered_program("digits-cnn")
    for feeds in (model.sample_inputs(16, "test"), _random_images(model, 3, seed=2)):
        assert_same(run_tvm(cuda_build, feeds), run_graph(digits_cnn_program, feeds), "on cuda")


@pytest.fixture(scope="module")
def aarch64_build(digits_cnn_program):
    return build(digits_cnn_program, "aarch64")


def test_aarch64_export_is_an_arm_shared_library(aarch64_build, tmp_path) -> None:
    if shutil.which(AARCH64_CC) is None:
        pytest.skip(f"{AARCH64_CC} is not installed (Debian: apt-get install "
                    "gcc-aarch64-linux-gnu)")
    path = export_library(aarch64_build, tmp_path / "model.so")
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # AArch64


def test_aarch64_export_without_the_cross_compiler_is_a_clear_error(
        aarch64_build, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(LowbitError, match=AARCH64_CC):
        export_library(aarch64_build, tmp_path / "model.so")
