"""The Pareto plot of a mixed-precision search: held-back accuracy against model size and
against measured latency (fractions of uniform INT8), one marker per swept ILP budget, the
chosen point ringed. Drawn with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lowbit.passes.mixed_precision.search import Point

AXES = (("size", "model size (fraction of INT8)"),
        ("latency", "latency (fraction of INT8)"),
        ("bops", "bit operations (fraction of INT8)"))


def pareto_plot(points: Sequence[Point], chosen: Point, title: str, path: Path) -> Path:
    """Write a PNG with one panel per cost metric the points carry (size, latency, bops)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    panels = [(key, label) for key, label in AXES if key in chosen.fractions][:2]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    ordered = sorted(points, key=lambda p: p.fractions[panels[0][0]])
    for axis, (key, label) in zip(axes[0], panels):
        axis.plot([p.fractions[key] for p in ordered], [p.accuracy for p in ordered], "o-",
                  color="tab:blue", label="ILP solutions (swept budgets)")
        axis.scatter([chosen.fractions[key]], [chosen.accuracy], s=160, facecolors="none",
                     edgecolors="tab:red", linewidths=2, label="chosen", zorder=3)
        axis.set_xlabel(label)
        axis.set_ylabel("held-back calibration top-1 (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(loc="lower right")
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
