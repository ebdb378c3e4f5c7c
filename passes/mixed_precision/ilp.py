"""The bit-width assignment as an integer linear program (HAWQ-V3, section 3.4; REFERENCES 3.3).

With one binary ``x[i, k]`` per layer i and bit width ``bits[k]``:

    minimise    sum_ik sensitivity[i, k] * x[i, k]
    subject to  sum_k x[i, k] = 1                        (one width per layer)
                sum_ik cost[i, k] * x[i, k] <= budget    (size, bit operations or latency)

solved exactly by ``scipy.optimize.milp`` (HiGHS branch and bound). Invariant: the returned
assignment is feasible and its objective equals the optimum of an exhaustive search over all
``len(bits) ** layers`` assignments (``tests/test_mixed_precision.py`` checks this).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from lowbit.compiler.errors import LowbitError


class InfeasibleBudget(LowbitError):
    """No assignment fits the budget: even the cheapest width everywhere costs more."""


def solve_assignment(sensitivity: np.ndarray, cost: np.ndarray, budget: float,
                     bits: Sequence[int]) -> tuple[int, ...]:
    """The bit width per layer (rows of ``sensitivity``/``cost``, columns = ``bits``) with the
    least total sensitivity whose total cost is at most ``budget``."""
    layers, widths = sensitivity.shape
    if cost.shape != sensitivity.shape or widths != len(bits):
        raise ValueError(f"sensitivity {sensitivity.shape}, cost {cost.shape} and bits "
                         f"{list(bits)} disagree")
    cheapest = float(cost.min(axis=1).sum())
    if cheapest > budget * (1 + 1e-12):
        raise InfeasibleBudget(f"budget {budget:.6g} is below the cheapest assignment's cost "
                               f"{cheapest:.6g}")
    one_each = np.kron(np.eye(layers), np.ones(widths))
    constraints = [LinearConstraint(one_each, 1, 1),
                   LinearConstraint(cost.reshape(1, -1), -np.inf, budget)]
    result = milp(sensitivity.reshape(-1), constraints=constraints,
                  integrality=np.ones(layers * widths), bounds=Bounds(0, 1))
    if result.x is None:
        raise InfeasibleBudget(f"the ILP found no assignment within {budget:.6g}: "
                               f"{result.message}")
    choice = np.rint(result.x).reshape(layers, widths).argmax(axis=1)
    return tuple(int(bits[k]) for k in choice)
