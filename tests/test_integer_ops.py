"""Integer rows of the op table against independent references: torch integer arithmetic,
Python's exact integers and fractions, and float functions within the kernels' stated bounds."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.compiler import GraphBuilder, LowbitError, TensorType
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.runtime import run_graph

RNG = np.random.default_rng(3)
INTEGER_OPS = {"quantize", "dequantize", "int_linear", "int_conv", "int_matmul", "int_mul",
               "int_sum", "requantize", "int_add", "int_div", "int_softmax", "int_gelu",
               "int_layernorm", "int_sqrt",
               "int_block_linear",  # tested in test_block_quant
               "int_log2_matmul"}  # tested in test_reparam_by_hand


def run_op(op: str, inputs: list[np.ndarray], attrs: dict, constants: tuple[int, ...] = ()
           ) -> np.ndarray:
    builder = GraphBuilder(op)
    origin = builder.capture(op, op)
    names = [builder.add_constant(a, f"c{i}") if i in constants
             else builder.add_input(f"x{i}", TensorType(str(a.dtype), a.shape))
             for i, a in enumerate(inputs)]
    out = builder.add(op, names, origin, attrs)
    graph = builder.finish([out])
    return run_graph(graph, {n: a for n, a in zip(names, inputs) if n in graph.inputs})[out]


def i8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, shape).astype(np.int8)


def round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


def test_quantize_matches_onnxruntime_quantize_linear() -> None:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    x = (RNG.standard_normal((4, 7)) * 100).astype(np.float32)
    x[0, :3] = [0.25, 0.75, -0.25]  # ties go to even, as ONNX QuantizeLinear specifies
    got = run_op("quantize", [x], {"scale": 0.5, "zero_point": 3, "dtype": "int8"})
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    graph = helper.make_graph(
        [node], "q", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 7])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [4, 7])],
        [numpy_helper.from_array(np.array(0.5, np.float32), "s"),
         numpy_helper.from_array(np.array(3, np.int8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString())
    np.testing.assert_array_equal(got, session.run(None, {"x": x})[0])


def test_dequantize_matches_torch() -> None:
    q = i8(3, 5)
    got = run_op("dequantize", [q], {"scale": 0.1, "zero_point": -4})
    want = (torch.from_numpy(q).float() + 4) * torch.tensor(0.1, dtype=torch.float32)
    np.testing.assert_array_equal(got, want.numpy())


def test_int_linear_matches_torch() -> None:
    x, w, b = i8(2, 5, 16), i8(6, 16), RNG.integers(-1000, 1000, 6).astype(np.int32)
    got = run_op("int_linear", [x, w, b], {"x_zero_point": -7}, constants=(1, 2))
    want = (torch.from_numpy(x).long() + 7) @ torch.from_numpy(w).long().T + torch.from_numpy(b)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, want.numpy())


def test_int_conv_pads_with_the_zero_point() -> None:
    x, w = i8(2, 4, 6, 6), i8(8, 2, 3, 3)
    got = run_op("int_conv", [x, w], {"x_zero_point": 5, "strides": (1, 1), "pads": (1, 1, 1, 1),
                                      "dilations": (1, 1), "groups": 2}, constants=(1,))
    shifted = torch.from_numpy(x).double() - 5  # exact in float64
    want = F.conv2d(shifted, torch.from_numpy(w).double(), padding=1, groups=2)
    np.testing.assert_array_equal(got, want.numpy().astype(np.int64))


def test_int_matmul_and_mul_and_sum_match_torch() -> None:
    a, b = i8(2, 3, 4, 8), i8(2, 3, 8, 5)
    got = run_op("int_matmul", [a, b], {"a_zero_point": 2, "b_zero_point": -3})
    want = (torch.from_numpy(a).long() - 2) @ (torch.from_numpy(b).long() + 3)
    np.testing.assert_array_equal(got, want.numpy())
    c = i8(4, 1)
    got = run_op("int_mul", [a, c], {"a_zero_point": 1, "b_zero_point": -1})
    np.testing.assert_array_equal(
        got, ((torch.from_numpy(a).long() - 1) * (torch.from_numpy(c).long() + 1)).numpy())
    got = run_op("int_sum", [a], {"axes": (1, 3), "keepdims": True, "zero_point": 4})
    np.testing.assert_array_equal(got, (torch.from_numpy(a).long() - 4).sum((1, 3), True).numpy())


def test_requantize_is_exact_rational_rounding() -> None:
    acc = RNG.integers(-2**31, 2**31, (3, 4)).astype(np.int32)
    mult = np.array([1 << 30, 1518500250, 2**31 - 1], np.int64).reshape(3, 1)
    shift = np.array([33, 40, 62], np.int64).reshape(3, 1)
    got = run_op("requantize", [acc, mult, shift],
                 {"zero_point": 10, "dtype": "int16", "qmin": -30000, "qmax": 30000},
                 constants=(1, 2))
    for (i, j), a in np.ndenumerate(acc):
        exact = round_half_up(Fraction(int(a) * int(mult[i, 0]), 2 ** int(shift[i, 0]))) + 10
        assert got[i, j] == min(max(exact, -30000), 30000)


def test_int_add_is_exact_rational_rounding() -> None:
    a, b = i8(50), i8(50)
    attrs = {"a_zero_point": 3, "b_zero_point": -2, "a_mult": 1234567, "b_mult": 7654321,
             "shift": 23, "zero_point": -1, "dtype": "int8", "qmin": 0, "qmax": 127}
    got = run_op("int_add", [a, b], attrs)
    for k in range(50):
        total = (int(a[k]) - 3) * 1234567 + (int(b[k]) + 2) * 7654321
        assert got[k] == min(max(round_half_up(Fraction(total, 2**23)) - 1, 0), 127)


def test_int_div_truncates_like_c() -> None:
    a = np.array([7, -7, 7, -7, 0], np.int32)
    b = np.array([2, 2, -2, -2, 5], np.int32)
    got = run_op("int_div", [a, b], {"shift": 3})
    assert got.tolist() == [int(Fraction(x * 8, y)) for x, y in zip(a.tolist(), b.tolist())]
    with pytest.raises(LowbitError, match="division by zero"):
        run_op("int_div", [a, np.zeros(5, np.int32)], {"shift": 0})


def test_int_sqrt_matches_math_isqrt() -> None:
    n = np.array([0, 1, 2, 3, 4, 99, 2**40 + 7, 2**62 - 1], np.int64)
    assert run_op("int_sqrt", [n], {}).tolist() == [math.isqrt(int(v)) for v in n]


def test_int_softmax_close_to_float_softmax() -> None:
    scale = 0.05
    q = RNG.integers(-200, 200, (3, 4, 17)).astype(np.int16)
    got = run_op("int_softmax", [q], {"axis": -1, "scale": scale, "out_bits": 8})
    want = torch.softmax(torch.from_numpy(q.astype(np.float64) * scale), -1).numpy()
    assert got.dtype == np.uint8
    assert np.abs(got / 256.0 - want).max() <= 1 / 128


def test_int_gelu_close_to_float_gelu() -> None:
    from lowbit.compiler.ops.integer import gelu_plan

    scale = 0.02
    q = np.arange(-250, 251, dtype=np.int16)
    got = run_op("int_gelu", [q], {"zero_point": 0, "scale": scale})
    want = F.gelu(torch.from_numpy(q.astype(np.float64) * scale)).numpy()
    assert np.abs(got * gelu_plan(scale).out_scale - want).max() <= 0.03


def test_int_layernorm_close_to_float_layernorm() -> None:
    q = RNG.integers(-3000, 3000, (4, 48)).astype(np.int16)
    got = run_op("int_layernorm", [q], {"zero_point": 0, "scale": 0.01, "eps": 1e-5})
    want = F.layer_norm(torch.from_numpy(q * 0.01), (48,), eps=1e-5).numpy()
    assert np.abs(got * 2.0**-24 - want).max() <= 1e-3


def test_overflow_is_an_error_naming_the_node() -> None:
    x = np.full((1, 4096), 127, np.int8)
    w = np.full((1, 4096), -128, np.int8)
    b = np.array([-2**31 + 1], np.int32)
    with pytest.raises(LowbitError, match="overflow") as caught:
        run_op("int_linear", [x, w, b], {}, constants=(1, 2))
    assert caught.value.node == "int_linear" and caught.value.op == "int_linear"


def test_integer_rows_all_have_tests() -> None:
    from lowbit.compiler import OP_TABLE

    integer_rows = {n for n in OP_TABLE if n.startswith("int_")} | {"quantize", "dequantize",
                                                                   "requantize"}
    assert integer_rows == INTEGER_OPS
    assert set(INT_RANGES) == {"int8", "uint8", "int16", "int32", "int64"}
