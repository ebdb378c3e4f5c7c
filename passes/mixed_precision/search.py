"""Searching ILP budgets against measured accuracy: the Pareto sweep and the accuracy-budget
mode (``--max-drop``), plus the random baseline of the benchmark.

Invariants: every accuracy here is measured by compiling the assignment with ``compile_graph``
and running the integer program on held-back calibration samples (``data.calibration_slice``),
never on a test split. ``cheapest_within_drop`` returns the assignment of least cost, under the
chosen metric, among the swept ILP solutions whose drop against uniform INT8 is within the
limit; uniform INT8 itself always qualifies, so there is always an answer.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from tqdm import tqdm

from lowbit.compiler.ir import Graph
from lowbit.passes.mixed_precision.costs import assignment_cost, budget_limit
from lowbit.passes.mixed_precision.data import Slice, top1
from lowbit.passes.mixed_precision.ilp import solve_assignment
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.runtime.interpreter import run_graph

Assignment = tuple[int, ...]


@dataclass(frozen=True)
class Point:
    """One assignment: its cost per metric as a fraction of INT8, and held-back accuracy."""

    assignment: Assignment
    fractions: Mapping[str, float]
    accuracy: float
    budget: float | None = None
    """The ILP budget fraction that produced it (None: not an ILP solution)."""


class HeldOutAccuracy:
    """Held-back top-1 of assignments, each compiled once (memoised by assignment) with the
    ``base`` compile options and its per-layer weight bits."""

    def __init__(self, graph: Graph, layer_names: Sequence[str],
                 calibration: Mapping[str, np.ndarray], held_out: Slice,
                 base: CompileOptions = CompileOptions()) -> None:
        if held_out.labels is None:
            raise ValueError("held-back accuracy needs labels")
        self.graph, self.layer_names = graph, list(layer_names)
        self.calibration, self.held_out = calibration, held_out
        self.base = base
        self._memo: dict[Assignment, float] = {}

    def options(self, assignment: Assignment) -> CompileOptions:
        return replace(self.base, layer_bits=dict(zip(self.layer_names, assignment, strict=True)),
                       progress=False)

    def __call__(self, assignment: Assignment) -> float:
        if assignment not in self._memo:
            program = compile_graph(self.graph, self.calibration,
                                    self.options(assignment)).integer_graph
            logits = run_graph(program, self.held_out.feeds)[program.outputs[0]]
            self._memo[assignment] = top1(logits, self.held_out.labels)
        return self._memo[assignment]


def fractions_of(assignment: Assignment, costs: Mapping[str, np.ndarray],
                 bits: Sequence[int]) -> dict[str, float]:
    """The assignment's cost under every metric, as a fraction of all-INT8."""
    return {metric: assignment_cost(cost, bits, assignment) / budget_limit(cost, bits, 1.0)
            for metric, cost in costs.items()}


def sweep(sensitivity: np.ndarray, costs: Mapping[str, np.ndarray], metric: str,
          bits: Sequence[int], accuracy: HeldOutAccuracy, points: int = 11,
          upper: float = 1.0, progress: bool = True) -> list[Point]:
    """ILP solutions for ``points`` budgets evenly spaced from the cheapest assignment's
    fraction to ``upper``, each measured; duplicates are measured once."""
    cost = costs[metric]
    lowest = float(cost.min(axis=1).sum()) / budget_limit(cost, bits, 1.0)
    found: dict[Assignment, float] = {}
    for fraction in np.linspace(lowest, max(upper, lowest), points):
        limit = budget_limit(cost, bits, float(fraction))
        found.setdefault(solve_assignment(sensitivity, cost, limit, bits), float(fraction))
    result = []
    for assignment, fraction in tqdm(found.items(), desc=f"held-back accuracy ({metric} sweep)",
                                     unit="assignment", file=sys.stderr, disable=not progress):
        result.append(Point(assignment, fractions_of(assignment, costs, bits),
                            accuracy(assignment), fraction))
    return result


def cheapest_within_drop(points: Sequence[Point], reference: float, max_drop: float,
                         metric: str) -> Point:
    """The least-``metric`` point whose accuracy is at most ``max_drop`` points below
    ``reference`` (ties: the more accurate)."""
    allowed = [p for p in points if reference - p.accuracy <= max_drop + 1e-9]
    if not allowed:
        raise ValueError(f"no swept assignment is within {max_drop} points of {reference:.2f}%")
    return min(allowed, key=lambda p: (p.fractions[metric], -p.accuracy))


def random_assignment(cost: np.ndarray, bits: Sequence[int], limit: float,
                      rng: np.random.Generator, tries: int = 100_000) -> Assignment:
    """An assignment drawn uniformly from those whose cost is within ``limit`` (rejection
    sampling: each layer's width drawn uniformly, redrawn whole if over the limit)."""
    for _ in range(tries):
        choice = rng.integers(0, len(bits), size=cost.shape[0])
        if cost[np.arange(len(choice)), choice].sum() <= limit:
            return tuple(int(bits[k]) for k in choice)
    raise ValueError(f"no random assignment within {limit:.6g} in {tries} tries")
