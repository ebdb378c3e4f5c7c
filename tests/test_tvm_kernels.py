"""The int8 GEMM micro-kernels (``tvm_kernels``): every kernel row bit-exact against numpy.

Each runnable row (the ones whose CPU features this host has, plus the generic row) is forced
onto an ``int_linear`` program through the real CPU pipeline and compared with the reference
interpreter and with a numpy int64 product written here. Inputs include the bytes that make
``vpmaddubsw`` saturate (activation code 255 against weights 127 and -128), row counts that are
not a multiple of the register tile, both activation dtypes and extreme zero points. The aarch64
``sdot`` row is cross-built and checked to use ``sdot``; it runs under qemu where the cross
toolchain is installed. The rewrite declines, and the default lowering stays, where the kernel
would not be exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.compiler import Graph, Sym, TensorType
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402
from tvm.target import codegen  # noqa: E402

from lowbit.compiler.codegen.tvm_emit import to_relax  # noqa: E402
from lowbit.compiler.codegen.tvm_kernels import (KERNEL_ATTR, KERNEL_ROWS,  # noqa: E402
                                                 KernelRow, fits_int32, int8_gemm, kernel_row,
                                                 pack_weights)

from tests.integer_graphs import one_op  # noqa: E402

RNG = np.random.default_rng(91)
N = Sym(1)
HOST = tvm.target.Target.from_device(tvm.cpu())
ROWS = {row.name: row for row in KERNEL_ROWS}
AARCH64_DOTPROD = {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                   "mattr": ["+neon", "+dotprod"]}


def runnable_rows() -> list[KernelRow]:
    """The x86 rows this host can execute, and the generic row."""
    return [row for row in KERNEL_ROWS if row.isa != "sdot"
            and all(codegen.target_has_features(f, HOST) for f in row.features)]


def adversarial_weights(out_features: int, in_features: int) -> np.ndarray:
    """Random int8 weights whose first columns are all 127 and all -128 (the extremes)."""
    w = RNG.integers(-128, 128, (out_features, in_features)).astype(np.int8)
    w[0], w[1] = 127, -128
    return w


def activations(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """Full-range codes; the first row all at the maximum (unsigned byte 255 in the kernel)."""
    info = np.iinfo(dtype)
    x = RNG.integers(info.min, int(info.max) + 1, shape).astype(dtype)
    x.reshape(-1, shape[-1])[0] = info.max
    return x


def linear(dtype: str, inner: tuple[int, ...], w: np.ndarray, zero_point: int,
           bias: bool = True) -> Graph:
    b = [RNG.integers(-10**6, 10**6, w.shape[0]).astype(np.int32)] if bias else []
    return one_op("int_linear", [TensorType(dtype, (N,) + inner), w, *b],
                  {"x_zero_point": zero_point})


def compiled(graph: Graph, target: tvm.target.Target, row: KernelRow | None
             ) -> tuple[relax.VirtualMachine | None, tvm.IRModule]:
    """The module after the kernel rewrite, and (for the host) its VM."""
    module = to_relax(graph)
    rewritten = int8_gemm(target, row)(module)
    if row is None:
        return None, rewritten
    pipeline = tvm.transform.Sequential([int8_gemm(target, row),
                                         relax.get_default_pipeline(target)])
    executable = tvm.compile(module, target, relax_pipeline=pipeline)
    return relax.VirtualMachine(executable, tvm.cpu()), rewritten


def kernels_used(module: tvm.IRModule) -> list[str]:
    return [str(f.attrs[KERNEL_ATTR]) for _, f in module.functions_items()
            if f.attrs is not None and KERNEL_ATTR in f.attrs]


def matmuls_left(module: tvm.IRModule) -> int:
    return module["main"].script().count("R.matmul")


def numpy_linear(graph: Graph, x: np.ndarray) -> np.ndarray:
    node = graph.nodes[0]
    w = graph.constants[node.inputs[1]].astype(np.int64)
    acc = (x.astype(np.int64) - node.attrs["x_zero_point"]) @ w.T
    if len(node.inputs) > 2:
        acc = acc + graph.constants[node.inputs[2]]
    return acc.astype(np.int32)


# -- packing and bounds -------------------------------------------------------------------------
def test_packed_weight_tile_holds_column_n_depth_k_at_n16_k4() -> None:
    w_t = RNG.integers(-128, 128, (12, 37)).astype(np.int8)  # [K, N], N padded to 48
    packed = pack_weights(w_t)
    assert packed.shape == (3, 3, 16, 4) and packed.dtype == np.int8
    for k in range(12):
        for n in range(48):
            want = w_t[k, n] if n < 37 else 0
            assert packed[n // 16, k // 4, n % 16, k % 4] == want


def test_int32_bound_of_the_unsigned_partial_sums() -> None:
    assert 65793 * 255 * 128 == 2**31 - 128
    assert fits_int32(65793, np.zeros(1))
    assert not fits_int32(65794, np.zeros(1))
    assert not fits_int32(16, np.array([2**31]))


def test_rows_follow_the_target_features() -> None:
    assert kernel_row(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})).isa == "vnni"
    assert kernel_row(tvm.target.Target({"kind": "llvm", "mcpu": "znver3"})).isa == "avx2"
    assert kernel_row(tvm.target.Target(AARCH64_DOTPROD)).isa == "sdot"
    assert kernel_row(tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                                         "mattr": ["+neon"]})).isa is None


# -- bit-exact on this host ---------------------------------------------------------------------
@pytest.mark.parametrize("row", runnable_rows(), ids=lambda r: r.name)
@pytest.mark.parametrize("dtype, zero_point", [("int8", 0), ("int8", -128), ("int8", 127),
                                               ("uint8", 0), ("uint8", 255)])
def test_kernel_row_is_bit_exact(row: KernelRow, dtype: str, zero_point: int) -> None:
    graph = linear(dtype, (7, 96), adversarial_weights(72, 96), zero_point)
    vm, module = compiled(graph, HOST, row)
    assert kernels_used(module) == [f"int8_gemm/{row.name}"] and matmuls_left(module) == 0
    for batch in (1, 2, 5):  # 7, 14 and 35 rows: none a multiple of the 4-row tile
        x = activations(dtype, (batch, 7, 96))
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        want = run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.array_equal(got, want), f"{int(np.sum(got != want))} differ"
        assert np.array_equal(got, numpy_linear(graph, x))


@pytest.mark.parametrize("row", runnable_rows(), ids=lambda r: r.name)
def test_saturating_bytes_at_large_depth(row: KernelRow) -> None:
    """Depth 1536 of 255 x 127 and 255 x -128: pairs at 64770 and -65280 before widening."""
    w = np.full((48, 1536), 127, np.int8)
    w[16:32] = -128
    graph = linear("uint8", (3, 1536), w, 0, bias=False)
    vm, _ = compiled(graph, HOST, row)
    x = np.full((2, 3, 1536), 255, np.uint8)
    x[1, 2] = RNG.integers(0, 256, 1536)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert np.array_equal(got, numpy_linear(graph, x))
    assert got[0, 0, 0] == 1536 * 255 * 127 and got[0, 0, 16] == -1536 * 255 * 128


# -- where the rewrite declines -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["depth not a multiple of 4", "int16 activations",
                                  "weights beyond int8"])
def test_the_rewrite_declines_where_the_kernel_is_not_exact(case: str) -> None:
    graphs = {
        "depth not a multiple of 4": linear("int8", (10,), adversarial_weights(8, 10), 3),
        "int16 activations": linear("int16", (8,), adversarial_weights(8, 8), 3),
        "weights beyond int8": one_op("int_linear", [TensorType("int8", (N, 8)),
                                                     np.full((4, 8), 300, np.int16)]),
    }
    _, module = compiled(graphs[case], HOST, None)
    assert kernels_used(module) == [] and matmuls_left(module) == 1


# -- aarch64 sdot -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, zero_point", [("int8", -7), ("uint8", 200)])
def test_aarch64_sdot_row_builds_with_sdot_and_runs_under_qemu(dtype: str, zero_point: int,
                                                               tmp_path) -> None:
    from lowbit.runtime.aarch64 import toolchain
    from lowbit.runtime.aarch64.qemu import run_aarch64

    graph = linear(dtype, (5, 64), adversarial_weights(40, 64), zero_point)
    target = tvm.target.Target(AARCH64_DOTPROD)
    pipeline = tvm.transform.Sequential([int8_gemm(target),
                                         relax.get_default_pipeline(target)])
    executable = tvm.compile(to_relax(graph), target, relax_pipeline=pipeline)
    assert "sdot" in executable.mod.imports[0].inspect_source("asm")
    if toolchain.missing_tools():
        pytest.skip(f"cannot run aarch64 code here: missing {toolchain.missing_tools()}")
    from tvm.support import cc

    library = tmp_path / "gemm.so"
    executable.export_library(str(library), fcompile=cc.cross_compiler("aarch64-linux-gnu-gcc"))
    x = activations(dtype, (3, 5, 64))
    (got,) = run_aarch64(library, [x])
    assert np.array_equal(got, run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]])
