"""The report's pictures as PNG bytes (matplotlib's Agg canvas, no pyplot state): SQNR of each
node in graph order, and latency per backend."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

DPI = 110


def png_bytes(figure: object) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def figure_with_axes(width: float, height: float, columns: int = 1):  # -> (Figure, Axes...)
    """A pyplot-free figure on an Agg canvas with ``columns`` side-by-side axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, columns)


def sqnr_png(names: Sequence[str], sqnr_db: Sequence[float | None]) -> bytes:
    """Bars of SQNR per node, graph order; nodes exact in integers are drawn at the top."""
    finite = [v for v in sqnr_db if v is not None]
    ceiling = (max(finite) if finite else 0.0) + 5.0
    values = [ceiling if v is None else v for v in sqnr_db]
    figure, axes = figure_with_axes(max(6.0, 0.12 * len(names)), 3.2)
    axes.bar(range(len(values)), values, color=["#c44" if v < 20 else "#48a" for v in values])
    axes.set_ylabel("SQNR vs float (dB)")
    axes.set_xlabel("node, in graph order (red: below 20 dB)")
    axes.set_xticks([])
    return png_bytes(figure)


def latency_png(latency: Mapping[str, float]) -> bytes:
    figure, axes = figure_with_axes(4.5, 2.4)
    names = list(latency)
    axes.barh(names, [1e3 * latency[n] for n in names], color="#48a")
    axes.set_xlabel("median latency (ms)")
    return png_bytes(figure)
