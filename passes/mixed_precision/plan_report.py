"""The mixed-precision section of the compile report: per-layer sensitivity, costs and bits, the
chosen point and the swept budgets (every number measured or computed, none assumed)."""

from __future__ import annotations

from lowbit.passes.mixed_precision.plan import MixedPlan
from lowbit.passes.mixed_precision.sensitivity import BITS


def _fractions(fractions: dict[str, float]) -> str:
    return ", ".join(f"{metric} {value:.3f}" for metric, value in fractions.items())


def render_plan(plan: MixedPlan, plot_name: str | None) -> str:
    options = plan.options
    mode = (f"accuracy budget: at most {options.max_drop} points below uniform INT8 on held-back "
            f"calibration samples, least {plan.metric}" if options.max_drop is not None
            else f"ILP budget {options.budget or 'size=0.6'} (fraction of the INT8 cost)")
    lines = ["", "## Mixed INT4/INT8 (HAWQ-V3 ILP)", "", f"- mode: {mode}",
             f"- sensitivity: Hutchinson trace of the loss Hessian per layer weight on "
             f"{options.calib_samples} calibration samples, times ||Q_b(W) - W||^2",
             f"- latency target: `{options.target}` (TVM single-layer programs, median)"
             if "latency" in plan.costs else "- latency: not measured",
             f"- chosen assignment costs (fraction of INT8): {_fractions(plan.fractions())}"]
    if plan.chosen is not None and plan.reference is not None:
        lines.append(f"- held-back calibration top-1: {plan.chosen.accuracy:.2f}% "
                     f"(uniform INT8 {plan.reference:.2f}%, "
                     f"drop {plan.reference - plan.chosen.accuracy:+.2f} pt) on "
                     f"{options.held_out} samples after the first {options.calib_samples}")
    lines += [*(f"- note: {note}" for note in plan.notes), "",
              "| layer | weight | params | MACs | Tr(H)/n | ± | "
              + " | ".join(f"Ω{b}" for b in BITS)
              + (" | " + " | ".join(f"latency w{b} (µs)" for b in BITS)
                 if "latency" in plan.costs else "") + " | bits |",
              "| --- | --- |" + " ---: |" * (5 + len(BITS)
                                             + (len(BITS) if "latency" in plan.costs else 0))]
    for index, (layer, sens, bits) in enumerate(zip(plan.layers, plan.sensitivities,
                                                    plan.assignment, strict=True)):
        cells = [f"`{layer.name}`", f"`{layer.weight}`", str(layer.params), str(layer.macs),
                 f"{sens.trace.mean / sens.params:.3e}", f"{sens.trace.stderr / sens.params:.1e}",
                 *(f"{sens.omega(b):.3e}" for b in BITS)]
        if "latency" in plan.costs:
            cells += [f"{plan.costs['latency'][index, k] * 1e6:.1f}" for k in range(len(BITS))]
        lines.append("| " + " | ".join(cells + [str(bits)]) + " |")
    if plan.points:
        lines += ["", "Swept ILP budgets (held-back calibration top-1):", "",
                  "| budget | size | bops | latency | top-1 | layers at INT4 |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: |"]
        for point in sorted(plan.points, key=lambda p: p.fractions[plan.metric]):
            f = point.fractions
            lines.append(f"| {plan.metric}={point.budget:.3f} | {f['size']:.3f} | "
                         f"{f['bops']:.3f} | {f.get('latency', float('nan')):.3f} | "
                         f"{point.accuracy:.2f}% | {point.assignment.count(4)} |")
    if plot_name:
        lines += ["", f"![Pareto plot]({plot_name})"]
    return "\n".join(lines) + "\n"
