"""The speed suite's machinery, without timing anything for real: repeat counts of the timing
harness, the PASS/FAIL/N/A arithmetic of the speed targets on hand-picked medians, and the
GEMM micro-benchmark's claim that every row computes the same integers (checked against
numpy's int64 product, in onnxruntime and in lowbit's interpreter). Speeds themselves are
measured by ``lowbit bench --suite speed`` and reported in BENCHMARKS.md, never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.bench.gemm_micro import (CASES, ZERO_POINTS, _lowbit_graph, _operands,
                                     onnxruntime_gemm)
from lowbit.bench.speed_suite import SpeedTarget, check
from lowbit.bench.suites import suites
from lowbit.bench.timing import Budget, format_seconds, measure
from lowbit.runtime import run_graph


def counting_call() -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, lambda: calls.append(1)


@pytest.mark.parametrize("budget, repeats", [
    (Budget(seconds=0.0, warmup=2, min_repeats=3, max_repeats=50), 3),   # the floor
    (Budget(seconds=60.0, warmup=1, min_repeats=3, max_repeats=7), 7),   # the ceiling
])
def test_measure_repeats_between_floor_and_ceiling_after_warmup(budget: Budget,
                                                                repeats: int) -> None:
    calls, call = counting_call()
    timing = measure(call, budget)
    assert timing.repeats == repeats and len(calls) == budget.warmup + repeats
    assert timing.median_s >= 0


def test_format_seconds_picks_the_unit() -> None:
    assert [format_seconds(s) for s in (12.34e-6, 0.01234, 2.5)] == ["12.3 µs", "12.34 ms",
                                                                       "2.50 s"]


TARGET = SpeedTarget("m", "mine 1.5x faster than theirs", "mine", "theirs", 1.5, 32)


@pytest.mark.parametrize("mine, theirs, label", [
    (1.0, 1.6, "PASS"), (1.0, 1.5, "PASS"), (1.0, 1.4, "FAIL"), (None, 1.0, "N/A"),
    (2.0, None, "N/A")])
def test_speed_target_verdicts(mine: float | None, theirs: float | None, label: str) -> None:
    medians = {"mine": mine, "theirs": theirs}
    line = check(TARGET, lambda case, contender, batch: medians[contender])
    assert line.startswith(f"- **{label}** m:")


@pytest.mark.parametrize("mine, label", [(1.19, "PASS"), (1.21, "FAIL")])
def test_a_within_1_2x_target_on_a_gemm_shape(mine: float, label: str) -> None:
    target = SpeedTarget("shape", "within 1.2x", "mine", "theirs", 1 / 1.2, None)
    medians = {"mine": mine, "theirs": 1.0}
    assert check(target, lambda case, contender, batch: medians[contender]).startswith(
        f"- **{label}**")


def test_the_suite_is_registered() -> None:
    assert "speed" in suites()


@pytest.fixture(scope="module")
def operands() -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    activations, b = _operands(5, 24, 7, np.random.default_rng(1))
    expected = (activations["int8"].astype(np.int64) - ZERO_POINTS["int8"]) @ b
    return activations, b, expected


def test_every_activation_dtype_carries_the_same_centred_values(operands) -> None:
    activations, _, _ = operands
    centred = {dtype: a.astype(np.int64) - ZERO_POINTS[dtype] for dtype, a in activations.items()}
    assert np.array_equal(centred["int8"], centred["uint8"])


@pytest.mark.parametrize("case", [c for c in CASES if c.build is onnxruntime_gemm],
                         ids=lambda c: c.name)
def test_onnxruntime_cases_compute_the_numpy_product(case, operands) -> None:
    activations, b, expected = operands
    got = case.build(case, activations[case.a_dtype], b)()
    assert got.dtype == np.int32 and np.array_equal(got, expected)


@pytest.mark.parametrize("case", [c for c in CASES if c.build is not onnxruntime_gemm],
                         ids=lambda c: c.name)
def test_lowbit_case_graphs_compute_the_numpy_product(case, operands) -> None:
    """The graphs TVM builds in the benchmark, run by the reference interpreter."""
    activations, b, expected = operands
    graph = _lowbit_graph(case, b)
    feeds = {"a": activations[case.a_dtype]} | ({} if case.constant_b else {"b": b})
    got = run_graph(graph, feeds)[graph.outputs[0]]
    assert got.dtype == np.int32 and np.array_equal(got, expected)
