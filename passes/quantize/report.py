"""The compile report (markdown): what each step did, checked numbers, no claims unmeasured."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from lowbit.passes.quantize.pipeline import CompileResult
from lowbit.runtime.interpreter import run_graph
from lowbit.runtime.references import relative_error


def agreement(result: CompileResult, feeds: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Integer program vs float graph on the same inputs: error relative to the float range."""
    want = run_graph(result.float_graph, feeds)
    got = run_graph(result.integer_graph, feeds)
    return {name: relative_error(got[name], want[name]) for name in result.float_graph.outputs}


def render_report(result: CompileResult, source: str, options: Mapping[str, object],
                  errors: Mapping[str, float]) -> str:
    float_ops = result.float_graph.op_histogram()
    int_ops = result.integer_graph.op_histogram()
    lines = [f"# lowbit compile report: {result.integer_graph.name}", "",
             f"- source: `{source}`",
             *(f"- {key}: `{value}`" for key, value in options.items()),
             f"- calibration: {result.calibration.method} over {result.calibration.samples} "
             "samples", "", "## Passes", ""]
    for record in result.pass_records:
        detail = ", ".join(f"{k}: {v if not isinstance(v, list) else len(v)}"
                           for k, v in record.stats.items() if k != "markdown")
        lines.append(f"- `{record.name}`: {record.nodes_before} -> {record.nodes_after} nodes "
                     f"({detail})")
        lines += record.stats.get("markdown", [])  # a pass's own table, e.g. permuted sites
    stats = result.lowering_stats
    lines += ["", "## Integer lowering", "",
              f"- fused activations into requantization: {len(stats.get('fused_activations', []))}",
              f"- attention masks selected instead of added: {len(stats.get('mask_adds', []))}",
              f"- elementwise functions lowered to lookup tables: "
              f"{len(stats.get('lookup_tables', []))}",
              f"- LayerNorm outputs with migrated per-channel scales (SmoothQuant): "
              f"{len(stats.get('migrated_layer_norms', {}))}",
              f"- block-quantized linears: {len(stats.get('block_linears', []))}; kept per "
              f"channel: {stats.get('block_declined', {})}",
              "- float ops inside the program: none (checked; only the boundary quantize / "
              "dequantize touch floats)",
              f"- overflow: {result.ranges.summary()}", "",
              "| op | float graph | integer program |", "| --- | ---: | ---: |"]
    for op in sorted(set(float_ops) | set(int_ops)):
        lines.append(f"| {op} | {float_ops.get(op, '')} | {int_ops.get(op, '')} |")
    lines += ["", "## Agreement with the float graph", "",
              "Max abs error divided by the float output's range, on calibration samples:", ""]
    lines += [f"- `{name}`: {error:.2e}" for name, error in errors.items()]
    return "\n".join(lines) + "\n"
