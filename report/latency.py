"""Latency of the written program per backend, measured in the compile job itself: median
seconds over repeats after one warm-up run, on the same batch for every backend."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph

Runner = Callable[[Mapping[str, np.ndarray]], object]


def _interpreter(graph: Graph, folder: Path, tvm: Mapping[str, Any] | None) -> Runner | None:
    from lowbit.runtime.interpreter import run_graph

    return lambda feeds: run_graph(graph, feeds)


def _onnxruntime(graph: Graph, folder: Path, tvm: Mapping[str, Any] | None) -> Runner | None:
    path = folder / "model.onnx"
    if not path.is_file():
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, dict(feeds))


def _tvm(graph: Graph, folder: Path, tvm: Mapping[str, Any] | None) -> Runner | None:
    """The library when it runs on this host's CPU (not cross-compiled, not CUDA)."""
    if not tvm or tvm.get("module_target") != "llvm":
        return None
    from lowbit.runtime.tvm_backend import load_tvm

    return load_tvm(folder / tvm["library"])


RUNNERS: dict[str, Callable[[Graph, Path, Mapping[str, Any] | None], Runner | None]] = {
    "interp": _interpreter, "onnx": _onnxruntime, "tvm": _tvm}


def median_seconds(run: Runner, feeds: Mapping[str, np.ndarray], repeats: int) -> float:
    run(feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latencies(graph: Graph, folder: Path, feeds: Mapping[str, np.ndarray],
              tvm: Mapping[str, Any] | None, repeats: int = 5) -> dict[str, float]:
    """Median seconds per backend that this folder can run (``tvm``: the manifest's entry)."""
    measured = {}
    for name, make in RUNNERS.items():
        runner = make(graph, folder, tvm)
        if runner is not None:
            measured[name] = median_seconds(runner, feeds, repeats)
    return measured
