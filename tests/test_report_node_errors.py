"""The report's per-node error table: each float node's row names the integer kernels that
carry its provenance (checked against a direct scan of the integer program) and its SQNR
against the float graph, worst first."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lowbit.compiler.importers.onnx_import import import_onnx
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.report.node_errors import node_errors
from tests.compile_runs import tiny_onnx


def test_rows_name_the_kernels_sharing_provenance(tmp_path: Path) -> None:
    model, calib = tiny_onnx(tmp_path)
    data = dict(np.load(calib))
    result = compile_graph(import_onnx(model), data, CompileOptions(progress=False))
    rows = node_errors(result.float_graph, result.integer_graph, {"x": data["x"][:8]})
    assert rows and [r.sqnr_db for r in rows] == sorted(r.sqnr_db for r in rows)
    by_name = {node.name: node for node in result.float_graph.nodes}
    for row in rows:
        origin = by_name[row.node].origin
        expected = sorted({n.op for n in result.integer_graph.nodes if n.origin & origin})
        assert row.kernels == ", ".join(expected) and expected
        assert 10.0 < row.sqnr_db < 80.0  # int8 codes of a 16->8 Gemm/ReLU: neither exact nor noise
