"""The canonical store order pass (``tvm_store_order``): independent shape-heap stores come out
in one order whatever order they came in, dependent ones keep theirs, and a real program built
many times gives one library (issue 11, determinism)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm.script import tirx as T  # noqa: E402

from lowbit.compiler.codegen.tvm_store_order import canonical_store_order  # noqa: E402


def _canonical(func: object) -> str:
    module = canonical_store_order()(tvm.IRModule({"shape_func": func}))
    return module["shape_func"].script()


def _lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().startswith("H[")]


@T.prim_func
def _slots_3_1_2(H: T.Buffer((T.int64(4),), "int64")) -> None:
    H[T.int64(3)] = T.int64(32) * H[T.int64(0)]
    H[T.int64(1)] = T.int64(16) * H[T.int64(0)]
    H[T.int64(2)] = T.int64(4) * H[T.int64(0)] * T.int64(8)


@T.prim_func
def _slots_2_3_1(H: T.Buffer((T.int64(4),), "int64")) -> None:
    H[T.int64(2)] = T.int64(4) * H[T.int64(0)] * T.int64(8)
    H[T.int64(3)] = T.int64(32) * H[T.int64(0)]
    H[T.int64(1)] = T.int64(16) * H[T.int64(0)]


def test_independent_stores_get_one_order_by_slot() -> None:
    first, second = _canonical(_slots_3_1_2), _canonical(_slots_2_3_1)
    assert _lines(first) == _lines(second)
    assert [line.split("]")[0] for line in _lines(first)] == [
        "H[T.int64(1)", "H[T.int64(2)", "H[T.int64(3)"]


@T.prim_func
def _dependent(H: T.Buffer((T.int64(4),), "int64")) -> None:
    H[T.int64(3)] = T.int64(2) * H[T.int64(0)]  # read by slot 1 below: stays first
    H[T.int64(1)] = H[T.int64(3)] + T.int64(1)
    H[T.int64(2)] = H[T.int64(0)] + T.int64(5)  # independent: smallest ready slot, first


def test_dependences_keep_their_order() -> None:
    order = [line.split("]")[0] for line in _lines(_canonical(_dependent))]
    # slot 3 must precede slot 1 (read after write); slot 2 is free and smallest when ready.
    assert order == ["H[T.int64(2)", "H[T.int64(3)", "H[T.int64(1)"]


@T.prim_func
def _write_after_read(H: T.Buffer((T.int64(4),), "int64")) -> None:
    H[T.int64(3)] = H[T.int64(1)] * T.int64(2)  # reads slot 1 before it is overwritten
    H[T.int64(1)] = H[T.int64(0)] * T.int64(7)


def test_write_after_read_keeps_its_order() -> None:
    assert _lines(_canonical(_write_after_read)) == _lines(_write_after_read.script())


def test_a_program_built_repeatedly_gives_one_library(tmp_path: Path) -> None:
    """Without the pass about one build in four of this program differed (shape_func order)."""
    from lowbit.compiler.codegen import tvm_build
    from lowbit.compiler.importers.onnx_import import import_onnx
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
    from tests.compile_runs import tiny_onnx

    model, calib = tiny_onnx(tmp_path)
    program = compile_graph(import_onnx(model), dict(np.load(calib)),
                            CompileOptions(progress=False)).integer_graph
    digests = set()
    for attempt in range(12):
        path = tvm_build.export_library(tvm_build.build(program, "llvm"),
                                        tmp_path / f"build{attempt}.so")
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
