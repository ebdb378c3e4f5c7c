"""Writes ``report.json`` and the self-contained ``report.html`` into a compile folder."""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.passes.quantize.pipeline import CompileResult
from lowbit.report.figures import collect
from lowbit.report.html_page import render
from lowbit.report.relevance_view import relevance_html

REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


def write_reports(folder: Path, result: CompileResult, source: str,
                  settings: Mapping[str, Any], sample: Mapping[str, np.ndarray],
                  tvm: Mapping[str, Any] | None, bundled: str | None,
                  timings: Mapping[str, float], say: Callable[[str], None]) -> dict[str, Any]:
    """Measure, draw and write both reports; returns the figures written to report.json."""
    figures = collect(result, source, settings, folder, sample, tvm, bundled, timings, say)
    say("drawing the relevance of one sample")
    try:
        rule, fragment = relevance_html(result.float_graph, result.integer_graph, sample)
    except LowbitError as err:  # a model with an op no relevance rule covers
        rule, fragment = "none", f"<p>relevance not available: {html.escape(str(err))}</p>"
    extra = {path.stem: path.read_bytes() for path in sorted(folder.glob("*.png"))}
    (folder / REPORT_JSON).write_text(json.dumps(figures, indent=1) + "\n")
    (folder / REPORT_HTML).write_text(render(figures, rule, fragment, extra))
    return figures
