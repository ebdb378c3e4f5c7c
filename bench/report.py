"""Markdown of benchmark reports: the provenance header every suite shares (command, date,
versions, machine), and the accuracy suite's table and target verdicts per model."""

import os
import platform
from collections.abc import Sequence
from datetime import datetime

import numpy as np
import onnx
import onnxruntime
import torch

from lowbit import __version__
from lowbit.bench.accuracy import CONTENDERS, FLOAT, ModelTable, Row
from lowbit.bench.metrics import metric_format
from lowbit.bench.peers_nncf import nncf_version
from lowbit.bench.peers_pt2e import torchao_version
from lowbit.bench.targets import Verdict, verdicts


def versions() -> str:
    parts = {"lowbit": __version__, "torch": torch.__version__,
             "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
             "torchao": torchao_version() or "not installed",
             "nncf": nncf_version() or "not installed", "numpy": np.__version__,
             "Python": platform.python_version()}
    return ", ".join(f"{name} {version}" for name, version in parts.items())


def _cells(row: Row, table: ModelTable, metrics: list[str]) -> list[str]:
    if row.error is not None:
        return [f"error: {row.error}".replace("|", "\\|")] + ["-"] * (2 * len(metrics) - 1)
    cells = []
    for key in metrics:
        fmt, value, base = metric_format(key), row.metrics.get(key), table.value(FLOAT, key)
        cells.append("-" if value is None else fmt.value(value))
        cells.append("-" if value is None or base is None else fmt.delta(value - base))
    return cells


def render_table(table: ModelTable) -> str:
    metrics = table.metric_names()
    header = ["contender"] + [h for key in metrics
                              for h in (metric_format(key).label, "Δ vs float")] + ["time (s)"]
    lines = ["| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    for row in table.rows:
        cells = [row.contender, *_cells(row, table, metrics), f"{row.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _verdict_line(verdict: Verdict) -> str:
    return f"- **{verdict.label}** {verdict.target.description}: {verdict.measured}"


def render_model(table: ModelTable) -> str:
    return "\n\n".join([
        f"## {table.model}",
        f"{table.description}. Calibration: {table.calib_samples} samples of the calib split; "
        f"test: {table.test_samples} samples.",
        render_table(table),
        "Targets:\n" + "\n".join(_verdict_line(v) for v in verdicts(table)),
    ])


def provenance(title: str, command: str, started: datetime, seconds: float) -> str:
    """The header of every benchmark report: what ran, when, on what, with which versions."""
    return "\n".join([
        f"# lowbit benchmark: {title}", "",
        f"- command: `{command}`",
        f"- date: {started:%Y-%m-%d %H:%M %Z}",
        f"- versions: {versions()}",
        f"- machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPUs",
        f"- wall time: {seconds:.0f} s",
    ])


def render_tables(tables: Sequence[ModelTable]) -> str:
    counts = [v.label for table in tables for v in verdicts(table)]
    summary = ", ".join(f"{counts.count(label)} {label}" for label in ("PASS", "FAIL", "N/A"))
    head = (f"Targets: {summary}.\n\n"
            "Every contender gets the same calibration inputs and is scored on the whole test "
            "split by the model's own metric; Δ is against the float (torch) row. Cosines are "
            "to the float torch embeddings.")
    contenders = "## Contenders\n\n" + "\n".join(f"- **{c.name}**: {c.summary}"
                                                 for c in CONTENDERS)
    return "\n\n".join([head, *(render_model(t) for t in tables), contenders]) + "\n"
