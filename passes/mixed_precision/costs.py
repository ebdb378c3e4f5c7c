"""Hardware cost of each layer at each weight bit width, and budgets as fractions of INT8.

- ``size``: weight bits times weight parameters (biases stay 32-bit at any weight width and are
  left out; HAWQ-V3's size constraint).
- ``bops``: bit operations, multiply-accumulates times weight bits times activation bits.
- ``latency``: seconds of the layer's own integer program built by TVM for a target
  (``latency.LatencyTable``, measured and cached).

A budget ``metric=f`` allows ``f`` times the cost of the all-INT8 assignment under that metric;
for size and bit operations ``f = 0.5`` is exactly uniform INT4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.passes.mixed_precision.layers import QuantLayer

COST_METRICS = ("size", "bops", "latency")


@dataclass(frozen=True)
class Budget:
    metric: str
    fraction: float

    def __post_init__(self) -> None:
        if self.metric not in COST_METRICS:
            raise LowbitError(f"budget metric {self.metric!r} is not one of {COST_METRICS}")
        if not 0.0 < self.fraction <= 1.0:
            raise LowbitError(f"budget fraction {self.fraction} must lie in (0, 1] "
                              "(a fraction of the INT8 cost)")

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """``size=0.6``, ``bops=0.7`` or ``latency=0.8``."""
        metric, _, value = text.partition("=")
        try:
            return cls(metric.strip(), float(value))
        except ValueError:
            raise LowbitError(f"budget {text!r} is not METRIC=FRACTION with METRIC one of "
                              f"{COST_METRICS}") from None

    def __str__(self) -> str:
        return f"{self.metric}={self.fraction:g}"


def static_costs(layers: Sequence[QuantLayer], metric: str, bits: Sequence[int],
                 activation_bits: int = 8) -> np.ndarray:
    """``[layers, bits]`` costs of ``size`` or ``bops`` (latency is measured, see latency.py)."""
    if metric == "size":
        return np.array([[b * layer.params for b in bits] for layer in layers], dtype=np.float64)
    if metric == "bops":
        return np.array([[b * activation_bits * layer.macs for b in bits] for layer in layers],
                        dtype=np.float64)
    raise ValueError(f"{metric!r} is not a static cost")


def budget_limit(cost: np.ndarray, bits: Sequence[int], fraction: float) -> float:
    """``fraction`` of the all-INT8 total of a ``[layers, bits]`` cost matrix."""
    return fraction * float(cost[:, list(bits).index(8)].sum())


def assignment_cost(cost: np.ndarray, bits: Sequence[int], assignment: Sequence[int]) -> float:
    """Total cost of one width per layer."""
    columns = [list(bits).index(b) for b in assignment]
    return float(cost[np.arange(len(columns)), columns].sum())
