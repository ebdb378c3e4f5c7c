"""One canonical order for independent scalar stores, so that TVM builds are reproducible.

Invariant: the pass only permutes, inside a run of consecutive ``BufferStore`` statements to one
buffer at constant indices, stores that do not depend on each other; every read-after-write,
write-after-read and write-after-write pair keeps its order, so each function computes exactly
what it computed before. Of the orders that respect those pairs it picks one (Kahn's algorithm,
smallest index first), which depends only on the stores, not on the order they came in.

Why: Relax's ``VMShapeLower`` writes the symbolic shape values of a program (``N * 16``,
``N * 32``, ...) into the shape heap in an order that follows object addresses, so one module
compiled twice gives another ``shape_func`` statement order about one build in four, hence
other machine code and another ``.so`` (issue 11: byte-identical artifacts). Runs are split at
any statement or expression the pass does not understand, which keeps it conservative.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import tvm
from tvm import tirx
from tvm.tirx import expr as tx
from tvm.tirx import stmt as ts

_OPERANDS = (tx.Add, tx.Sub, tx.Mul, tx.Div, tx.Mod, tx.FloorDiv, tx.FloorMod, tx.Min, tx.Max)


@dataclass(frozen=True)
class _Store:
    statement: ts.BufferStore
    slot: int
    reads: frozenset[int]


def _reads(value: tirx.PrimExpr, buffer: tirx.Buffer) -> frozenset[int] | None:
    """Constant slots of ``buffer`` that ``value`` reads; None where it reads anything else or
    holds an expression this pass does not know."""
    if isinstance(value, (tx.IntImm, tx.Var)):
        return frozenset()
    if isinstance(value, tx.Cast):
        return _reads(value.value, buffer)
    if isinstance(value, _OPERANDS):
        left, right = _reads(value.a, buffer), _reads(value.b, buffer)
        return None if left is None or right is None else left | right
    if isinstance(value, tvm.ir.TensorLoad) and value.source.same_as(buffer):
        slot = _constant_slot(value.indices)
        return None if slot is None else frozenset({slot})
    return None


def _constant_slot(indices: Sequence[tirx.PrimExpr]) -> int | None:
    if len(indices) == 1 and isinstance(indices[0], tx.IntImm):
        return int(indices[0].value)
    return None


def _as_store(statement: tirx.Stmt, buffer: tirx.Buffer | None) -> _Store | None:
    """The statement as a reorderable store into ``buffer`` (any buffer when None)."""
    if not isinstance(statement, ts.BufferStore):
        return None
    if buffer is not None and not statement.buffer.same_as(buffer):
        return None
    slot = _constant_slot(statement.indices)
    reads = _reads(statement.value, statement.buffer)
    if slot is None or reads is None:
        return None
    return _Store(statement, slot, reads)


def _canonical(run: list[_Store]) -> list[tirx.Stmt]:
    """The run in the smallest-slot-first topological order of its dependences."""
    before: list[set[int]] = [set() for _ in run]
    for j, later in enumerate(run):
        for i, earlier in enumerate(run[:j]):
            if (earlier.slot in later.reads or later.slot in earlier.reads
                    or earlier.slot == later.slot):
                before[j].add(i)
    ready = [(store.slot, i) for i, store in enumerate(run) if not before[i]]
    heapq.heapify(ready)
    ordered: list[tirx.Stmt] = []
    while ready:
        _, i = heapq.heappop(ready)
        ordered.append(run[i].statement)
        for j, waits in enumerate(before):
            if i in waits:
                waits.discard(i)
                if not waits:
                    heapq.heappush(ready, (run[j].slot, j))
    return ordered


def _reorder_sequence(statements: Sequence[tirx.Stmt]) -> list[tirx.Stmt]:
    result: list[tirx.Stmt] = []
    run: list[_Store] = []
    for statement in statements:
        store = _as_store(statement, run[0].statement.buffer if run else None)
        if store is None and run:  # another buffer, or not a plain store: close the run
            result.extend(_canonical(run))
            run = []
            store = _as_store(statement, None)
        if store is None:
            result.append(statement)
        else:
            run.append(store)
    result.extend(_canonical(run))
    return result


def _reorder(body: tirx.Stmt) -> tirx.Stmt:
    if isinstance(body, ts.SeqStmt):
        return ts.SeqStmt(_reorder_sequence(list(body.seq)))
    return body


def canonical_store_order() -> tvm.transform.Pass:
    """A pass putting the top-level store runs of every PrimFunc in canonical order."""

    @tirx.transform.prim_func_pass(opt_level=0, name="LowbitCanonicalStoreOrder")
    def reorder(func: tirx.PrimFunc, _mod: tvm.IRModule,
                _ctx: tvm.transform.PassContext) -> tirx.PrimFunc:
        return func.with_body(_reorder(func.body))

    return reorder


__all__ = ["canonical_store_order"]
