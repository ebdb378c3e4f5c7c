"""The pipeline suite's measuring: a child's peak memory and exit status come from the kernel
(checked on children whose allocation and exit we choose), and the suite is registered."""

from __future__ import annotations

import sys

from lowbit.bench.pipeline_suite import measure_child
from lowbit.bench.suites import suites


def test_peak_memory_of_a_child_that_holds_200_mib() -> None:
    usage = measure_child([sys.executable, "-c",
                           "b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert usage.returncode == 0
    assert 200 * 2**20 <= usage.peak_bytes < 600 * 2**20
    assert usage.seconds > 0


def test_exit_status_of_a_failing_child() -> None:
    assert measure_child([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3


def test_suite_is_registered() -> None:
    assert "pipeline" in suites()
