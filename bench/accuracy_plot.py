"""The accuracy suite's picture: per model, how far each contender lands from float.

One panel per model, one bar per quantized contender that ran (the float interpreter, a check
of the capture, is left out): the loss of the model's first metric
against the float (torch) row (top-1 points for the digits models, ``1 - mean cosine`` for
MiniLM), lowbit's rows in colour and the peers in grey, W4A8 rows hatched. A panel whose losses
are all positive uses a log axis (MiniLM's span from 0.002 to 0.7); the value is written at
each bar, so a zero loss still reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from lowbit.bench.accuracy import FLOAT, LOWBIT_FLOAT, ModelTable
from lowbit.report.plots import figure_with_axes, png_bytes

LOWBIT_COLOUR = "#1f77b4"
PEER_COLOUR = "#9a9a9a"


def _losses(table: ModelTable) -> tuple[str, list[tuple[str, float]]]:
    """The panel's axis label and (contender, loss against float) for every scored row."""
    metric = table.metric_names()[0]
    reference = table.value(FLOAT, metric)
    rows = [(row.contender, row.metrics[metric]) for row in table.rows
            if row.contender not in (FLOAT, LOWBIT_FLOAT) and metric in row.metrics]
    if reference is None:
        return metric, []
    if metric == "accuracy":
        return "top-1 points below float", [(c, 100.0 * (reference - v)) for c, v in rows]
    return f"{metric.replace('_', ' ')}: distance from float", [(c, reference - v)
                                                               for c, v in rows]


def accuracy_png(tables: Sequence[ModelTable]) -> bytes:
    """The picture of the suite's tables (see the module docstring) as PNG bytes."""
    figure, axes = figure_with_axes(5.0 * len(tables), 4.2, len(tables))
    for axis, table in zip([axes] if len(tables) == 1 else axes, tables, strict=True):
        label, losses = _losses(table)
        names = [name for name, _ in losses]
        values = [value for _, value in losses]
        bars = axis.barh(range(len(values)), values,
                         color=[LOWBIT_COLOUR if n.startswith("lowbit") else PEER_COLOUR
                                for n in names],
                         edgecolor="black", linewidth=0.4)
        for bar, name, value in zip(bars, names, values, strict=True):
            if "W4A8" in name:
                bar.set_hatch("//")
            axis.annotate(f"{value:.3g}", (max(value, 0.0), bar.get_y() + bar.get_height() / 2),
                          xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
        if values and min(values) > 0:
            axis.set_xscale("log")
        axis.set_yticks(range(len(names)), names, fontsize=7)
        axis.invert_yaxis()
        axis.set_xlabel(label, fontsize=8)
        axis.set_title(table.model, fontsize=10)
    figure.suptitle("loss against float, lower is better (lowbit blue, peers grey, "
                    "W4A8 hatched)", fontsize=9)
    figure.tight_layout()
    return png_bytes(figure)


__all__ = ["accuracy_png"]
