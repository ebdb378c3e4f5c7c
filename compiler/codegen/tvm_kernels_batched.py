"""Batched products of two integer activations (``int_matmul``, attention) on a scheduled
PrimFunc, for TVM CPU targets.

Invariant: the rewritten module computes the same int32 values as the ``relax.matmul`` it
replaces, for every input: the PrimFunc is the same sum of the same int32 products, only
scheduled; ``tvm_int_rules`` chose the int32 accumulator because no partial sum can leave it.

``rewrite_batched(builder)`` finds ``matmul(astype(a) [- za], astype(b) [- zb])`` in int32 with
``a`` ``[..., M, K]`` and ``b`` ``[..., K, N]`` of 8-bit dtypes, the same leading (batch) dims
and static ``M, K, N``, and calls one PrimFunc over the flattened batch:
``out[n, i, j] = sum_k (int32(a[n, i, k]) - za) * (int32(b[n, k, j]) - zb)``. The schedule
spreads (batch, row tiles) over the threads (from ``MIN_MACS`` multiply-adds a call,
``tvm_parallel_gate``), keeps a 4-row tile of accumulators, and vectorizes
the contiguous ``j`` axis of ``b`` and ``out`` (no tensor intrinsic: ``b`` changes every call,
so packing it would cost as much as the product at attention sizes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, te, tirx
from tvm.relax.dpl import DFPattern, is_const, is_op, rewrite_call, wildcard
from tvm.s_tir import Schedule

from lowbit.compiler.codegen.tvm_kernel_patterns import widened
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_MACS, gated

BYTE_DTYPES = ("int8", "uint8")
TILE_ROWS = 4
VECTOR_LANES = (16, 8, 4)
"""int32 lanes of the vectorized column axis, widest first; the first dividing ``N`` wins."""
KERNEL_ATTR = "lowbit.kernel"
"""PrimFunc attribute naming the lowbit kernel (and its row) a function is."""
OPAQUE = 8
"""TVM's ``kOpaque`` op pattern: FuseOps leaves a scheduled kernel alone."""


def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm("int64", value)


def batched_prim_func(rows: int, depth: int, columns: int, a_dtype: str, b_dtype: str,
                      a_zero: int, b_zero: int) -> tirx.PrimFunc:
    """``out[n, i, j] = sum_k (a[n, i, k] - a_zero) * (b[n, k, j] - b_zero)`` in int32, for a
    symbolic batch ``n``; unscheduled."""
    batch = tirx.Var("n", "int64")
    a = te.placeholder((batch, _i64(rows), _i64(depth)), a_dtype, name="a")
    b = te.placeholder((batch, _i64(depth), _i64(columns)), b_dtype, name="b")
    k = te.reduce_axis((_i64(0), _i64(depth)), name="k")

    def product(n: tirx.Expr, i: tirx.Expr, j: tirx.Expr) -> tirx.Expr:
        left = a[n, i, k].astype("int32") - a_zero
        right = b[n, k, j].astype("int32") - b_zero
        return te.sum(left * right, axis=k)

    out = te.compute((batch, _i64(rows), _i64(columns)), product, name="matmul")
    return te.create_prim_func([a, b, out])


def schedule_batched(func: tirx.PrimFunc, parallel: bool = True) -> tirx.PrimFunc:
    sch = Schedule(func)
    block = sch.get_sblock("matmul")
    n, i, j, k = sch.get_loops(block)
    rows, columns = int(sch.get(i).extent), int(sch.get(j).extent)
    tile = TILE_ROWS if rows % TILE_ROWS == 0 else 1
    lanes = next((v for v in VECTOR_LANES if columns % v == 0), 1)
    i_outer, i_inner = sch.split(i, [None, tile])
    j_outer, j_inner = sch.split(j, [None, lanes])
    sch.reorder(n, i_outer, j_outer, k, i_inner, j_inner)
    tasks = sch.fuse(n, i_outer)
    if parallel:
        sch.parallel(tasks)
    sch.vectorize(j_inner)
    sch.unroll(i_inner)
    init = sch.decompose_reduction(block, k)
    sch.vectorize(sch.get_loops(init)[-1])
    return sch.mod["main"].without_attr("global_symbol").with_attr(
        KERNEL_ATTR, "int8_batched_matmul").with_attr("op_pattern", OPAQUE)


@dataclass(frozen=True)
class _Pattern:
    """``matmul(widen(a), widen(b))``; ``widen`` is ``astype`` or ``astype - constant`` per
    side (four patterns, since TVM's matcher memoizes a sub-pattern on its first candidate)."""

    a_shifted: bool
    b_shifted: bool
    a: DFPattern = field(default_factory=wildcard)
    b: DFPattern = field(default_factory=wildcard)
    a_zero: DFPattern = field(default_factory=is_const)
    b_zero: DFPattern = field(default_factory=is_const)

    def product(self) -> DFPattern:
        return is_op("relax.matmul")(widened(self.a, self.a_shifted, self.a_zero),
                                     widened(self.b, self.b_shifted, self.b_zero)
                                     ).has_dtype("int32")

    def zero(self, matches: dict[DFPattern, relax.Expr], side: str) -> int | None:
        if not getattr(self, f"{side}_shifted"):
            return 0
        value = matches[getattr(self, f"{side}_zero")].value.numpy()
        return int(np.ravel(value)[0]) if value.size == 1 else None


class _Rewriter:
    def __init__(self, builder: relax.BlockBuilder, pattern: _Pattern,
                 kernels: dict[tuple, relax.GlobalVar]) -> None:
        self.builder, self.pattern, self.kernels = builder, pattern, kernels

    def __call__(self, call: relax.Call, matches: dict[DFPattern, relax.Expr]) -> relax.Expr:
        a, b = matches[self.pattern.a], matches[self.pattern.b]
        zeros = (self.pattern.zero(matches, "a"), self.pattern.zero(matches, "b"))
        shapes = _static_shapes(a, b)
        if shapes is None or None in zeros:
            return call
        batch, (rows, depth, columns) = shapes
        dtypes = (str(a.ty.dtype), str(b.ty.dtype))
        key = (rows, depth, columns, *dtypes, *zeros)
        if key not in self.kernels:
            func = batched_prim_func(rows, depth, columns, *dtypes, *zeros)
            func = gated(lambda parallel: schedule_batched(func, parallel),
                         func.params[0].shape[0] * rows * depth * columns, MIN_MACS)
            self.kernels[key] = self.builder.add_func(func, "lowbit_int8_batched_matmul")
        flat_batch = _product(batch)
        out = relax.call_tir(
            self.kernels[key], [relax.op.reshape(a, [flat_batch, rows, depth]),
                                relax.op.reshape(b, [flat_batch, depth, columns])],
            relax.TensorType([flat_batch, rows, columns], "int32"))
        return relax.op.reshape(out, list(call.ty.shape.values))


def _static_shapes(a: relax.Expr, b: relax.Expr
                   ) -> tuple[list[tirx.Expr], tuple[int, int, int]] | None:
    """(batch dims, (M, K, N)) when both operands are 8-bit, at least 3-d, with the same batch
    dims and static M, K, N; None otherwise."""
    if str(a.ty.dtype) not in BYTE_DTYPES or str(b.ty.dtype) not in BYTE_DTYPES:
        return None
    a_shape, b_shape = a.ty.shape, b.ty.shape
    if a_shape is None or b_shape is None:
        return None
    a_dims, b_dims = list(a_shape.values), list(b_shape.values)
    if len(a_dims) != len(b_dims) or len(a_dims) < 3:
        return None
    analyzer = tvm.sym.Analyzer()
    if not all(analyzer.can_prove_equal(x, y) for x, y in zip(a_dims[:-2], b_dims[:-2])):
        return None
    sizes = (a_dims[-2], a_dims[-1], b_dims[-1])
    if not all(isinstance(s, tirx.IntImm) for s in sizes) or not analyzer.can_prove_equal(
            a_dims[-1], b_dims[-2]):
        return None
    return a_dims[:-2], tuple(int(s) for s in sizes)


def _product(dims: list[tirx.Expr]) -> tirx.Expr:
    total = dims[0]
    for dim in dims[1:]:
        total = total * dim
    return total


def rewrite_batched(builder: relax.BlockBuilder) -> None:
    """Rewrites every matched product of the builder's Relax functions in place."""
    kernels: dict[tuple, relax.GlobalVar] = {}
    for a_shifted in (True, False):
        for b_shifted in (True, False):
            rewriter = _Rewriter(builder, _Pattern(a_shifted, b_shifted), kernels)
            product = rewriter.pattern.product()
            for gv, func in builder.get().functions_items():
                if isinstance(func, relax.Function):
                    builder.update_func(gv, rewrite_call(product, rewriter, func))


__all__ = ["KERNEL_ATTR", "OPAQUE", "batched_prim_func", "rewrite_batched", "schedule_batched"]
