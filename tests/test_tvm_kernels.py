"""The int8 GEMM micro-kernels (``tvm_kernels``): every kernel row bit-exact against numpy.

Each runnable row (the ones whose CPU features this host has, plus the generic row) is forced
onto an ``int_linear`` program through the real CPU pipeline and compared with the reference
interpreter and with a numpy int64 product written here. Inputs include the bytes that make
``vpmaddubsw`` saturate (activation code 255 against weights 127 and -128), row counts that are
not a multiple of the register tile, both activation dtypes and extreme zero points. The aarch64
``sdot`` row is cross-built and checked to use ``sdot``; it runs under qemu where the cross
toolchain is installed. The rewrite declines, and the default lowering stays, where the kernel
would not be exact. Convolutions reach the GEMM through im2col (padding with the zero-point
code, odd depths padded), and batched products of two activations run on their own scheduled
kernel; both are compared with the interpreter and numpy. Int16 codes times int8 weights run
on the x86 rows only (``vpdpwssd`` / ``vpmaddwd`` over int16-widened weights), in the int32
form and in the int64-accumulator form truncated to int32 (compared modulo 2^32, including
sums that leave int32); the generic and aarch64 rows decline them.
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
from lowbit.compiler.codegen.tvm_layout import channels_last  # noqa: E402
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_ELEMENTS, MIN_MACS  # noqa: E402
from lowbit.compiler.codegen.tvm_build import TARGETS  # noqa: E402
from lowbit.compiler.codegen.tvm_kernel_intrins import supports  # noqa: E402
from lowbit.compiler.codegen.tvm_kernels import (KERNEL_ATTR, KERNEL_ROWS,  # noqa: E402
                                                 MIN_AMX_MACS, KernelRow, fits_int32,
                                                 int8_gemm, kernel_row, pack_weights, row_for)

from tests.integer_graphs import one_op  # noqa: E402

RNG = np.random.default_rng(91)
N = Sym(1)
HOST = TARGETS["llvm"].make()  # this CPU, with its AMX features where this process may use AMX
ROWS = {row.name: row for row in KERNEL_ROWS}
AARCH64_DOTPROD = {"kind": "llvm", "mtriple": "aarch64-linux-gnu",
                   "mattr": ["+neon", "+dotprod"]}


def int16_rows() -> list[KernelRow]:
    """The runnable rows with an int16 chain (the x86 ones but AMX)."""
    return [row for row in runnable_rows() if row.isa and supports(row.isa, "int16")]


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
    rewritten = int8_gemm(target, row)(channels_last()(module))
    if row is None:
        return None, rewritten
    pipeline = tvm.transform.Sequential([channels_last(), int8_gemm(target, row),
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


def test_int16_weight_tile_holds_column_n_depth_k_at_n16_k2() -> None:
    w_t = RNG.integers(-128, 128, (6, 17)).astype(np.int8)  # [K, N], N padded to 32
    packed = pack_weights(w_t, "int16")
    assert packed.shape == (2, 3, 16, 2) and packed.dtype == np.int16
    for k in range(6):
        for n in range(32):
            assert packed[n // 16, k // 2, n % 16, k % 2] == (w_t[k, n] if n < 17 else 0)


def test_int32_bound_of_the_unsigned_partial_sums() -> None:
    assert 65793 * 255 * 128 == 2**31 - 128
    assert fits_int32(65793, np.zeros(1))
    assert not fits_int32(65794, np.zeros(1))
    assert not fits_int32(16, np.array([2**31]))
    assert 511 * 32768 * 128 < 2**31 and fits_int32(511, np.zeros(1), "int16")
    assert not fits_int32(512, np.zeros(1), "int16")  # 512 * 32768 * 128 == 2**31


def test_rows_follow_the_target_features() -> None:
    assert kernel_row(tvm.target.Target({"kind": "llvm", "mcpu": "cascadelake"})).isa == "vnni"
    amx = kernel_row(tvm.target.Target({"kind": "llvm", "mcpu": "sapphirerapids"}))
    assert amx.isa == "amx" and row_for(amx, "int8", 64) is amx
    assert row_for(amx, "int16", 64).name == "avx512-vnni"  # AMX has no int16 step
    assert row_for(amx, "uint8", 16).name == "avx512-vnni"  # a tile row would be 3/4 padding
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
    # 7, 14 and 35 rows: none a multiple of the 4-row tile; then enough for the parallel branch,
    # and for the AMX row its tiles' branch (below it runs its fallback's tile)
    for batch in (1, 2, 5, MIN_MACS // (7 * 96 * 72) + 1, MIN_AMX_MACS // (7 * 96 * 72) + 1):
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


# -- int16 codes x int8 weights -------------------------------------------------------------------
INT16_CASES = {  # inner shape of x, [N, K] of w, zero point, bias
    "int32 form, K 42, odd N": ((3, 42), (37, 42), -15836, True),
    "int32 form, K 6, no bias, zero point -32768": ((5, 6), (19, 6), -32768, False),
    "truncated int64 form, MiniLM FFN2 depth": ((4, 1536), (40, 1536), -15836, True),
    "truncated int64 form, odd N, no bias, zero point 32767": ((2, 774), (33, 774), 32767, False),
}


@pytest.mark.parametrize("row", int16_rows(), ids=lambda r: r.name)
@pytest.mark.parametrize("case", INT16_CASES)
def test_int16_codes_are_bit_exact(row: KernelRow, case: str) -> None:
    inner, w_shape, zero_point, bias = INT16_CASES[case]
    graph = linear("int16", inner, adversarial_weights(*w_shape), zero_point, bias)
    vm, module = compiled(graph, HOST, row)
    assert kernels_used(module) == [f"int16_gemm/{row.name}"] and matmuls_left(module) == 0
    truncated = "truncated" in case  # tvm_int_rules chose an int64 accumulator
    assert ("int64" in to_relax(graph)["main"].script()) == truncated
    macs = int(np.prod(inner)) * w_shape[0]
    for batch in (1, 3, MIN_MACS // macs + 1):  # the last one in parallel
        x = activations("int16", (batch,) + inner)
        x.reshape(-1, inner[-1])[-1] = np.iinfo(np.int16).min
        # codes within 1000 of the zero point: every sum in int32, as the lowering's codes
        near = np.clip(x.astype(np.int64), zero_point - 1000, zero_point + 1000).astype(np.int16)
        for codes in (x, near):  # full-range sums may leave int32: numpy wraps them too
            got = vm["main"](tvm.runtime.tensor(codes)).numpy()
            assert np.array_equal(got, numpy_linear(graph, codes))
        assert np.array_equal(got, run_graph(graph, {graph.inputs[0]: near})[graph.outputs[0]])


def test_int16_sums_beyond_int32_wrap_as_the_truncated_product() -> None:
    w = np.full((16, 1536), 127, np.int8)
    graph = linear("int16", (1536,), w, -32768, bias=False)
    vm, module = compiled(graph, HOST, int16_rows()[0])
    x = np.full((2, 1536), 32767, np.int16)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    exact = 1536 * 65535 * 127
    assert exact >= 2**31 and np.all(got == np.int64(exact).astype(np.int32))


@pytest.mark.parametrize("target", [{"kind": "llvm", "mcpu": "znver3"}, AARCH64_DOTPROD])
def test_int16_codes_take_the_kernel_only_on_x86_rows(target: dict) -> None:
    graph = linear("int16", (1536,), adversarial_weights(24, 1536), -15836)
    tvm_target = tvm.target.Target(target)
    on_x86 = kernel_row(tvm_target).isa in ("vnni", "avx2")
    for row in (None, ROWS["generic"]):
        module = int8_gemm(tvm_target, row)(to_relax(graph))
        assert kernels_used(module) == ([f"int16_gemm/{kernel_row(tvm_target).name}"]
                                        if on_x86 and row is None else [])
        assert matmuls_left(module) == (0 if on_x86 and row is None else 1)


# -- where the rewrite declines -----------------------------------------------------------------
@pytest.mark.parametrize("case", ["depth not a multiple of 4", "odd depth of int16 codes",
                                  "weights beyond int8"])
def test_the_rewrite_declines_where_the_kernel_is_not_exact(case: str) -> None:
    graphs = {
        "depth not a multiple of 4": linear("int8", (10,), adversarial_weights(8, 10), 3),
        "odd depth of int16 codes": linear("int16", (7,), adversarial_weights(8, 7), 3),
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


# -- batched products of two activations ----------------------------------------------------------
@pytest.mark.parametrize("a_dtype, b_dtype, a_zero, b_zero, rows, depth, columns", [
    ("int8", "int8", -128, 127, 8, 12, 16),    # extreme zero points, every lane vectorized
    ("uint8", "int8", 0, 5, 6, 32, 20),        # rows not a multiple of 4, 4-lane columns
    ("uint8", "uint8", 255, 1, 5, 7, 3)])      # no vector lanes at all
def test_batched_matmul_is_bit_exact(a_dtype: str, b_dtype: str, a_zero: int, b_zero: int,
                                     rows: int, depth: int, columns: int) -> None:
    a = TensorType(a_dtype, (N, 3, rows, depth))
    b = TensorType(b_dtype, (N, 3, depth, columns))
    graph = one_op("int_matmul", [a, b], {"a_zero_point": a_zero, "b_zero_point": b_zero})
    vm, module = compiled(graph, HOST, ROWS["generic"])
    assert kernels_used(module) == ["int8_batched_matmul"] and matmuls_left(module) == 0
    for batch in (1, 2, MIN_MACS // (3 * rows * depth * columns) + 1):  # the last in parallel
        feeds = {graph.inputs[0]: activations(a_dtype, (batch, 3, rows, depth)),
                 graph.inputs[1]: activations(b_dtype, (batch, 3, depth, columns))}
        got = vm["main"](*[tvm.runtime.tensor(feeds[n]) for n in graph.inputs]).numpy()
        want = run_graph(graph, feeds)[graph.outputs[0]]
        wide = [feeds[n].astype(np.int64) - z for n, z in zip(graph.inputs, (a_zero, b_zero))]
        assert np.array_equal(got, want) and np.array_equal(got, np.matmul(*wide))


def test_batched_rewrite_declines_broadcast_batches() -> None:
    graph = one_op("int_matmul", [TensorType("int8", (N, 3, 4, 8)),
                                  TensorType("int8", (3, 8, 5))],
                   {"a_zero_point": 1, "b_zero_point": 0})
    _, module = compiled(graph, HOST, None)
    assert kernels_used(module) == [] and matmuls_left(module) == 1


# -- convolutions through im2col ------------------------------------------------------------------
CONVS = {  # dtype, zero point, x [C, H, W], w [O, C, KH, KW], strides, pads, dilations
    "int8 padded, depth 9 padded to 12": ("int8", -128, (1, 8, 8), (16, 1, 3, 3), (1, 1),
                                         (1, 1, 1, 1), (1, 1)),
    "int8 3x3 over 32 channels": ("int8", 5, (32, 4, 4), (24, 32, 3, 3), (1, 1), (1, 1, 1, 1),
                                  (1, 1)),
    "uint8 zero point 255, strided, dilated, uneven pads": ("uint8", 255, (5, 9, 7),
                                                           (8, 5, 2, 3), (2, 1), (0, 1, 2, 0),
                                                           (1, 2)),
    "int8 1x1 over 16 channels, no im2col": ("int8", -3, (16, 5, 3), (20, 16, 1, 1), (1, 1),
                                             (0, 0, 0, 0), (1, 1)),
    "int8 1x1 strided, through im2col": ("int8", 7, (8, 5, 5), (12, 8, 1, 1), (2, 2),
                                         (0, 0, 0, 0), (1, 1)),
}


@pytest.mark.parametrize("case", CONVS)
def test_convolution_through_im2col_is_bit_exact(case: str) -> None:
    dtype, zero_point, x_shape, w_shape, strides, pads, dilations = CONVS[case]
    w = adversarial_weights(w_shape[0], int(np.prod(w_shape[1:]))).reshape(w_shape)
    graph = one_op("int_conv", [TensorType(dtype, (N,) + x_shape), w,
                                RNG.integers(-10**5, 10**5, w_shape[0]).astype(np.int32)],
                   {"x_zero_point": zero_point, "strides": strides, "pads": pads,
                    "dilations": dilations, "groups": 1})
    vm, module = compiled(graph, HOST, runnable_rows()[0])
    im2col = [] if "no im2col" in case else ["im2col"]
    row = row_for(runnable_rows()[0], dtype, -(-int(np.prod(w_shape[1:])) // 4) * 4)
    assert sorted(kernels_used(module)) == im2col + [f"int8_gemm/{row.name}"]
    assert "conv2d" not in module["main"].script()
    assert module["main"].script().count("permute_dims") == 2  # at the edges: in and out
    out_pixels = int(np.prod(run_graph(graph, {graph.inputs[0]: activations(
        dtype, (1,) + x_shape)})[graph.outputs[0]].shape[2:]))
    macs = out_pixels * int(np.prod(w_shape))
    # in parallel from the third; the last one on the AMX row's tiles where the host has them
    for batch in (1, 3, MIN_ELEMENTS // int(np.prod(x_shape)) + 1, MIN_AMX_MACS // macs + 1):
        x = activations(dtype, (batch,) + x_shape)
        got = vm["main"](tvm.runtime.tensor(x)).numpy()
        assert np.array_equal(got, run_graph(graph, {graph.inputs[0]: x})[graph.outputs[0]])


def test_grouped_convolution_keeps_tvm_lowering() -> None:
    graph = one_op("int_conv", [TensorType("int8", (N, 4, 6, 6)),
                                RNG.integers(-128, 128, (4, 1, 3, 3)).astype(np.int8)],
                   {"x_zero_point": 3, "strides": (1, 1), "pads": (1, 1, 1, 1),
                    "dilations": (1, 1), "groups": 4})
    _, module = compiled(graph, HOST, None)
    assert kernels_used(module) == [] and "conv2d" in module["main"].script()


# -- AMX ------------------------------------------------------------------------------------------
def test_the_amx_row_runs_on_a_host_that_grants_amx() -> None:
    """Where the CPU has AMX and Linux grants it, the host target selects the AMX row, so every
    bit-exact test above runs it; elsewhere this says why it is not exercised here."""
    from lowbit.runtime.amx import amx_usable

    if not amx_usable():
        pytest.skip("this CPU has no AMX int8, or Linux did not grant its tile state")
    assert kernel_row(HOST).name == "amx" and ROWS["amx"] in runnable_rows()


def test_amx_needs_both_cpu_flags(tmp_path) -> None:
    from lowbit.runtime.amx import amx_usable

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_vnni amx_tile\n")
    assert not amx_usable(cpuinfo)


def test_a_library_built_for_amx_is_refused_where_amx_cannot_run(monkeypatch) -> None:
    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.compiler.errors import LowbitError
    from lowbit.runtime import tvm_backend

    graph = linear("int8", (3, 8), adversarial_weights(16, 8), 0)
    built = build(graph, "llvm")
    monkeypatch.setattr(tvm_backend, "amx_usable", lambda: False)
    if kernel_row(HOST).name != "amx":  # no AMX code: it loads
        assert tvm_backend.load_tvm(built).outputs == graph.outputs
        return
    with pytest.raises(LowbitError, match="AMX"):
        tvm_backend.load_tvm(built)
