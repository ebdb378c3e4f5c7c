"""Integer GEMM micro-kernels for TVM CPU targets: a Relax rewrite onto a tensorized PrimFunc.

Invariant: the rewritten module computes the same int32 values as the expression it replaces,
for every input. The kernel never saturates; it never wraps where it replaces an int32
``relax.matmul`` (the bounds are checked below), and where it replaces an int64 product (plus
a constant bias) cast to int32, whose int32 bits are its value modulo 2^32, its wrapping int32
sums and wrapped column term give exactly those bits.

``int8_gemm(target)`` finds, in every Relax function, the product ``tvm_int_rules`` writes for
an int8/uint8/int16 activation times a constant int8 weight with an int32 accumulator:
``matmul(astype(x, int32) [- zp], W)``, with ``W`` a ``[K, N]`` constant, or the same in int64
plus an optional constant bias, cast to int32 (``tvm_int_rules``' form where it cannot bound
the sums by the dtype's range: int16 codes at MiniLM's FFN depth). It replaces it with one
call of a PrimFunc over a packed weight ``[N/16, K/4, 16, 4]`` (zero-padded to 16 columns):

    out[m, n] = sum_k u[m, k] * w[n, k]  +  colterm[n],   colterm[n] = -c * sum_k w[n, k]

where ``u = x + shift`` is the activation as an unsigned byte (``x + 128`` for int8, ``x`` for
uint8) and ``c = zp + shift``, so that ``u - c = x - zp`` exactly (a bias joins ``colterm``).
For an int32 matmul, partial sums stay below ``K * 255 * 128`` in magnitude; the rewrite
declines when that or ``colterm`` could leave int32, and where ``K`` is not a multiple of 4.

Int16 activations take the same kernel on the x86 rows only (``supports``): ``shift`` 0,
factors up to 32768 in magnitude, weights widened to int16 and packed ``[N/16, K/2, 16, 2]``
for ``vpdpwssd`` / ``vpmaddwd``; ``K`` must be even. In the same pass, 2-d convolutions with
``groups == 1`` reach the same kernel through im2col (``tvm_kernels_conv``), and products of two
8-bit activations go to a scheduled batched kernel (``tvm_kernels_batched``).

The PrimFunc is scheduled for the target by the first ``KERNEL_ROWS`` row whose CPU features it
has: tiles of 4 rows by up to 4 packed column blocks (64 columns), spread over the CPU's
threads when the call has at least ``MIN_MACS`` multiply-adds (``tvm_parallel_gate``); a
tile runs the row's intrinsic (``tvm_kernel_intrins``), a chain of up to 16 steps (of depth 4,
or 2 for int16) over all its rows and columns at once, step by step, so that each weight vector
is loaded once for the 4 rows and the accumulators stay in registers within a chain; they are
a local buffer between chains, and the column-term epilogue is fused into the tile. Rows of
``M`` are padded to the tile by repeating the last row, in a tile-local copy of the chain's
activations; the epilogue writes only real rows. The generic row (any CPU) keeps the tiling
and lets LLVM vectorize the tile's columns. The column-term epilogue takes along the
requantization that follows the product (``tvm_kernel_epilogue``).

The ``amx`` row (Intel AMX, where ``runtime.amx`` finds it granted) tiles 16 rows by up to 4
column blocks and runs one chain over the whole depth on AMX tiles (``tdpbusd``, u8 x s8 into
int32, like ``vpdpbusd`` never saturating): its tile-local activation copy holds the unsigned
bytes ``x + shift`` themselves, since AMX loads its operands from memory, and the depth is
padded to 64 with zero bytes against zero weights. AMX has no int16 step: int16 activations
take the row's ``fallback`` (``row_for``), and so do depths below 64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import DFPattern, rewrite_call
from tvm.s_tir import Schedule
from tvm.target import codegen

from lowbit.compiler.codegen.tvm_kernel_intrins import (AMX_DEPTH, AMX_ROWS, LANES, SHIFTS,
                                                        STEP_DEPTH, intrinsic, supports,
                                                        weight_dtype)
from lowbit.compiler.codegen.tvm_kernel_epilogue import (Epilogue, absorb_epilogues,
                                                          apply_epilogue, epilogue_params)
from lowbit.compiler.codegen.tvm_kernel_patterns import ConstantProduct
from lowbit.compiler.codegen.tvm_kernels_batched import KERNEL_ATTR, OPAQUE, rewrite_batched
from lowbit.compiler.codegen.tvm_kernels_conv import rewrite_convs
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_MACS, by_size, gated

TILE_ROWS = 4
"""Rows of the register tile (the activation rows one weight load serves)."""
MIN_AMX_MACS = 1 << 19
"""Multiply-adds of a call from which the ``amx`` row runs its tiles (in parallel); below, the
fallback row's tile runs (in parallel from ``MIN_MACS``): AMX's fixed cost per call (tile
configuration, 16-row tiles) loses to VNNI up to about 300K multiply-adds and wins from
about 1M (16x288x64: 4.5 us against 2.8 us; 64x288x64: 4.2 us against 5.1 us)."""
AMX_COLUMN_TASKS = 2
"""Tasks an AMX row block's column groups are split into where their number is even (each
task copies the block's activations once for its groups)."""
TILE_BLOCKS = (4, 2, 1)
"""Packed 16-column blocks per tile, widest first; the first that divides the columns wins."""
CHAINS = (16, 12, 8, 6, 4, 3, 2, 1)
"""Steps per tensorized chain, longest first; the first that divides ``K`` / step depth wins."""
INT32_LIMIT = 1 << 31
FACTOR_LIMITS = {"int8": 255, "uint8": 255, "int16": 32768}
"""Activation dtype to the largest magnitude of the kernel's activation factor ``x + shift``."""
KernelKey = tuple[int, int, str, Epilogue]
"""Depth, columns, activation dtype and epilogue of one GEMM PrimFunc."""
PRODUCT_FORMS = ((True, False, False), (False, False, False), (True, True, True),
                 (False, True, True), (True, True, False), (False, True, False))
"""``ConstantProduct`` (shifted, truncated, biased) forms rewritten, biased before unbiased so
that a truncated product takes its bias along."""


@dataclass(frozen=True)
class KernelRow:
    """One way to run the 16x4 step: the CPU features it needs and its intrinsic ISA."""

    name: str
    features: tuple[str, ...]
    """LLVM CPU features the target must have (``codegen.target_has_features``)."""
    isa: str | None
    """``tvm_kernel_intrins`` ISA name; None: no tensorization, LLVM vectorizes."""
    tile_rows: int = TILE_ROWS
    """Rows of the register tile."""
    fallback: str | None = None
    """The row (by name) for activation dtypes this row's ISA has no step for."""


KERNEL_ROWS: tuple[KernelRow, ...] = (
    KernelRow("amx", ("amx-tile", "amx-int8"), "amx", AMX_ROWS, fallback="avx512-vnni"),
    KernelRow("avx512-vnni", ("avx512bw", "avx512vnni"), "vnni"),
    KernelRow("avx2", ("avx2",), "avx2"),
    KernelRow("aarch64-dotprod", ("neon", "dotprod"), "sdot"),
    KernelRow("generic", (), None),
)


def row_for(row: KernelRow, dtype: str, depth: int) -> KernelRow:
    """``row``, or its fallback where its ISA has no step for activation ``dtype`` or (AMX) the
    depth is below one tile row, which would be mostly padding."""
    if row.fallback is None or (supports(row.isa, dtype)
                                and not (row.isa == "amx" and depth < AMX_DEPTH)):
        return row
    return _fallback(row)


def _fallback(row: KernelRow) -> KernelRow:
    return next(r for r in KERNEL_ROWS if r.name == row.fallback)


def kernel_row(target: tvm.target.Target) -> KernelRow:
    """The first row whose features ``target`` has (the generic row always matches)."""
    for row in KERNEL_ROWS:
        if all(codegen.target_has_features(f, target) for f in row.features):
            return row
    raise AssertionError("the generic kernel row matches every target")


# -- the packed operands ------------------------------------------------------------------------
def padded_columns(columns: int) -> int:
    return -(-columns // LANES) * LANES


def pack_weights(weight_t: np.ndarray, dtype: str = "int8") -> np.ndarray:
    """``[K, N]`` int8-range weights for ``dtype`` activations as ``[Np/16, K/d, 16, d]`` of
    ``weight_dtype(dtype)``, ``d`` the step depth, columns zero-padded to ``Np``."""
    depth, columns = weight_t.shape
    step = STEP_DEPTH[dtype]
    padded = np.zeros((padded_columns(columns), depth), weight_dtype(dtype))
    padded[:columns] = weight_t.T
    tiles = padded.reshape(-1, LANES, depth // step, step)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3))


def column_term(weight_t: np.ndarray, offset: int) -> np.ndarray:
    """``-offset * sum_k w[k, n]`` in int64 (the caller checks that it fits int32)."""
    return -offset * weight_t.astype(np.int64).sum(axis=0)


def fits_int32(depth: int, colterm: np.ndarray, dtype: str = "uint8") -> bool:
    """Partial sums of ``u * w`` (``|u| <= FACTOR_LIMITS[dtype]``, ``|w| <= 128``) and the
    column term stay in int32."""
    bound = depth * FACTOR_LIMITS[dtype] * 128
    return bound < INT32_LIMIT and int(np.abs(colterm).max(initial=0)) < INT32_LIMIT


# -- the PrimFunc -------------------------------------------------------------------------------
def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm("int64", value)


def gemm_prim_func(depth: int, columns: int, dtype: str, epilogue: Epilogue = (),
                   row: KernelRow = KERNEL_ROWS[-1]) -> tirx.PrimFunc:
    """``out[m, n] = sum_k (int32(x[m, k]) + shift) * w[n, k] + colterm[n]`` for a symbolic
    number of rows ``m``, with ``w`` packed and the rows padded to ``row``'s tile by repeating
    the last one (``xpad``), then the ``epilogue`` on each value (its constants are parameters
    after ``colterm``, ``tvm_kernel_epilogue``); unscheduled (``schedule_gemm`` schedules it).

    For the ``amx`` row, ``xpad`` holds the unsigned bytes ``x + shift`` (the factor itself,
    which AMX loads from memory) and the depth is padded to ``AMX_DEPTH`` with zero bytes
    (against zero weights); the sum is the same."""
    rows = tirx.Var("m", "int64")
    x = te.placeholder((rows, _i64(depth)), dtype, name="x")
    step = STEP_DEPTH[dtype]
    amx = row.isa == "amx"
    reduced = padded_depth(depth, row)
    packed = te.placeholder((_i64(padded_columns(columns) // LANES), _i64(reduced // step),
                             _i64(LANES), _i64(step)), weight_dtype(dtype), name="w")
    colterm = te.placeholder((_i64(columns),), "int32", name="colterm")
    padded_rows = tirx.floordiv(rows + row.tile_rows - 1, row.tile_rows) * row.tile_rows
    shift = SHIFTS[dtype]

    def copy(m: tirx.Expr, k: tirx.Expr) -> tirx.Expr:
        if reduced == depth:
            code = x[tirx.min(m, rows - 1), k]
        else:  # the load stays in bounds where the padding's select discards it
            code = x[tirx.min(m, rows - 1), tirx.min(k, depth - 1)]
        if not amx:
            return code
        unsigned = (code.astype("int32") + shift).astype("uint8")
        return unsigned if reduced == depth else tirx.if_then_else(k < depth, unsigned,
                                                                    tirx.const(0, "uint8"))

    xpad = te.compute((padded_rows, _i64(reduced)), copy, name="xpad")
    k = te.reduce_axis((_i64(0), _i64(reduced)), name="k")

    def product(m: tirx.Expr, n: tirx.Expr) -> tirx.Expr:
        u = xpad[m, k].astype("int32") + (0 if amx else shift)
        w = packed[n // LANES, k // step, n % LANES, k % step].astype("int32")
        return te.sum(u * w, axis=k)

    acc = te.compute((padded_rows, _i64(padded_columns(columns))), product, name="gemm")
    constants = [te.placeholder((_i64(length),), constant_dtype, name=f"epilogue{i}")
                 for i, (length, constant_dtype) in enumerate(epilogue_params(epilogue, columns))]
    out = te.compute((rows, _i64(columns)), lambda m, n: apply_epilogue(
        acc[m, n] + colterm[n], n, epilogue, constants), name="out")
    return te.create_prim_func([x, packed, colterm, *constants, out])


def padded_depth(depth: int, row: KernelRow) -> int:
    """The depth ``row``'s kernel reduces over: ``depth``, or for AMX the next multiple of
    ``AMX_DEPTH``."""
    return -(-depth // AMX_DEPTH) * AMX_DEPTH if row.isa == "amx" else depth


def schedule_gemm(func: tirx.PrimFunc, row: KernelRow, dtype: str,
                  parallel: bool = True) -> tirx.PrimFunc:
    """The row's schedule of a ``gemm_prim_func``: register tile, fused epilogue, and the
    tiles spread over the threads when ``parallel``. With an ISA, each chain of the tile is
    one intrinsic over the row's ``tile_rows`` rows, which read a tile-local copy of their padded
    activation rows (for AMX, one chain over the whole depth, its tiles holding the
    accumulators throughout); the generic row reads the activations in place and unrolls the
    rows. The function of an ``amx`` row (its copy holds unsigned bytes) is scheduled with
    ``dtype`` uint8, by the AMX row or by a byte row's tile."""
    sch = Schedule(func)
    gemm = sch.get_sblock("gemm")
    xpad = sch.get_sblock("xpad")
    m, n, k = sch.get_loops(gemm)
    blocks = _tile_blocks(sch, n)
    step = STEP_DEPTH[dtype]
    amx = row.isa == "amx"
    steps = (int(sch.get(k).extent) // step if amx
             else _chain_steps(sch, k, step) if row.isa else 1)
    m_outer, m_inner = sch.split(m, [None, row.tile_rows])
    n_outer, n_tile = sch.split(n, [None, blocks * LANES])
    k_outer, k_inner = sch.split(k, [None, step * steps])
    inner = (n_tile, k_inner) if row.isa else (k_inner, n_tile)  # generic: vectorize columns
    # AMX: a task covers several column groups, which share its activation copy
    column_tasks = AMX_COLUMN_TASKS if amx and int(sch.get(n_outer).extent) % 2 == 0 else None
    n_task, n_group = (sch.split(n_outer, [column_tasks, None]) if column_tasks
                       else (n_outer, None))
    sch.reorder(m_outer, *(loop for loop in (n_task, n_group) if loop is not None), k_outer,
                m_inner, *inner)
    sch.reverse_compute_at(sch.get_sblock("out"), n_group or n_outer)
    if row.isa:
        sch.compute_at(xpad, n_task if amx else k_outer)
    else:
        sch.compute_inline(xpad)
    tiles = sch.fuse(m_outer, n_task)
    if parallel:
        sch.parallel(tiles)
    sch.vectorize(sch.get_loops(sch.get_sblock("out"))[-1])
    if row.isa is None:
        sch.unroll(k_inner)
        sch.vectorize(n_tile)
    init = sch.decompose_reduction(gemm, k_outer)
    sch.vectorize(sch.get_loops(init)[-1])
    if row.isa is None:
        sch.unroll(m_inner)
    else:
        sch.tensorize(m_inner, intrinsic(row.isa, dtype, steps, blocks, row.tile_rows))
        sch.set_scope(xpad, 0, "local")
        sch.vectorize(sch.get_loops(xpad)[-1])
    sch.set_scope(init, 0, "local")  # the accumulators are private to their tile
    return sch.mod["main"].without_attr("global_symbol").with_attr(
        KERNEL_ATTR, f"{weight_dtype(dtype)}_gemm/{row.name}").with_attr("op_pattern", OPAQUE)


def _chain_steps(sch: Schedule, loop: object, step: int) -> int:
    steps = int(sch.get(loop).extent) // step
    return next(c for c in CHAINS if steps % c == 0)


def _tile_blocks(sch: Schedule, loop: object) -> int:
    extent = int(sch.get(loop).extent) // LANES
    return next(b for b in TILE_BLOCKS if extent % b == 0)


# -- the Relax rewrite --------------------------------------------------------------------------
class _Rewriter:
    """Rewrites matched products of one module; one scheduled PrimFunc per (K, N, dtype)."""

    def __init__(self, row: KernelRow, builder: relax.BlockBuilder, pattern: ConstantProduct,
                 kernels: dict[KernelKey, relax.GlobalVar]) -> None:
        self.row = row
        self.builder = builder
        self.pattern = pattern
        self.kernels = kernels

    def kernel(self, depth: int, columns: int, dtype: str, epilogue: Epilogue = ()
               ) -> relax.GlobalVar:
        key = (depth, columns, dtype, epilogue)
        if key not in self.kernels:
            row = row_for(self.row, dtype, depth)
            func = gemm_prim_func(depth, columns, dtype, epilogue, row)
            macs = func.params[0].shape[0] * depth * columns
            if row.isa == "amx":  # smaller calls: the fallback row's tile on the same bytes
                small = _fallback(row)
                func = by_size(macs, schedule_gemm(func, small, "uint8", parallel=False), [
                    (MIN_MACS, schedule_gemm(func, small, "uint8", parallel=True)),
                    (MIN_AMX_MACS, schedule_gemm(func, row, "uint8", parallel=True))])
            else:
                func = gated(lambda parallel: schedule_gemm(func, row, dtype, parallel),
                             macs, MIN_MACS)
            suffix = f"_{len(epilogue)}ops" if epilogue else ""
            self.kernels[key] = self.builder.add_func(
                func, f"lowbit_int8_gemm_{dtype}_{depth}x{columns}{suffix}")
        return self.kernels[key]

    def with_epilogue(self, key: KernelKey, epilogue: Epilogue) -> relax.GlobalVar:
        """The kernel of ``key`` with ``epilogue`` after its own (``tvm_kernel_epilogue``)."""
        depth, columns, dtype, own = key
        return self.kernel(depth, columns, dtype, own + epilogue)

    def gemm(self, flat: relax.Expr, dtype: str, weight: np.ndarray,
             zero_point: np.ndarray | int, rows: tirx.Expr, bias: np.ndarray | None = None,
             truncated: bool = False) -> relax.Expr | None:
        """The kernel's ``[rows, N]`` int32 product of a 2-d ``dtype`` activation and ``[K, N]``
        weight values (plus ``bias``; modulo 2^32 where ``truncated``), or None where the
        kernel is not exact (``_plan``)."""
        plan = _plan(row_for(self.row, dtype, weight.shape[0]), dtype, weight, zero_point, bias,
                     truncated)
        if plan is None:
            return None
        dtype, packed, colterm = plan
        depth, columns = weight.shape
        return relax.call_tir(self.kernel(depth, columns, dtype),
                              [flat, relax.const(packed, str(packed.dtype)),
                               relax.const(colterm, "int32")],
                              relax.TensorType([rows, columns], "int32"))

    def __call__(self, call: relax.Call, matches: dict[DFPattern, relax.Expr]) -> relax.Expr:
        x, weight = matches[self.pattern.x], matches[self.pattern.weight].value.numpy()
        zero_point = matches[self.pattern.zero_point].value.numpy() if self.pattern.shifted else 0
        bias = matches[self.pattern.bias].value.numpy() if self.pattern.biased else None
        shape = list(call.ty.shape.values)
        rows = _product(shape[:-1])
        flat = x if len(shape) == 2 else relax.op.reshape(x, [rows, weight.shape[0]])
        out = self.gemm(flat, str(x.ty.dtype), weight, zero_point, rows, bias,
                        self.pattern.truncated)
        if out is None:
            return call
        return out if len(shape) == 2 else relax.op.reshape(out, shape)


def _plan(row: KernelRow, dtype: str, weight: np.ndarray, zero_point: np.ndarray | int,
          bias: np.ndarray | None, truncated: bool) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(activation dtype, packed weight, int32 column term with the bias), or None when the
    kernel does not apply exactly: dtypes the row has no chain for (int16 only on the x86
    rows), a depth not a multiple of the step depth, a zero point that is not one value (a
    scalar or a one-element constant), a bias that is not one value per column, weights beyond
    int8, or bounds out of range. A ``truncated`` product (int64, cast to int32) has no bounds:
    its int32 bits are its value modulo 2^32, which the kernel's wrapping int32 sums (no chain
    saturates) and the wrapped column term give."""
    if dtype not in SHIFTS or (weight_dtype(dtype) != "int8" and not supports(row.isa, dtype)):
        return None
    if weight.ndim != 2 or weight.shape[0] % STEP_DEPTH[dtype] or not weight.size:
        return None
    if np.size(zero_point) != 1 or weight.min() < -128 or weight.max() > 127:
        return None
    if bias is not None and bias.shape != weight.shape[1:]:
        return None
    colterm = column_term(weight, int(np.ravel(zero_point)[0]) + SHIFTS[dtype])
    if bias is not None:
        colterm = colterm + bias.astype(np.int64)
    if truncated:
        colterm = (colterm + INT32_LIMIT) % (2 * INT32_LIMIT) - INT32_LIMIT
    elif not fits_int32(weight.shape[0], colterm, dtype):
        return None
    reduced = np.zeros((padded_depth(weight.shape[0], row), weight.shape[1]), weight.dtype)
    reduced[:weight.shape[0]] = weight  # AMX's depth padding: zero weights
    return dtype, pack_weights(reduced, dtype), colterm.astype(np.int32)


def _product(dims: list[tirx.Expr]) -> tirx.Expr:
    total = dims[0]
    for dim in dims[1:]:
        total = total * dim
    return total


def int8_gemm(target: tvm.target.Target, row: KernelRow | None = None) -> tvm.transform.Pass:
    """The module pass replacing int8 x constant-int8 products by the target's kernel (the
    ``KERNEL_ROWS`` row the target's features select, unless ``row`` is given), ungrouped 2-d
    convolutions by im2col and the same kernel (``tvm_kernels_conv``), and products of two
    8-bit activations by the scheduled batched kernel (``tvm_kernels_batched``)."""
    row = row or kernel_row(target)

    @tvm.transform.module_pass(opt_level=0, name="LowbitInt8Gemm")
    def rewrite(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        builder = relax.BlockBuilder(mod)
        kernels: dict[KernelKey, relax.GlobalVar] = {}
        for form in PRODUCT_FORMS:
            rewriter = _Rewriter(row, builder, ConstantProduct("relax.matmul", *form), kernels)
            product = rewriter.pattern.product()
            for gv, func in builder.get().functions_items():
                if isinstance(func, relax.Function):
                    builder.update_func(gv, rewrite_call(product, rewriter, func))
        rewriter = _Rewriter(row, builder, ConstantProduct("relax.matmul", False), kernels)
        rewrite_convs(builder, rewriter.gemm)
        absorb_epilogues(builder, {gv: key for key, gv in kernels.items()},
                         rewriter.with_epilogue)
        rewrite_batched(builder)
        return relax.transform.DeadCodeElimination()(builder.get())

    return rewrite


__all__ = ["FACTOR_LIMITS", "KERNEL_ATTR", "KERNEL_ROWS", "KernelRow", "column_term",
           "fits_int32", "gemm_prim_func", "int8_gemm", "kernel_row", "pack_weights",
           "schedule_gemm"]
