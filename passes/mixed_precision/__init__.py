"""Mixed INT4/INT8 weight precision by integer linear programming (HAWQ-V3, Yao et al. 2021).

Per conv/linear layer: a Hessian-trace sensitivity (``sensitivity``), costs per bit width
(``costs``: size, bit operations; ``latency``: TVM-measured), one width per layer by
``scipy.optimize.milp`` under a budget (``ilp``), and an accuracy-budget search over ILP budgets
measured on held-back calibration samples (``search``). ``plan.make_plan`` ties them together
for ``lowbit compile --bits mixed``; the chosen widths go to ``CompileOptions.layer_bits``.
"""

from lowbit.passes.mixed_precision.costs import COST_METRICS, Budget
from lowbit.passes.mixed_precision.ilp import InfeasibleBudget, solve_assignment
from lowbit.passes.mixed_precision.layers import QuantLayer, quantizable_layers
from lowbit.passes.mixed_precision.plan import MixedPlan, PlanOptions, make_plan
from lowbit.passes.mixed_precision.sensitivity import (HutchinsonConfig, LayerSensitivity,
                                                       hutchinson_trace, layer_sensitivities)

__all__ = ["COST_METRICS", "Budget", "HutchinsonConfig", "InfeasibleBudget", "LayerSensitivity",
           "MixedPlan", "PlanOptions", "QuantLayer", "hutchinson_trace", "layer_sensitivities",
           "make_plan", "quantizable_layers", "solve_assignment"]
