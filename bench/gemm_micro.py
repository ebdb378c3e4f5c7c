"""The int8 GEMM micro-benchmark: lowbit's ``int_linear`` and ``int_matmul`` built by TVM for
this host against onnxruntime's ``MatMulInteger`` on the same shapes and the same integers.

Each case computes the int32 product ``(A - a_zero_point) @ B`` of an ``[M, K]`` activation and a
``[K, N]`` matrix (lowbit's ``int_linear`` stores the weight as ``B.T``). Every row of a shape
gets the same integers, and its int32 result is compared with numpy's int64 product (``same``),
so that the timings compare equal, correct work. A constant ``B`` is an initializer (ORT) or a
graph constant (lowbit); otherwise it is an input. Times are calls from numpy to numpy through
each library's Python API, medians over repeats (``timing``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lowbit.bench.timing import Budget, Timing, measure
from lowbit.compiler import Graph, GraphBuilder, Sym, TensorType

SHAPES: dict[str, tuple[int, int, int]] = {  # name -> (M, K, N)
    "64x128x256": (64, 128, 256),
    "MiniLM FFN 32x384x1536": (32, 384, 1536),
}
BUDGET = Budget(seconds=2.0, warmup=10, min_repeats=30, max_repeats=3000)
ZERO_POINTS = {"int8": 3, "uint8": 131}
LOWBIT_LINEAR = "lowbit TVM int_linear s8 x const s8"
ORT_U8S8 = "onnxruntime MatMulInteger u8 x const s8"

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class GemmCase:
    """One row: how to build the callable for an ``[M, K] x [K, N]`` problem."""

    name: str
    a_dtype: str
    constant_b: bool
    build: Callable[["GemmCase", np.ndarray], Callable[[np.ndarray, np.ndarray], np.ndarray]]


@dataclass(frozen=True)
class GemmRow:
    shape: str
    case: str
    timing: Timing | None
    same: bool
    error: str | None = None


def _lowbit_graph(case: GemmCase, b: np.ndarray) -> Graph:
    builder = GraphBuilder("gemm")
    origin = builder.capture("gemm", "gemm")
    k, n = b.shape
    a = builder.add_input("a", TensorType(case.a_dtype, (Sym(1), k)))
    zero_point = ZERO_POINTS[case.a_dtype]
    if case.constant_b:
        w = builder.add_constant(np.ascontiguousarray(b.T), "w")
        out = builder.add("int_linear", [a, w], origin, {"x_zero_point": zero_point})
    else:
        b_in = builder.add_input("b", TensorType("int8", (k, n)))
        out = builder.add("int_matmul", [a, b_in], origin,
                          {"a_zero_point": zero_point, "b_zero_point": 0})
    return builder.finish([out])


def lowbit_gemm(case: GemmCase, b: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.runtime.tvm_backend import load_tvm

    graph = _lowbit_graph(case, b)
    program = load_tvm(build(graph, "llvm"))
    output = graph.outputs[0]
    if case.constant_b:
        return lambda a, _b: program({"a": a})[output]
    return lambda a, b_in: program({"a": a, "b": b_in})[output]


def _onnx_model(case: GemmCase, b: np.ndarray) -> onnx.ModelProto:
    k, n = b.shape
    a_type = {"int8": TensorProto.INT8, "uint8": TensorProto.UINT8}[case.a_dtype]
    zero_point = numpy_helper.from_array(np.array(ZERO_POINTS[case.a_dtype], case.a_dtype), "azp")
    inputs = [helper.make_tensor_value_info("a", a_type, ["M", k])]
    initializers = [zero_point]
    if case.constant_b:
        initializers.append(numpy_helper.from_array(b, "b"))
    else:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.INT8, [k, n]))
    node = helper.make_node("MatMulInteger", ["a", "b", "azp"], ["y"])
    graph = helper.make_graph([node], "gemm", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", n])],
                              initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def onnxruntime_gemm(case: GemmCase, b: np.ndarray
                     ) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    session = ort.InferenceSession(_onnx_model(case, b).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    if case.constant_b:
        return lambda a, _b: session.run(["y"], {"a": a})[0]
    return lambda a, b_in: session.run(["y"], {"a": a, "b": b_in})[0]


CASES: tuple[GemmCase, ...] = (
    GemmCase(LOWBIT_LINEAR, "int8", True, lowbit_gemm),
    GemmCase("lowbit TVM int_linear u8 x const s8", "uint8", True, lowbit_gemm),
    GemmCase("lowbit TVM int_matmul s8 x s8 input", "int8", False, lowbit_gemm),
    GemmCase(ORT_U8S8, "uint8", True, onnxruntime_gemm),
    GemmCase("onnxruntime MatMulInteger s8 x const s8", "int8", True, onnxruntime_gemm),
    GemmCase("onnxruntime MatMulInteger s8 x s8 input", "int8", False, onnxruntime_gemm),
)


def _operands(m: int, k: int, n: int, rng: np.random.Generator) -> tuple[Arrays, np.ndarray]:
    """Activations per dtype holding the same ``A - zero_point`` values, and ``B``."""
    centred = rng.integers(-120, 124, (m, k))
    activations = {dtype: (centred + zp).astype(dtype) for dtype, zp in ZERO_POINTS.items()}
    return activations, rng.integers(-128, 128, (k, n)).astype(np.int8)


def _error_text(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0][:200] if lines else ''}"


def bench_gemm(seed: int = 0) -> list[GemmRow]:
    """Every case on every shape; a failing case is a row holding its error."""
    rng = np.random.default_rng(seed)
    rows = []
    for shape, (m, k, n) in SHAPES.items():
        activations, b = _operands(m, k, n, rng)
        expected = (activations["int8"].astype(np.int64) - ZERO_POINTS["int8"]) @ b
        for case in CASES:
            a = activations[case.a_dtype]
            try:
                run = case.build(case, b)
                same = bool(np.array_equal(run(a, b), expected))
                rows.append(GemmRow(shape, case.name, measure(functools.partial(run, a, b),
                                                              BUDGET), same))
            except Exception as err:  # noqa: BLE001 - a failing case is a result, not a crash
                rows.append(GemmRow(shape, case.name, None, False, _error_text(err)))
    return rows
