"""Independent references a captured graph is checked against: torch and onnxruntime.

``relative_error`` is the measure used everywhere: max absolute error divided by the range of
the reference output (so that a near-zero element cannot blow it up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    span = float(want.max() - want.min()) if want.size else 0.0
    return float(np.abs(got - want).max() / (span if span > 0 else 1.0)) if want.size else 0.0


def run_torch(module: object, feeds: Mapping[str, np.ndarray],
              output_names: Sequence[str]) -> dict[str, np.ndarray]:
    import torch

    with torch.no_grad():
        result = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in feeds.values()))
    results = result if isinstance(result, (tuple, list)) else (result,)
    return {name: r.detach().numpy() for name, r in zip(output_names, results)}


def run_onnxruntime(path: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Outputs keyed by name; a model or feeds onnxruntime refuses is a ``LowbitError``."""
    import onnxruntime
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_state

    from lowbit.compiler.errors import LowbitError

    refusals = tuple(kind for kind in vars(ort_state).values()
                     if isinstance(kind, type) and issubclass(kind, Exception))
    options = onnxruntime.SessionOptions()
    # basic rewrites only: onnxruntime 1.32's extended fusions segfault on a valid
    # LayerNormalization without its optional bias (found by tests/test_fuzz_onnx_import.py)
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    try:
        session = onnxruntime.InferenceSession(path, options,
                                               providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds))))
    except refusals as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LowbitError(f"onnxruntime refuses it: {first}", file=str(path)) from None
