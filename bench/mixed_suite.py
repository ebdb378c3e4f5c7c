"""The ``mixed`` suite: HAWQ-V3 mixed INT4/INT8 weights at 60% of the INT8 weight size against
uniform INT8, uniform INT4 and random assignments of the same budget (issue 7's targets), and
the same ILP on sensitivities weighted by LRP relevance (``mixed_precision.relevance``).

Every contender is W{4,8}A8: activations stay 8-bit, only the conv/linear weight widths differ,
so size is the weight bits alone. The ILP sees Hessian sensitivities from the calibration
samples and nothing of the test split; every row is then scored by the model's own ``evaluate``
over the whole test split. Random: an assignment drawn uniformly among those within the same
size budget (``search.random_assignment``), ``RANDOM_SEEDS`` draws. "Beats" (uniform INT4, or
random: the mean over the draws, the expected result of a random assignment) means a higher
test top-1 *and* a lower test NLL: on a 450-image split top-1 moves in 0.22-point steps, so a
one-image top-1 win the cross-entropy of the same predictions contradicts is noise, not a win.
The table also shows where the ILP's assignment ranks among the draws.
A model without labels (MiniLM) is skipped with a note: its sensitivity is not cross-entropy.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lowbit.bench.suites import suite
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.compiler.ir import Graph
from lowbit.models import BundledModel, get_model
from lowbit.models.bundled import ArrayDict
from lowbit.models.digits_data import digits_split
from lowbit.passes.mixed_precision.costs import budget_limit, static_costs
from lowbit.passes.mixed_precision.data import calibration_slice
from lowbit.passes.mixed_precision.ilp import solve_assignment
from lowbit.passes.mixed_precision.layers import QuantLayer
from lowbit.passes.mixed_precision.plan import hessian_sensitivities, sensitivity_matrix
from lowbit.passes.mixed_precision.relevance import relevance_weights
from lowbit.passes.mixed_precision.search import random_assignment
from lowbit.passes.mixed_precision.sensitivity import BITS, LayerSensitivity
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.runtime import run_graph

SIZE_FRACTION = 0.6
MAX_DROP_VS_INT8 = 1.0
RANDOM_SEEDS = tuple(range(20))


@dataclass(frozen=True)
class Row:
    name: str
    assignment: tuple[int, ...]
    size: float
    accuracy: float
    nll: float
    """Mean cross-entropy of the program's logits on the test split (finer than top-1)."""


def _row(name: str, model: BundledModel, graph: Graph, calib: ArrayDict,
         layers: Sequence[QuantLayer], assignment: tuple[int, ...], full: float) -> Row:
    options = CompileOptions(layer_bits={layer.name: bits for layer, bits
                                         in zip(layers, assignment, strict=True)},
                             progress=False)
    program = compile_graph(graph, calib, options).integer_graph
    batches: list[np.ndarray] = []

    def predict(feeds: ArrayDict) -> ArrayDict:
        outputs = run_graph(program, feeds)
        batches.append(outputs[program.outputs[0]])
        return outputs

    accuracy = 100.0 * model.evaluate(predict)["accuracy"]
    logits = torch.from_numpy(np.concatenate(batches).astype(np.float64))
    nll = float(torch.nn.functional.cross_entropy(
        logits, torch.from_numpy(digits_split().test_labels)))
    size = sum(bits * layer.params for bits, layer in zip(assignment, layers)) / full
    print(f"mixed {model.name}: {name}: {accuracy:.2f}%, NLL {nll:.4f}", file=sys.stderr)
    return Row(name, assignment, size, accuracy, nll)


def _comparison(weighted: Row, mixed: Row) -> str:
    if weighted.assignment == mixed.assignment:
        return "the same assignment as the Hessian alone"
    verdict = ("better" if (weighted.accuracy, -weighted.nll) > (mixed.accuracy, -mixed.nll)
               else "worse")
    return (f"a different assignment, {verdict} than the Hessian alone: "
            f"{weighted.accuracy:.2f}% (NLL {weighted.nll:.4f}) vs {mixed.accuracy:.2f}% "
            f"(NLL {mixed.nll:.4f})")


def _beats(row: Row, accuracy: float, nll: float) -> bool:
    """Higher top-1 and lower NLL (see the module docstring)."""
    return row.accuracy > accuracy and row.nll < nll


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def bench_mixed(name: str, calib: ArrayDict) -> str:
    model = get_model(name)
    samples = len(next(iter(calib.values())))
    data = calibration_slice(model, 0, samples)
    if data.labels is None:
        return f"### {name}\n\nSkipped: no labels, so no cross-entropy Hessian.\n"
    start = time.perf_counter()
    graph = capture_bundled(name)
    layers, sens, float_graph = hessian_sensitivities(model, graph, calib, data, progress=True)
    size = static_costs(layers, "size", BITS)
    limit = budget_limit(size, BITS, SIZE_FRACTION)
    full = budget_limit(size, BITS, 1.0)
    mixed = solve_assignment(sensitivity_matrix(sens), size, limit, BITS)
    rho = relevance_weights(float_graph, layers, calib)
    weighted = solve_assignment(sensitivity_matrix(sens) * rho[:, None], size, limit, BITS)
    rows = [_row(label, model, graph, calib, layers, assignment, full)
            for label, assignment in (("uniform INT8 (W8A8)", (8,) * len(layers)),
                                      ("uniform INT4 (W4A8)", (4,) * len(layers)),
                                      (f"mixed, ILP at size={SIZE_FRACTION}", mixed),
                                      ("mixed, ILP on Hessian × LRP relevance", weighted))]
    randoms = [_row(f"random seed {seed}", model, graph, calib, layers,
                    random_assignment(size, BITS, limit, np.random.default_rng(seed)), full)
               for seed in RANDOM_SEEDS]
    return _render(name, model, layers, sens, rho, rows, randoms, samples,
                   time.perf_counter() - start)


def _render(name: str, model: BundledModel, layers: Sequence[QuantLayer],
            sens: Sequence[LayerSensitivity], rho: np.ndarray,
            rows: Sequence[Row], randoms: Sequence[Row], samples: int, seconds: float) -> str:
    int8, int4, mixed, weighted = rows
    mean = float(np.mean([r.accuracy for r in randoms]))
    mean_nll = float(np.mean([r.nll for r in randoms]))
    lines = [f"### {name}", "", f"{model.description}. Hessian traces and calibration: "
             f"{samples} calibration samples; accuracy: the whole test split. "
             f"{seconds:.0f} s.", "",
             "| layer | params | Tr(H)/n | ± | Ω4 | Ω8 | mixed bits | relevance ρ "
             "| bits with ρ |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for layer, s, bits, weight, other in zip(layers, sens, mixed.assignment, rho,
                                             weighted.assignment, strict=True):
        lines.append(f"| `{layer.name}` ({layer.weight}) | {layer.params} | "
                     f"{s.trace.mean / s.params:.3e} | {s.trace.stderr / s.params:.1e} | "
                     f"{s.omega(4):.3e} | {s.omega(8):.3e} | {bits} | {weight:.2f} | {other} |")
    lines += ["", "| assignment | size (of INT8) | INT8 layers | test top-1 | test NLL |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for row in [*rows, *randoms]:
        lines.append(f"| {row.name} | {row.size:.3f} | {row.assignment.count(8)} of "
                     f"{len(row.assignment)} | {row.accuracy:.2f}% | {row.nll:.4f} |")
    for label, statistic in (("median", np.median), ("mean", np.mean)):
        lines.append(f"| random, {label} of {len(randoms)} | | | "
                     f"{statistic([r.accuracy for r in randoms]):.2f}% | "
                     f"{statistic([r.nll for r in randoms]):.4f} |")
    below = sum(r.accuracy < mixed.accuracy for r in randoms)
    below_nll = sum(r.nll > mixed.nll for r in randoms)
    drop = int8.accuracy - mixed.accuracy
    lines += ["", "Targets:",
              f"- {_verdict(mixed.size <= SIZE_FRACTION + 1e-9)} mixed size at most "
              f"{SIZE_FRACTION} of INT8: {mixed.size:.3f}",
              f"- {_verdict(drop <= MAX_DROP_VS_INT8 + 1e-9)} mixed loses at most "
              f"{MAX_DROP_VS_INT8} point against INT8: {mixed.accuracy:.2f}% vs "
              f"{int8.accuracy:.2f}% ({-drop:+.2f} pt)",
              f"- {_verdict(_beats(mixed, int4.accuracy, int4.nll))} mixed beats uniform INT4: "
              f"{mixed.accuracy:.2f}% vs {int4.accuracy:.2f}%, NLL {mixed.nll:.4f} vs "
              f"{int4.nll:.4f}",
              f"- {_verdict(_beats(mixed, mean, mean_nll))} mixed beats random assignments of "
              f"the same budget (mean of {len(randoms)}): {mixed.accuracy:.2f}% vs {mean:.2f}%, "
              f"NLL {mixed.nll:.4f} vs {mean_nll:.4f}; better top-1 than {below} of "
              f"{len(randoms)} draws, lower NLL than {below_nll}",
              "", f"Relevance weighting (not a target): {_comparison(weighted, mixed)}."]
    return "\n".join(lines) + "\n"


@suite("mixed", "HAWQ-V3 mixed INT4/INT8 at 60% of the INT8 size against INT8, INT4 and random")
def mixed_suite(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> str:
    return "\n".join(bench_mixed(name, calib[name]) for name in names)
