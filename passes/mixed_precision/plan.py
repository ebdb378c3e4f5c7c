"""Choosing per-layer weight bits for a bundled model (``lowbit compile --bits mixed``):
Hessian sensitivities, layer costs, the ILP at a budget or the accuracy-budget search.

Invariant: the plan's ``layer_bits`` is an ILP optimum for its budget (budget mode) or the
cheapest swept ILP solution within ``max_drop`` points of uniform INT8 on held-back
calibration samples (accuracy mode); accuracies come only from held-back calibration samples.
Models without a torch module (plain ONNX files) are declined: the Hessian needs autograd.
Models without labels get the output-MSE sensitivity, a budget-mode plan and no accuracy
sweep; ``--max-drop`` is declined for them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.models import BundledModel, get_model, model_names
from lowbit.passes.mixed_precision.costs import Budget, budget_limit, static_costs
from lowbit.passes.mixed_precision.data import Slice, calibration_slice
from lowbit.passes.mixed_precision.ilp import solve_assignment
from lowbit.passes.mixed_precision.latency import LatencyTable
from lowbit.passes.mixed_precision.layers import QuantLayer, lowered_weights, quantizable_layers
from lowbit.passes.mixed_precision.search import (Assignment, HeldOutAccuracy, Point,
                                                  cheapest_within_drop, fractions_of, sweep)
from lowbit.passes.mixed_precision.sensitivity import (BITS, HutchinsonConfig,
                                                       LayerSensitivity, layer_sensitivities)
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

DEFAULT_BUDGET = Budget("size", 0.6)


@dataclass(frozen=True)
class PlanOptions:
    budget: Budget | None = None
    """The ILP budget; with ``max_drop`` only its metric (and its fraction as a cap) counts."""
    max_drop: float | None = None
    """Accuracy points allowed below uniform INT8 on held-back calibration samples."""
    target: str = "llvm"
    calib_samples: int = 256
    held_out: int = 512
    compile: CompileOptions = CompileOptions()
    """What every measured assignment is compiled with (its ``layer_bits`` replaced)."""
    sweep_points: int = 11
    hutchinson: HutchinsonConfig = HutchinsonConfig()
    progress: bool = True


@dataclass(frozen=True)
class MixedPlan:
    model: str
    layers: Sequence[QuantLayer]
    sensitivities: Sequence[LayerSensitivity]
    costs: Mapping[str, np.ndarray]
    metric: str
    assignment: Assignment
    options: PlanOptions
    points: Sequence[Point] = ()
    chosen: Point | None = None
    reference: float | None = None
    """Uniform INT8's held-back accuracy (percent)."""
    notes: Sequence[str] = field(default_factory=tuple)

    def layer_bits(self) -> dict[str, int]:
        return {layer.name: bits for layer, bits in zip(self.layers, self.assignment, strict=True)}

    def fractions(self) -> dict[str, float]:
        return fractions_of(self.assignment, self.costs, BITS)


def sensitivity_matrix(sensitivities: Sequence[LayerSensitivity]) -> np.ndarray:
    """``[layers, BITS]`` HAWQ-V3 sensitivities (the ILP's objective coefficients)."""
    return np.array([[s.omega(b) for b in BITS] for s in sensitivities], dtype=np.float64)


def layer_costs(layers: Sequence[QuantLayer], target: str, activation_bits: int,
                progress: bool, need_latency: bool) -> tuple[dict[str, np.ndarray], list[str]]:
    """Size, bit operations and TVM latency per layer and width. Latency is only required
    when it is the budget; otherwise a target this machine cannot time, or a kernel TVM fails
    to build, leaves it out with a note."""
    costs = {metric: static_costs(layers, metric, BITS, activation_bits)
             for metric in ("size", "bops")}
    try:
        costs["latency"] = LatencyTable().costs(layers, BITS, target, activation_bits, progress)
    except (LowbitError, RuntimeError) as err:  # TVM's build errors are RuntimeErrors
        if need_latency:
            raise
        return costs, [f"latency left out: {type(err).__name__}: {str(err).splitlines()[0]}"]
    return costs, []


def hessian_sensitivities(model: BundledModel, graph: Graph,
                          calibration: Mapping[str, np.ndarray], sample: Slice,
                          hutchinson: HutchinsonConfig = HutchinsonConfig(),
                          compile_options: CompileOptions = CompileOptions(),
                          progress: bool = False
                          ) -> tuple[list[QuantLayer], list[LayerSensitivity], Graph]:
    """The conv/linear layers of ``graph``, their HAWQ-V3 sensitivities on ``sample`` (the
    perturbation taken on the weights the default float passes hand to the lowering) and that
    float graph."""
    layers = quantizable_layers(graph)
    inputs = [torch.from_numpy(np.ascontiguousarray(sample.feeds[n])) for n in model.input_names]
    labels = None if sample.labels is None else torch.from_numpy(sample.labels)
    float_graph = compile_graph(graph, calibration,
                                replace(compile_options, progress=False)).float_graph
    sensitivities = layer_sensitivities(model.load(), layers, inputs, labels, hutchinson,
                                        progress, lowered_weights(float_graph, layers))
    return layers, sensitivities, float_graph


def make_plan(model_name: str, graph: Graph, calibration: Mapping[str, np.ndarray],
              options: PlanOptions) -> MixedPlan:
    if model_name not in model_names():
        raise LowbitError("--bits mixed needs a bundled model: Hessian sensitivity runs "
                          "autograd on the float torch module, which an ONNX file does not "
                          "carry", file=model_name)
    model = get_model(model_name)
    sample = calibration_slice(model, 0, options.calib_samples)
    labels = sample.labels
    if options.max_drop is not None and labels is None:
        raise LowbitError(f"--max-drop needs labelled held-back data, and {model_name} has no "
                          "labels; use --budget")
    layers, sensitivities, _ = hessian_sensitivities(model, graph, calibration, sample,
                                                     options.hutchinson, options.compile,
                                                     options.progress)
    budget = options.budget or DEFAULT_BUDGET
    costs, notes = layer_costs(layers, options.target, options.compile.activation_bits,
                               options.progress, budget.metric == "latency")
    if labels is None:
        notes.append("no labels: sensitivity is the Hessian of the mean squared distance to the "
                     "float output; no held-back accuracy sweep or Pareto plot")
    matrix = sensitivity_matrix(sensitivities)
    cost = costs[budget.metric]
    lowest = float(cost.min(axis=1).sum()) / budget_limit(cost, BITS, 1.0)
    if budget.fraction < lowest:
        raise LowbitError(f"--budget {budget} is infeasible: the cheapest assignment already "
                          f"costs {lowest:.3f} of INT8 in {budget.metric} on target "
                          f"{options.target}")
    plan = MixedPlan(model_name, layers, sensitivities, costs, budget.metric,
                     solve_assignment(matrix, cost, budget_limit(cost, BITS, budget.fraction),
                                      BITS), options, notes=tuple(notes))
    if labels is None:
        return plan
    return _measured(plan, graph, calibration, model, matrix, budget)


def _measured(plan: MixedPlan, graph: Graph, calibration: Mapping[str, np.ndarray],
              model: BundledModel, matrix: np.ndarray, budget: Budget) -> MixedPlan:
    """The plan with its held-back sweep; in accuracy mode, the sweep's choice."""
    options = plan.options
    held = calibration_slice(model, options.calib_samples,
                             options.calib_samples + options.held_out)
    accuracy = HeldOutAccuracy(graph, [layer.name for layer in plan.layers], calibration, held,
                               options.compile)
    cap = budget.fraction if options.max_drop is not None and options.budget else 1.0
    points = sweep(matrix, plan.costs, budget.metric, BITS, accuracy, options.sweep_points,
                   cap, options.progress)
    int8 = tuple(8 for _ in plan.layers)
    reference = accuracy(int8)
    if options.max_drop is not None:
        uniform = Point(int8, fractions_of(int8, plan.costs, BITS), reference, 1.0)
        chosen = cheapest_within_drop([*points, uniform], reference, options.max_drop,
                                      budget.metric)
    else:
        chosen = Point(plan.assignment, plan.fractions(), accuracy(plan.assignment),
                       budget.fraction)
    return MixedPlan(plan.model, plan.layers, plan.sensitivities, plan.costs, plan.metric,
                     chosen.assignment, options, tuple(points), chosen, reference, plan.notes)
