"""The ``accuracy`` suite: float, lowbit INT8 and W4A8 and the peer quantizers at the same
settings side by side, with the issue's targets checked (tables from ``accuracy``, markdown
from ``report``, the picture from ``accuracy_plot``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lowbit.bench.accuracy import bench_model
from lowbit.bench.accuracy_plot import accuracy_png
from lowbit.bench.report import render_tables
from lowbit.bench.suites import SuiteOutput, suite
from lowbit.models import get_model
from lowbit.models.bundled import ArrayDict


@suite("accuracy", "accuracy of lowbit INT8 and W4A8 against float and peer quantizers")
def accuracy(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> SuiteOutput:
    tables = [bench_model(get_model(name), calib[name]) for name in names]
    return SuiteOutput(render_tables(tables), {"accuracy": accuracy_png(tables)})
