"""Every number of the compile report, measured on the program just written (``report.json``).

Invariant: nothing here is estimated from the code under test's own claims: accuracy comes from
running the float graph and the integer program on held-out data (the bundled model's own
test metric, or agreement with float on the given samples), errors per node from both runs
side by side, latency from timing each backend that can run the written folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowbit import __version__
from lowbit.passes.quantize.pipeline import CompileResult
from lowbit.report.latency import latencies
from lowbit.report.node_errors import node_errors
from lowbit.runtime.interpreter import run_graph
from lowbit.runtime.references import relative_error

Feeds = Mapping[str, np.ndarray]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{list(value.shape)}"
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def accuracy(result: CompileResult, bundled: str | None, sample: Feeds) -> dict[str, Any]:
    """The bundled model's own test metric for float and integer, else output agreement on
    ``sample`` (error relative to the float range; top-1 agreement for 2-d outputs)."""
    if bundled is not None:
        from lowbit.models import get_model

        model = get_model(bundled)
        return {"data": f"the {bundled} test split (the model's own metric)",
                "float": model.evaluate(lambda f: run_graph(result.float_graph, f)),
                "integer": model.evaluate(lambda f: run_graph(result.integer_graph, f))}
    want = run_graph(result.float_graph, sample)
    got = run_graph(result.integer_graph, sample)
    outputs = {}
    for name in result.float_graph.outputs:
        entry = {"relative_error": relative_error(got[name], want[name])}
        if want[name].ndim == 2 and want[name].shape[1] > 1:
            entry["top1_agreement"] = float((got[name].argmax(1) == want[name].argmax(1)).mean())
        outputs[name] = entry
    return {"data": f"{len(next(iter(sample.values())))} calibration samples", "outputs": outputs}


def collect(result: CompileResult, source: str, settings: Mapping[str, Any], folder: Path,
            sample: Feeds, tvm: Mapping[str, Any] | None, bundled: str | None,
            timings: Mapping[str, float], say: Callable[[str], None]) -> dict[str, Any]:
    """The report's figures for the program written to ``folder``."""
    say("measuring accuracy of the integer program against float")
    started = time.perf_counter()
    measured_accuracy = accuracy(result, bundled, sample)
    say("measuring per-node error and latency per backend")
    rows = node_errors(result.float_graph, result.integer_graph, sample)
    latency = latencies(result.integer_graph, folder, sample, tvm)
    return _jsonable({
        "model": result.integer_graph.name, "source": source, "lowbit": __version__,
        "settings": dict(settings),
        "passes": [{"name": r.name, "changed": r.changed, "nodes_before": r.nodes_before,
                    "nodes_after": r.nodes_after,
                    "stats": {k: v for k, v in r.stats.items() if k != "markdown"}}
                   for r in result.pass_records],
        "lowering": {key: len(value) if isinstance(value, (list, dict)) else value
                     for key, value in result.lowering_stats.items()},
        "overflow": {"summary": result.ranges.summary(),
                     "unproved": result.ranges.unproved,
                     "worst_int32_use": result.ranges.worst_int32_use},
        "accuracy": measured_accuracy,
        "latency_seconds": {"batch": len(next(iter(sample.values()))), **latency},
        "tvm": tvm,
        "nodes": [row.as_json() for row in rows],
        "timings_seconds": {**timings, "report": time.perf_counter() - started},
    })
