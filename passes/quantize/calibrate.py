"""Calibration: run the float graph over a dataset and record every activation's range.

The float reference interpreter runs batch by batch (with a progress bar); one observer per
float-valued activation keeps its statistics. Constants are not observed (weights get their
own per-channel ranges in the lowering). A value whose quantizer a float pass already chose
(listed in ``graph.metadata[FIXED_RANGES_KEY]``, e.g. RepQ-ViT's layer-wise quantizer after
reparameterization) keeps that range. Calibration arrays follow the CLI contract: one array
per graph input, keyed by name, the first axis is the sample axis.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from lowbit.compiler.errors import InputError
from lowbit.compiler.fileio import write_text_atomically
from lowbit.compiler.ir import Graph
from lowbit.passes.quantize.observers import OBSERVERS, RangeObserver
from lowbit.runtime.interpreter import run_graph

FIXED_RANGES_KEY = "fixed_ranges"
"""Graph metadata: value -> [lo, hi] chosen by a float pass; calibration does not observe it."""


@dataclass(frozen=True)
class Calibration:
    """Clipping range per activation value, from one observer method, and each float
    activation's per-channel (last axis) maximum magnitude for scale-migration passes."""

    method: str
    ranges: dict[str, tuple[float, float]]
    samples: int
    channel_absmax: dict[str, np.ndarray]

    def save(self, path: str | os.PathLike[str]) -> None:
        doc = {"method": self.method, "samples": self.samples,
               "ranges": {k: list(v) for k, v in self.ranges.items()}}
        write_text_atomically(path, json.dumps(doc, indent=1))


def calibrate(graph: Graph, data: Mapping[str, np.ndarray], *, method: str = "minmax",
              batch_size: int = 32, progress: bool = True) -> Calibration:
    if method not in OBSERVERS:
        raise InputError(f"unknown calibration method {method!r}; choose from {OBSERVERS}")
    missing = [name for name in graph.inputs if name not in data]
    if missing:
        raise InputError(f"calibration data lacks input(s) {missing}; it has {sorted(data)}")
    counts = {name: len(data[name]) for name in graph.inputs}
    if len(set(counts.values())) > 1:
        raise InputError(f"calibration arrays have different sample counts: {counts}")
    total = next(iter(counts.values()), 0)
    if total == 0:
        raise InputError("calibration data has no samples")
    observed = [v for n in graph.nodes for v in n.outputs if graph.types[v].dtype.startswith("float")]
    observed += list(graph.inputs)  # integer inputs too: their ranges bound the range analysis
    observers = {v: RangeObserver(method) for v in observed}
    channel_absmax: dict[str, np.ndarray] = {}
    starts = range(0, total, batch_size)
    for start in tqdm(starts, desc=f"calibrating {graph.name}", unit="batch",
                      disable=not progress, leave=False):
        feeds = {name: data[name][start:start + batch_size] for name in graph.inputs}
        values = run_graph(graph, feeds, keep=True)
        for name, observer in observers.items():
            observer.observe(values[name])
            if values[name].ndim and values[name].dtype.kind == "f":
                _update_channel_absmax(channel_absmax, name, values[name])
    ranges = {v: o.range() for v, o in observers.items()}
    ranges.update({v: (float(lo), float(hi))
                   for v, (lo, hi) in graph.metadata.get(FIXED_RANGES_KEY, {}).items()})
    return Calibration(method, ranges, total, channel_absmax)


def _update_channel_absmax(store: dict[str, np.ndarray], name: str, values: np.ndarray) -> None:
    batch_max = np.abs(values).reshape(-1, values.shape[-1]).max(axis=0)
    store[name] = np.maximum(store[name], batch_max) if name in store else batch_max
