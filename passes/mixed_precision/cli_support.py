"""``lowbit compile ... --bits mixed [--budget METRIC=F] [--max-drop PT]``: the options, the plan
and the files it adds to the compile directory (``mixed_plan.json``, ``pareto.png`` and a report
section), kept here so the compile command only wires them in."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.passes.mixed_precision.costs import COST_METRICS, Budget
from lowbit.passes.mixed_precision.plan import MixedPlan, PlanOptions, make_plan
from lowbit.passes.mixed_precision.plan_report import render_plan
from lowbit.passes.mixed_precision.plot import pareto_plot
from lowbit.passes.quantize.pipeline import CompileOptions

PLOT_FILE = "pareto.png"
PLAN_FILE = "mixed_plan.json"
TVM_KINDS = ("llvm", "cuda", "aarch64")


def add_mixed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--budget", type=_budget, metavar="METRIC=F",
                        help="with --bits mixed: ILP budget as a fraction of the INT8 cost, "
                             f"METRIC one of {', '.join(COST_METRICS)} (default size=0.6; "
                             "latency is measured on TVM kernels for --target)")
    parser.add_argument("--max-drop", type=float, metavar="POINTS",
                        help="with --bits mixed: the cheapest assignment (under --budget's "
                             "metric, default size) whose top-1 on held-back calibration samples "
                             "is at most POINTS below uniform INT8")


def _budget(text: str) -> Budget:
    try:
        return Budget.parse(text)
    except LowbitError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def plan_from_args(args: argparse.Namespace, graph: Graph, calibration: Mapping[str, np.ndarray],
                   compile_options: CompileOptions) -> MixedPlan | None:
    """The mixed plan for ``--bits mixed`` (None otherwise; its options alone are an error);
    held-back accuracies are measured on programs compiled with ``compile_options``."""
    if args.bits != "mixed":
        if args.budget is not None or args.max_drop is not None:
            raise LowbitError("--budget and --max-drop need --bits mixed")
        return None
    target = getattr(args, "target", None)
    kind = target[0] if target and target[0] in TVM_KINDS else "llvm"
    options = PlanOptions(budget=args.budget, max_drop=args.max_drop, target=kind,
                          calib_samples=len(next(iter(calibration.values()))),
                          compile=compile_options)
    return make_plan(args.model, graph, calibration, options)


def write_plan(plan: MixedPlan, folder: Path) -> str:
    """Write the plan's JSON and Pareto plot into ``folder``; returns the report section."""
    plot = None
    if plan.chosen is not None and plan.points:
        pareto_plot(plan.points, plan.chosen, f"{plan.model}: mixed INT4/INT8 ILP budgets",
                    folder / PLOT_FILE)
        plot = PLOT_FILE
    record = {"model": plan.model, "metric": plan.metric, "layer_bits": plan.layer_bits(),
              "fractions_of_int8": plan.fractions(),
              "held_back_top1": None if plan.chosen is None else plan.chosen.accuracy,
              "int8_held_back_top1": plan.reference,
              "points": [{"assignment": list(p.assignment), "budget": p.budget,
                          "fractions_of_int8": dict(p.fractions), "held_back_top1": p.accuracy}
                         for p in plan.points]}
    (folder / PLAN_FILE).write_text(json.dumps(record, indent=1))
    return render_plan(plan, plot)
