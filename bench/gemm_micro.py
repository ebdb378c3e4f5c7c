"""The int8 GEMM micro-benchmark: lowbit's ``int_linear`` and ``int_matmul`` built by TVM for
this host against onnxruntime's ``MatMulInteger`` on the same shapes and the same integers.

Each case computes the int32 product ``(A - a_zero_point) @ B`` of an ``[M, K]`` activation and a
``[K, N]`` matrix (lowbit's ``int_linear`` stores the weight as ``B.T``). Every row of a shape
gets the same integers, and its int32 result is compared with numpy's int64 product (``same``)
before it is timed, so that the timings compare equal, correct work. A constant ``B`` is an
initializer (ORT) or a graph constant (lowbit); otherwise it is an input. lowbit's program is
``tvm_build.build(graph, "llvm")`` (the CPU pipeline and its kernel rewrite, ``tvm_kernels``) run
by the Relax VM. Times are calls from numpy to numpy through each library's Python API without
copies on either side (TVM takes its inputs by DLPack, so they are allocated 64-byte aligned, and
returns its output by DLPack too), medians over repeats, each case in its own block
(``timing``).

``python -m lowbit.bench.gemm_micro`` prints the table for ``SHAPES`` and the TVM kernel row
used on this host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from lowbit.bench.timing import Budget, Timing, format_ratio, format_seconds, measure
from lowbit.compiler import Graph, GraphBuilder, Sym, TensorType

SHAPES: dict[str, tuple[int, int, int]] = {  # name -> (M, K, N)
    "64x128x256": (64, 128, 256),
    "MiniLM attention 32x384x384": (32, 384, 384),
    "MiniLM FFN up 32x384x1536": (32, 384, 1536),
    "MiniLM FFN down 32x1536x384": (32, 1536, 384),
}
BUDGET = Budget(seconds=2.0, warmup=10, min_repeats=30, max_repeats=3000)
ZERO_POINTS = {"int8": 3, "uint8": 131}
LOWBIT_LINEAR = "lowbit TVM int_linear s8 x const s8"
ORT_U8S8 = "onnxruntime MatMulInteger u8 x const s8"

Arrays = dict[str, np.ndarray]
Call = Callable[[], np.ndarray]


@dataclass(frozen=True)
class GemmCase:
    """One row: how to build the call computing ``A @ B`` for given ``[M, K]`` and ``[K, N]``
    operands (``build(case, a, b)``)."""

    name: str
    a_dtype: str
    constant_b: bool
    build: Callable[["GemmCase", np.ndarray, np.ndarray], Call]


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


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of ``array`` whose data starts on an ``alignment``-byte boundary, which TVM needs
    to take it by DLPack without copying (onnxruntime takes numpy arrays as they are)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def lowbit_gemm(case: GemmCase, a: np.ndarray, b: np.ndarray) -> Call:
    import tvm
    from tvm import relax

    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.runtime.tvm_threads import claim_physical_cores

    claim_physical_cores()
    main = relax.VirtualMachine(build(_lowbit_graph(case, b), "llvm").module, tvm.cpu())["main"]
    sources = [aligned(a)] + ([] if case.constant_b else [aligned(b)])
    return lambda: np.from_dlpack(main(*map(tvm.runtime.from_dlpack, sources)))


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


def onnxruntime_gemm(case: GemmCase, a: np.ndarray, b: np.ndarray) -> Call:
    session = ort.InferenceSession(_onnx_model(case, b).SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = {"a": a} | ({} if case.constant_b else {"b": b})
    return lambda: session.run(["y"], feeds)[0]


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
            try:
                run = case.build(case, activations[case.a_dtype], b)
                same = bool(np.array_equal(run(), expected))
                rows.append(GemmRow(shape, case.name, measure(run, BUDGET), same))
            except Exception as err:  # noqa: BLE001 - a failing case is a result, not a crash
                rows.append(GemmRow(shape, case.name, None, False, _error_text(err)))
    return rows


def render_gemm(rows: Sequence[GemmRow]) -> str:
    """The rows as a markdown table, each median also over ``ORT_U8S8``'s on its shape."""
    lines = ["| M x K x N | case | median | repeats | equals numpy | ÷ " + ORT_U8S8 + " |",
             "| --- | --- | ---: | ---: | --- | ---: |"]
    best = {(r.shape, r.case): r.timing.median_s for r in rows if r.timing is not None}
    for row in rows:
        if row.timing is None:
            lines.append(f"| {row.shape} | {row.case} | error: {row.error} | - | - | - |")
            continue
        lines.append(f"| {row.shape} | {row.case} | {format_seconds(row.timing.median_s)} | "
                     f"{row.timing.repeats} | {'yes' if row.same else 'NO'} | "
                     f"{format_ratio(row.timing.median_s, best.get((row.shape, ORT_U8S8)))} |")
    return "\n".join(lines)


def host_kernel_row() -> str:
    """The name of the ``tvm_kernels`` row that lowbit's int8 GEMM uses on this host."""
    import tvm

    from lowbit.compiler.codegen.tvm_kernels import kernel_row

    return kernel_row(tvm.target.Target.from_device(tvm.cpu())).name


if __name__ == "__main__":
    print(f"TVM kernel row: {host_kernel_row()}\n\n{render_gemm(bench_gemm())}")
