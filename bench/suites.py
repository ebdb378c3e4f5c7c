"""Benchmark suites of ``lowbit bench --suite NAME``: one row per suite, each in its own module.

A suite takes the chosen bundled model names and their calibration inputs (the same inputs for
every contender) and returns its markdown sections, or a ``SuiteOutput`` that adds pictures
(PNG bytes by name); ``lowbit bench`` adds the provenance header (command, date, versions,
machine, wall time) and writes the pictures beside ``--out``. A suite module registers itself with ``suite``
and is listed in ``SUITE_MODULES`` so that it is imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from lowbit.models.bundled import ArrayDict


@dataclass(frozen=True)
class SuiteOutput:
    markdown: str
    figures: Mapping[str, bytes] = field(default_factory=dict)
    """PNG bytes by a short name (``accuracy``): written as ``<out stem>-<name>.png``."""


SuiteRun = Callable[[Sequence[str], Mapping[str, ArrayDict]], "str | SuiteOutput"]


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    run: SuiteRun


SUITE_MODULES = ("lowbit.bench.accuracy_suite", "lowbit.bench.speed_suite",
                 "lowbit.bench.passes_suite", "lowbit.bench.mixed_suite",
                 "lowbit.bench.blocks_suite", "lowbit.bench.pipeline_suite")
_SUITES: dict[str, Suite] = {}


def suite(name: str, title: str) -> Callable[[SuiteRun], SuiteRun]:
    def register(run: SuiteRun) -> SuiteRun:
        _SUITES[name] = Suite(name, title, run)
        return run
    return register


def suite_output(result: str | SuiteOutput) -> SuiteOutput:
    """A suite's result as a ``SuiteOutput`` (a plain string has no pictures)."""
    return result if isinstance(result, SuiteOutput) else SuiteOutput(result)


def suites() -> dict[str, Suite]:
    for module in SUITE_MODULES:
        importlib.import_module(module)
    return dict(_SUITES)
