"""Parallel loops only where the work pays for the thread pool: one PrimFunc holding a parallel
and a serial schedule of the same computation, chosen at run time by the size of the call.

Invariant: both branches are schedules of one PrimFunc (same parameters, same values), so the
gated function computes exactly what either does; only the loop kinds differ.

Why: a TVM parallel loop wakes every worker of the pool and waits for all of them, even for a
few microseconds of work, and on a machine whose cores are shared with other jobs a worker
that is not running delays the call by a scheduler time slice. Lowbit's programs have a
symbolic batch, so the size of a call is known only at run time: batch 1 of a small CNN gets
the serial loops, batch 32 of MiniLM's FFN the parallel ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tvm.script
from tvm import s_tir, tirx
from tvm.sym.analyzer import Analyzer

MIN_ELEMENTS = 1 << 14
"""Elements a memory-bound kernel (requantization, im2col, pooling) touches before it runs in
parallel: a few microseconds on one core, against about one for waking the pool."""
MIN_MACS = 1 << 18
"""Multiply-adds of a product (GEMM, attention) before it runs in parallel. Both thresholds are
the best of 2^12 to 2^18 elements and 2^16 to 2^22 multiply-adds (in steps of 4x) for
digits-cnn at batch 32 with two threads (``tvm_threads``); batch 1 runs serially under all."""


def gated(schedule: Callable[[bool], tirx.PrimFunc], work: tirx.PrimExpr,
          threshold: int) -> tirx.PrimFunc:
    """``schedule(True)`` (with parallel loops) where ``work >= threshold``, else
    ``schedule(False)``; a branch on ``work`` in the function where it is symbolic."""
    if isinstance(work, tirx.IntImm):
        return schedule(int(work) >= threshold)
    return by_size(work, schedule(False), [(threshold, schedule(True))])


def by_size(work: tirx.PrimExpr, smallest: tirx.PrimFunc,
            larger: Sequence[tuple[int, tirx.PrimFunc]]) -> tirx.PrimFunc:
    """One function running ``smallest`` below the first threshold and each ``(threshold,
    schedule)`` of ``larger`` (thresholds increasing, at least one) from its threshold on;
    every schedule is of one PrimFunc (same parameters)."""
    if isinstance(work, tirx.IntImm):
        return next((func for threshold, func in reversed(larger) if int(work) >= threshold),
                    smallest)
    body = smallest.body
    for threshold, func in larger:
        body = tirx.IfThenElse(work >= threshold, func.body, body)
    root = s_tir.SBlock([], [], [], "root", body)  # Relax's analyses expect a root block
    # attributes (the kernel's name) of the largest calls' schedule
    combined = larger[-1][1].with_body(s_tir.SBlockRealize([], True, root))
    # The branches share definitions of their source (intermediate buffers, loop and block
    # variables), which a function may make once; parsing the printed function back gives each
    # definition its own variable.
    return tvm.script.from_source(combined.script())


def elements(func: tirx.PrimFunc) -> tirx.PrimExpr:
    """The number of elements of all of ``func``'s buffer parameters (symbolic)."""
    total: tirx.PrimExpr = tirx.IntImm("int64", 0)
    for param in func.params:
        size: tirx.PrimExpr = tirx.IntImm("int64", 1)
        for dim in getattr(param, "shape", None) or ():
            size = size * dim
        total = total + size
    return Analyzer().simplify(total)


__all__ = ["MIN_ELEMENTS", "MIN_MACS", "by_size", "elements", "gated"]
