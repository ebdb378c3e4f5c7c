"""A default CPU schedule for the PrimFuncs lowbit's kernels do not cover (requantizations,
depthwise convolutions, pooling, transposes, quantization of float inputs).

Invariant: the schedule only inlines, reorders, splits, fuses, parallelizes and vectorizes
loops and moves blocks under them, which never changes a value; a function it cannot schedule
is left as TVM lowered it. Functions carrying ``KERNEL_ATTR`` (lowbit's own kernels, already
scheduled) are not touched.

``schedule_default`` inlines every elementwise block it can into its consumer, then schedules
each remaining block on its own loop nest:

- a loop over a symbolic batch times a constant (``N * 64``, from im2col) is split at the
  constant, so that the loops follow the batch;
- the leading spatial loops (batch, channels) are fused into the task loop;
- a reduction's loops move outside its innermost spatial loop, which is vectorized with the
  innermost static loops of an elementwise block (``VECTOR_LANES``); an elementwise consumer
  of a reduction (its requantization) moves into the reduction's task loop, and a padded copy
  of the reduction's input (``pad_temp``) is made per task instead of being inlined as a
  branch into every multiply-add.

``schedule_cpu`` applies it to a module, with the task loops parallel only for calls of at
least ``MIN_ELEMENTS`` elements (``tvm_parallel_gate``).
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.schedule import ScheduleError

from lowbit.compiler.codegen.tvm_kernels import int8_gemm
from lowbit.compiler.codegen.tvm_kernels_batched import KERNEL_ATTR
from lowbit.compiler.codegen.tvm_layout import channels_last
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_ELEMENTS, elements, gated

VECTOR_LANES = (16, 8, 4)
"""Lanes of a vectorized innermost loop, widest first; the first that divides its extent wins."""
TASK_LOOPS = 2
"""Leading spatial loops fused into the task loop (batch and channels)."""
SCHEDULED = "tirx.is_scheduled"

Loop = s_tir.schedule.LoopRV
Block = s_tir.schedule.SBlockRV


@dataclass(frozen=True)
class _Scheduler:
    sch: s_tir.Schedule
    parallel: bool

    def extent(self, loop: Loop) -> int | None:
        extent = self.sch.get(loop).extent
        return int(extent) if isinstance(extent, tirx.IntImm) else None

    def lanes(self, loop: Loop) -> int | None:
        extent = self.extent(loop)
        return None if extent is None else next(
            (v for v in VECTOR_LANES if extent % v == 0), None)

    def split_batch(self, loops: list[Loop]) -> list[Loop]:
        """Splits ``N * c`` loops into ``N`` and ``c``."""
        result = []
        for loop in loops:
            extent = self.sch.get(loop).extent
            if isinstance(extent, tirx.Mul) and isinstance(extent.b, tirx.IntImm):
                result.extend(self.sch.split(loop, [None, int(extent.b)]))
            else:
                result.append(loop)
        return result

    def vectorize_tail(self, loops: list[Loop]) -> list[Loop]:
        """Fuses the static innermost loops and vectorizes them by ``VECTOR_LANES``; returns
        the loops left outside the vector."""
        static = 0
        while static < len(loops) and self.extent(loops[-1 - static]) is not None:
            static += 1
        if static == 0:
            return loops
        tail = self.sch.fuse(*loops[-static:]) if static > 1 else loops[-1]
        lanes = self.lanes(tail)
        if lanes is None:
            return [*loops[:-static], tail]
        outer, inner = self.sch.split(tail, [None, lanes])
        self.sch.vectorize(inner)
        return [*loops[:-static], outer]

    def tasks(self, loops: list[Loop]) -> Loop | None:
        """Fuses the leading ``TASK_LOOPS`` loops into the (outermost) task loop."""
        leading = loops[:TASK_LOOPS]
        if not leading:
            return None
        loop = self.sch.fuse(*leading) if len(leading) > 1 else leading[0]
        if self.parallel:
            self.sch.parallel(loop)
        return loop

    def spatial(self, block: Block) -> None:
        self.tasks(self.vectorize_tail(self.split_batch(self.sch.get_loops(block))))

    def reduction(self, block: Block) -> Loop | None:
        """Schedules a reduction; returns its task loop (None if it has none)."""
        sch = self.sch
        iters = sch.get(block).iter_vars
        loops = sch.get_loops(block)
        spatial = [loop for loop, it in zip(loops, iters, strict=True)
                   if it.iter_type == tirx.IterVar.DataPar]
        reduce = [loop for loop, it in zip(loops, iters, strict=True)
                  if it.iter_type != tirx.IterVar.DataPar]
        if not spatial or not reduce:
            return None
        spatial = self.split_batch(spatial)
        lanes = self.lanes(spatial[-1]) if len(spatial) > 1 else None
        if lanes is None:
            sch.reorder(*spatial, *reduce)
            return self.tasks(spatial)
        outer, inner = sch.split(spatial[-1], [None, lanes])
        sch.reorder(*spatial[:-1], outer, *reduce, inner)
        tasks = self.tasks(spatial[:-1])
        sch.vectorize(inner)
        init = sch.decompose_reduction(block, reduce[0])
        sch.vectorize(sch.get_loops(init)[-1])
        return tasks

    def epilogue(self, block: Block, tasks: Loop) -> bool:
        """Moves an elementwise consumer of a reduction under the reduction's task loop (the
        outermost) and vectorizes it there; False where it cannot move."""
        try:
            self.sch.reverse_compute_at(block, tasks, preserve_unit_loops=True)
        except ScheduleError:
            return False
        self.vectorize_tail(self.sch.get_loops(block)[1:])
        return True

    def pad(self, block: Block, tasks: Loop | None) -> None:
        """A padded copy is made per task of the reduction reading it, else inlined."""
        if tasks is not None:
            try:
                self.sch.compute_at(block, tasks, preserve_unit_loops=True)
                return
            except ScheduleError:
                pass
        self.sch.compute_inline(block)


def _inline(sch: s_tir.Schedule, blocks: list[SBlockInfo]) -> list[SBlockInfo]:
    """Inlines every elementwise block it can into its consumers; returns the others, in
    order. Only ``compute_inline``: TVM 0.27's ``reverse_compute_inline`` of an epilogue into a
    reduction can leave the epilogue's cast on the accumulator."""
    remaining = list(blocks)
    progress = True
    while progress:
        progress = False
        for info in remaining:
            if info.is_reduction():
                continue
            try:
                sch.compute_inline(info.block_rv)
            except ScheduleError:
                continue
            remaining.remove(info)
            progress = True
            break
    return remaining


def schedule_default(func: tirx.PrimFunc, parallel: bool) -> tirx.PrimFunc | None:
    """The default schedule of ``func`` (its task loops parallel when ``parallel``), or None
    where a step does not apply."""
    scheduler = _Scheduler(s_tir.Schedule(func), parallel)
    sch = scheduler.sch
    blocks = normalize_prim_func(sch)
    if blocks is None:
        return None
    pads = [info.block_rv for info in blocks if info.is_data_pad(sch)]
    tasks, first = None, None
    try:
        for info in _inline(sch, [info for info in blocks if info.block_rv not in pads]):
            if info.is_reduction():
                tasks = scheduler.reduction(info.block_rv)
                first = first or tasks
            elif tasks is None or not scheduler.epilogue(info.block_rv, tasks):
                scheduler.spatial(info.block_rv)
                tasks = None
        for pad in pads:
            scheduler.pad(pad, first)
    except ScheduleError:
        return None
    return sch.mod["main"]


def _unscheduled(func: object) -> bool:
    """A PrimFunc no one scheduled; reshapes are left alone, Relax turns them into views."""
    attrs = getattr(func, "attrs", None) or {}
    return (isinstance(func, tirx.PrimFunc) and KERNEL_ATTR not in attrs
            and SCHEDULED not in attrs and not relax.analysis.has_reshape_pattern(func))


def scheduled_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """lowbit's CPU passes up to scheduled TIR: channels-last convolutions (``tvm_layout``), the
    kernel rewrite (``tvm_kernels``), TVM's CPU dispatch, legalization and fusion, then
    ``schedule_cpu``; run them inside ``with target``."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    return ([channels_last(), int8_gemm(target)] + cpu.library_dispatch_passes(target)
            + cpu.legalize_passes(target) + [schedule_cpu()])


def schedule_cpu() -> tvm.transform.Pass:
    """The module pass scheduling every PrimFunc that is neither a lowbit kernel nor already
    scheduled, in parallel only from ``MIN_ELEMENTS`` elements a call (``tvm_parallel_gate``)."""

    @tvm.transform.module_pass(opt_level=0, name="LowbitScheduleCpu")
    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gv, func in mod.functions_items():
            if not _unscheduled(func) or schedule_default(func, False) is None:
                continue
            updates[gv] = gated(lambda parallel, func=func: schedule_default(func, parallel),
                                elements(func), MIN_ELEMENTS).with_attr(SCHEDULED, True)
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return run


__all__ = ["SCHEDULED", "TASK_LOOPS", "VECTOR_LANES", "schedule_cpu", "schedule_default",
           "scheduled_passes"]
