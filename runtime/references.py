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
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(feeds))))
