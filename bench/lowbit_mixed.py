"""lowbit's mixed INT4/INT8 row: HAWQ-V3 bit widths per conv/linear layer at 60% of the INT8
weight size, 8-bit activations, run by the numpy reference interpreter.

The sensitivities are the same as ``lowbit compile --bits mixed --budget size=0.6``: Hutchinson
traces of the loss Hessian on the first ``HESSIAN_SAMPLES`` calibration samples (cross-entropy
where the model has labels, otherwise the squared distance to the float output), times the
per-channel quantization perturbation of each width; the ILP (``scipy.optimize.milp``) then
minimizes their sum under the size budget. Only calibration data is seen; no kernel is timed
(size is the budget, so the latency table is not needed).
"""

from __future__ import annotations

from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict, PredictFn
from lowbit.passes.mixed_precision.costs import budget_limit, static_costs
from lowbit.passes.mixed_precision.data import calibration_slice
from lowbit.passes.mixed_precision.ilp import solve_assignment
from lowbit.passes.mixed_precision.plan import hessian_sensitivities, sensitivity_matrix
from lowbit.passes.mixed_precision.sensitivity import BITS, HutchinsonConfig
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.runtime import run_graph

SIZE_FRACTION = 0.6
HESSIAN_SAMPLES = 64
"""Calibration samples the Hessian traces see."""
HUTCHINSON = HutchinsonConfig(min_samples=8, max_samples=32)
"""Fewer Hessian-vector products than the compile default (16 to 100): on MiniLM each is a
second backward pass through six BERT layers, and with the default it had not finished after
14 minutes on the shared 2-core machine."""


def lowbit_mixed(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """The integer program with the ILP's widths at ``SIZE_FRACTION`` of the INT8 size."""
    graph = capture_bundled(model.name)
    count = min(HESSIAN_SAMPLES, len(next(iter(calib.values()))))
    layers, sensitivities, _ = hessian_sensitivities(
        model, graph, calib, calibration_slice(model, 0, count), HUTCHINSON)
    size = static_costs(layers, "size", BITS)
    widths = solve_assignment(sensitivity_matrix(sensitivities), size,
                              budget_limit(size, BITS, SIZE_FRACTION), BITS)
    options = CompileOptions(layer_bits={layer.name: bits for layer, bits
                                         in zip(layers, widths, strict=True)}, progress=False)
    program = compile_graph(graph, calib, options).integer_graph
    return lambda feeds: run_graph(program, feeds)


__all__ = ["SIZE_FRACTION", "lowbit_mixed"]
