"""The pipeline suite's measuring: a child's peak memory and exit status come from the kernel
(checked on children whose allocation and exit we choose), and the suite is registered."""

from __future__ import annotations

from lowbit.bench.pipeline_suite import measure_child
from lowbit.bench.suites import suites


def test_peak_memory_of_a_child_that_holds_200_mib() -> None:
    held = bytearray(300 * 2**20)  # the parent's own pages must not count for the child
    held[::4096] = b"x" * len(held[::4096])
    usage = measure_child("b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096])")
    assert usage.returncode == 0
    assert 200 * 2**20 <= usage.peak_bytes < 300 * 2**20
    assert usage.seconds > 0


def test_exit_status_and_arguments_of_a_child() -> None:
    assert measure_child("import sys; raise SystemExit(int(sys.argv[1]))", ["3"]).returncode == 3


def test_suite_is_registered() -> None:
    assert "pipeline" in suites()
