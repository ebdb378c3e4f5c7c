"""Int8 GEMM latency: lowbit's TVM kernel (``tvm_kernels``) against onnxruntime's
``MatMulInteger``, as interleaved pairs of calls in one process.

Invariant: both sides compute the same int32 ``(A - zero_point) @ B`` for an ``[M, K]``
activation and a constant ``[K, N]`` int8 weight, checked against numpy's int64 product before
timing. lowbit runs an ``int_linear`` program built by ``tvm_build.build(graph, "llvm")`` (so
through the CPU pipeline and its kernel rewrite) on int8 activations; onnxruntime runs its fast
path, uint8 activations times a constant int8 initializer. Each call goes numpy to numpy
without copies on either side (TVM takes the input by DLPack, so it is allocated 64-byte
aligned; the output comes back by DLPack too). The calls alternate (lowbit, onnxruntime,
lowbit, ...) so that both see the same machine load; the latency is the median of each side's
samples, the ratio lowbit / onnxruntime.

``python -m lowbit.bench.gemm`` prints the table for ``SHAPES``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

SHAPES: dict[str, tuple[int, int, int]] = {  # name -> (M, K, N)
    "64x128x256": (64, 128, 256),
    "MiniLM attention 32x384x384": (32, 384, 384),
    "MiniLM FFN up 32x384x1536": (32, 384, 1536),
    "MiniLM FFN down 32x1536x384": (32, 1536, 384),
}
ZERO_POINT = 3
"""The int8 activations' zero point (onnxruntime gets the same values as uint8, + 128)."""
PAIRS = 400
WARMUP = 20

Call = Callable[[], np.ndarray]


@dataclass(frozen=True)
class GemmRatio:
    """One shape: both medians, the number of pairs, the kernel row TVM used."""

    shape: str
    lowbit_s: float
    onnxruntime_s: float
    pairs: int
    kernel: str

    @property
    def ratio(self) -> float:
        return self.lowbit_s / self.onnxruntime_s


def lowbit_call(a: np.ndarray, b: np.ndarray) -> tuple[Call, str]:
    """``(a - ZERO_POINT) @ b`` by lowbit's TVM build, and the name of the kernel row used."""
    import tvm
    from tvm import relax

    from lowbit.compiler import GraphBuilder, Sym, TensorType
    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.compiler.codegen.tvm_kernels import kernel_row

    builder = GraphBuilder("gemm")
    origin = builder.capture("gemm", "gemm")
    x = builder.add_input("a", TensorType("int8", (Sym(1), b.shape[0])))
    w = builder.add_constant(np.ascontiguousarray(b.T), "w")
    graph = builder.finish([builder.add("int_linear", [x, w], origin,
                                        {"x_zero_point": ZERO_POINT})])
    main = relax.VirtualMachine(build(graph, "llvm").module, tvm.cpu())["main"]
    row = kernel_row(tvm.target.Target.from_device(tvm.cpu())).name
    source = aligned(a)
    return lambda: np.from_dlpack(main(tvm.runtime.from_dlpack(source))), row


def aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of ``array`` whose data starts on an ``alignment``-byte boundary, which TVM needs
    to take it by DLPack without copying (onnxruntime takes numpy arrays as they are)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def onnxruntime_call(a: np.ndarray, b: np.ndarray) -> Call:
    """The same product by onnxruntime's ``MatMulInteger``, uint8 activations (``a + 128``)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    unsigned = (a.astype(np.int16) + 128).astype(np.uint8)
    k, n = b.shape
    node = helper.make_node("MatMulInteger", ["a", "b", "azp"], ["y"])
    graph = helper.make_graph(
        [node], "gemm", [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", n])],
        [numpy_helper.from_array(b, "b"),
         numpy_helper.from_array(np.array(ZERO_POINT + 128, np.uint8), "azp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    return lambda: session.run(["y"], {"a": unsigned})[0]


def interleaved(first: Call, second: Call, pairs: int) -> tuple[float, float]:
    """Medians of ``pairs`` alternating calls of each, after ``WARMUP`` pairs."""
    samples: tuple[list[float], list[float]] = ([], [])
    for index in range(WARMUP + pairs):
        for call, times in zip((first, second), samples):
            start = time.perf_counter()
            call()
            if index >= WARMUP:
                times.append(time.perf_counter() - start)
    return statistics.median(samples[0]), statistics.median(samples[1])


def compare_gemm(shapes: Mapping[str, tuple[int, int, int]] = SHAPES, pairs: int = PAIRS,
                 seed: int = 0) -> list[GemmRatio]:
    """One ``GemmRatio`` per shape; raises if either side's product is not numpy's."""
    rng = np.random.default_rng(seed)
    rows = []
    for name, (m, k, n) in shapes.items():
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        expected = (a.astype(np.int64) - ZERO_POINT) @ b.astype(np.int64)
        lowbit, kernel = lowbit_call(a, b)
        peer = onnxruntime_call(a, b)
        for side, call in (("lowbit", lowbit), ("onnxruntime", peer)):
            if not np.array_equal(call(), expected):
                raise AssertionError(f"{side} int8 GEMM {name} differs from numpy")
        lowbit_s, peer_s = interleaved(lowbit, peer, pairs)
        rows.append(GemmRatio(name, lowbit_s, peer_s, pairs, kernel))
    return rows


def render(rows: list[GemmRatio]) -> str:
    lines = ["| shape (M x K x N) | lowbit TVM (us) | onnxruntime MatMulInteger u8 x s8 (us) "
             "| ratio | kernel row |", "| --- | ---: | ---: | ---: | --- |"]
    lines += [f"| {r.shape} | {r.lowbit_s * 1e6:.1f} | {r.onnxruntime_s * 1e6:.1f} "
              f"| {r.ratio:.2f} | {r.kernel} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(compare_gemm()))
