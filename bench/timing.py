"""Wall-clock timing, the way every speed row is measured: warm-up calls first, then repeats of
the one call until a time budget is spent, within a floor and a ceiling on their number; the
median is the latency. Contenders are timed one after the other, each in its own block: calls
of different libraries alternated on 2 cores slow each other (one library's idle worker
threads spin while the next one's run), so they are not interleaved. One process; each library
uses its own default threads.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    median_s: float
    repeats: int

    def per_second(self, items: int) -> float:
        """Throughput: ``items`` processed per call, per second of median latency."""
        return items / self.median_s


@dataclass(frozen=True)
class Budget:
    """How long to measure: ``warmup`` calls, then ``seconds`` of repeats, at least
    ``min_repeats`` and at most ``max_repeats`` of them."""

    seconds: float
    warmup: int = 1
    min_repeats: int = 3
    max_repeats: int = 200


def measure(call: Callable[[], object], budget: Budget) -> Timing:
    for _ in range(budget.warmup):
        call()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < budget.max_repeats and (
            len(samples) < budget.min_repeats or spent < budget.seconds):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return Timing(statistics.median(samples), len(samples))


def format_seconds(seconds: float) -> str:
    """Latency with a unit that keeps three significant digits readable."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def format_ratio(value: float | None, reference: float | None) -> str:
    """``value / reference`` as ``1.23x``, or ``-`` where either is missing."""
    return "-" if value is None or reference is None else f"{value / reference:.2f}x"
