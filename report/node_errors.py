"""Per float node of the user's graph: how far its integer twin is from float, with the bits,
scale, integer kernels and interpreter time that explain it, worst first.

Invariant: every row compares the float graph's value with the integer program's dequantized
codes for the same float value (``metadata["quantized_values"]``) on the same inputs, so an
error is measured, never estimated; SQNR = 10 log10(sum f^2 / sum (f - q)^2).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.runtime.interpreter import run_graph

WEIGHTED_OPS = frozenset({"conv", "linear"})


@dataclass(frozen=True)
class NodeError:
    node: str
    op: str
    order: int
    sqnr_db: float
    relative_error: float
    dtype: str
    weight_bits: int | None
    scale: float
    kernels: str
    seconds: float

    def as_json(self) -> dict[str, object]:
        row = asdict(self)
        row["sqnr_db"] = None if math.isinf(self.sqnr_db) else round(self.sqnr_db, 2)
        return row


def profile(graph: Graph, feeds: Mapping[str, np.ndarray]
            ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every value of one interpreter run, and the seconds each node took."""
    producer = {out: node.name for node in graph.nodes for out in node.outputs}
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def stamp(name: str, value: np.ndarray) -> np.ndarray:
        now = time.perf_counter()
        if name in producer and producer[name] not in seconds:
            seconds[producer[name]] = now - clock[0]
        clock[0] = now
        return value

    return run_graph(graph, feeds, keep=True, replace=stamp), seconds


def _sqnr(reference: np.ndarray, approx: np.ndarray) -> float:
    noise = float(np.sum(np.square(reference - approx)))
    signal = float(np.sum(np.square(reference)))
    if noise == 0.0:
        return math.inf
    return 10.0 * math.log10(max(signal, 1e-300) / noise)


def node_errors(float_graph: Graph, integer_graph: Graph, feeds: Mapping[str, np.ndarray]
                ) -> list[NodeError]:
    """Rows for every float node whose output has integer codes, worst SQNR first."""
    reference = run_graph(float_graph, feeds, keep=True)
    values, seconds = profile(integer_graph, feeds)
    carried = integer_graph.metadata.get("quantized_values", {})
    meta = integer_graph.metadata
    layer_bits = meta.get("layer_bits", {})
    by_origin: dict[object, list[int]] = {}
    for index, candidate in enumerate(integer_graph.nodes):
        for origin in candidate.origin:
            by_origin.setdefault(origin, []).append(index)
    rows = []
    for order, node in enumerate(float_graph.nodes):
        entry = carried.get(node.outputs[0])
        if entry is None or entry["codes"] not in values:
            continue
        want = np.asarray(reference[node.outputs[0]], np.float64)
        codes = values[entry["codes"]]
        got = (codes.astype(np.float64) - entry["zero_point"]) * entry["scale"]
        if got.shape != want.shape:
            continue
        implementing = [integer_graph.nodes[i] for i in
                        sorted({i for origin in node.origin for i in by_origin.get(origin, ())})]
        span = float(np.ptp(want)) or 1.0
        rows.append(NodeError(
            node=node.name, op=node.op, order=order, sqnr_db=_sqnr(want, got),
            relative_error=float(np.abs(got - want).max() / span),
            dtype=integer_graph.types[entry["codes"]].dtype,
            weight_bits=(layer_bits.get(node.name, meta.get("bits"))
                         if node.op in WEIGHTED_OPS else None),
            scale=float(entry["scale"]),
            kernels=", ".join(sorted({n.op for n in implementing})),
            seconds=sum(seconds.get(n.name, 0.0) for n in implementing)))
    return sorted(rows, key=lambda row: row.sqnr_db)
