"""The ``speed`` suite: latency and throughput of lowbit's TVM INT8 library against onnxruntime
INT8 (its own ``quantize_static`` model), onnxruntime float and torch float, at batch 1 and
batch 32, plus the int8 GEMM micro-benchmark (``gemm_micro``); all in one process.

Every contender is timed the same way (``timing``: warm-up, then repeats until a budget is spent,
median) on the same real test inputs. The issue's speed targets are checked from the measured
medians and printed as PASS or FAIL lines; a target whose rows failed is N/A, never PASS.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from lowbit.bench.contender import Contender
from lowbit.bench.gemm_micro import LOWBIT_LINEAR, ORT_U8S8, SHAPES, bench_gemm, render_gemm
from lowbit.bench.speed_contenders import (LOWBIT_TVM, ORT_INT8, SPEED_CONTENDERS,
                                           TORCH_FLOAT)
from lowbit.bench.suites import suite
from lowbit.bench.timing import Budget, Timing, format_ratio, format_seconds, measure
from lowbit.models import BundledModel, get_model
from lowbit.models.bundled import ArrayDict, PredictFn

BATCHES = (1, 32)
BUDGET = Budget(seconds=3.0, warmup=10, max_repeats=3000)


@dataclass(frozen=True)
class SpeedRow:
    contender: str
    build_s: float
    timings: dict[int, Timing]
    error: str | None = None


@dataclass(frozen=True)
class SpeedTable:
    model: str
    rows: tuple[SpeedRow, ...]

    def median(self, contender: str, batch: int) -> float | None:
        row = next((r for r in self.rows if r.contender == contender), None)
        timing = None if row is None else row.timings.get(batch)
        return None if timing is None else timing.median_s


@dataclass(frozen=True)
class SpeedTarget:
    """``contender`` must be at least ``speedup`` times as fast as ``baseline`` (median
    latency) on ``case``: a bundled model at ``batch``, or a GEMM shape (batch None)."""

    case: str
    description: str
    contender: str
    baseline: str
    speedup: float
    batch: int | None


TARGETS: tuple[SpeedTarget, ...] = (
    *(SpeedTarget(model, f"{LOWBIT_TVM} at least as fast as {ORT_INT8} at batch {batch}",
                  LOWBIT_TVM, ORT_INT8, 1.0, batch)
      for model in ("digits-cnn", "minilm") for batch in BATCHES),
    *(SpeedTarget(model, f"{LOWBIT_TVM} at least 1.5x faster than {TORCH_FLOAT} at batch 32",
                  LOWBIT_TVM, TORCH_FLOAT, 1.5, 32) for model in ("digits-cnn", "minilm")),
    *(SpeedTarget(shape, f"{LOWBIT_LINEAR} within 1.2x of {ORT_U8S8}", LOWBIT_LINEAR, ORT_U8S8,
                  1 / 1.2, None) for shape in SHAPES),
)


def _error_text(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300].replace("|", "\\|")


def _build(model: BundledModel, contender: Contender, calib: ArrayDict
           ) -> tuple[PredictFn | None, float, str | None]:
    start = time.perf_counter()
    try:
        return contender.build(model, calib), time.perf_counter() - start, None
    except Exception as err:  # noqa: BLE001 - a failing contender is a result, not a crash
        print(f"bench {model.name}: {contender.name} failed: {_error_text(err)}",
              file=sys.stderr)
        return None, time.perf_counter() - start, _error_text(err)


def speed_table(model: BundledModel, calib: ArrayDict) -> SpeedTable:
    """Build every contender, then per batch size time each in turn; one that fails at a
    batch size is an error row from there on."""
    inputs = model.sample_inputs(max(BATCHES), "test")
    built, seconds, errors = {}, {}, {}
    for contender in tqdm(SPEED_CONTENDERS, desc=f"speed {model.name}: build",
                          unit="contender", file=sys.stderr, leave=False):
        predict, seconds[contender.name], error = _build(model, contender, calib)
        if predict is None:
            errors[contender.name] = error
        else:
            built[contender.name] = predict
    timings: dict[str, dict[int, Timing]] = {name: {} for name in built}
    for batch in tqdm(BATCHES, desc=f"speed {model.name}: time", unit="batch size",
                      file=sys.stderr, leave=False):
        feeds = {name: array[:batch] for name, array in inputs.items()}
        for name, predict in built.items():
            if name in errors:
                continue
            try:
                timings[name][batch] = measure(functools.partial(predict, feeds), BUDGET)
            except Exception as err:  # noqa: BLE001 - as above
                errors[name] = _error_text(err)
    return SpeedTable(model.name, tuple(
        SpeedRow(c.name, seconds[c.name], timings.get(c.name, {}), errors.get(c.name))
        for c in SPEED_CONTENDERS))


def render_speed_table(table: SpeedTable) -> str:
    header = ["contender", "build (s)"] + [
        h for batch in BATCHES for h in (f"batch {batch} median", "repeats", "samples/s",
                                          f"÷ {LOWBIT_TVM}")]
    lines = [f"### {table.model}", "", "| " + " | ".join(header) + " |",
             "| --- |" + " ---: |" * (len(header) - 1)]
    for row in table.rows:
        cells = [row.contender, f"{row.build_s:.1f}"]
        error = row.error
        for batch in BATCHES:
            timing = row.timings.get(batch)
            if timing is None:  # the error goes in the first batch size without a timing
                cells += [f"error: {error}" if error else "-", "-", "-", "-"]
                error = None
                continue
            cells += [format_seconds(timing.median_s), str(timing.repeats),
                      f"{timing.per_second(batch):,.0f}",
                      format_ratio(timing.median_s, table.median(LOWBIT_TVM, batch))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(target: SpeedTarget, median: Callable[[str, str, int | None], float | None]) -> str:
    """The target's verdict line: PASS, FAIL or N/A with the measured medians."""
    mine = median(target.case, target.contender, target.batch)
    theirs = median(target.case, target.baseline, target.batch)
    if mine is None or theirs is None:
        return f"- **N/A** {target.case}: {target.description}: a row has no timing"
    label = "PASS" if theirs / mine >= target.speedup else "FAIL"
    return (f"- **{label}** {target.case}: {target.description}: {format_seconds(mine)} vs "
            f"{format_seconds(theirs)}, speed-up {theirs / mine:.2f}x "
            f"(needed {target.speedup:.2f}x)")


def machine(load_at_start: float) -> str:
    """Threads and load: other processes on the CPUs slow every row, multi-threaded ones most."""
    import onnxruntime
    import torch
    import tvm

    return (f"{os.cpu_count()} CPUs; torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads, onnxruntime {onnxruntime.__version__} (default intra-op threads), "
            f"TVM {tvm.__version__} (TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS', 'unset')})"
            f"; 1-minute load average {load_at_start:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end")


@suite("speed", "speed of lowbit's TVM INT8 library against onnxruntime and torch")
def speed(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> str:
    load_at_start = os.getloadavg()[0]
    tables = {name: speed_table(get_model(name), calib[name]) for name in names}
    gemm = bench_gemm()

    def median(case: str, contender: str, batch: int | None) -> float | None:
        if batch is None:
            row = next((r for r in gemm if (r.shape, r.case) == (case, contender)), None)
            return None if row is None or row.timing is None or not row.same \
                else row.timing.median_s
        table = tables.get(case)
        return None if table is None else table.median(contender, batch)

    verdicts = [check(t, median) for t in TARGETS if t.batch is None or t.case in tables]
    counts = {label: sum(f"**{label}**" in line for line in verdicts)
              for label in ("PASS", "FAIL", "N/A")}
    return "\n\n".join([
        "## Speed",
        f"Targets: {', '.join(f'{n} {label}' for label, n in counts.items())}. "
        "Latency is the median wall time of one call from numpy inputs to numpy outputs "
        f"({BUDGET.warmup} warm-up calls, then repeats for {BUDGET.seconds:.0f} s, at least "
        f"{BUDGET.min_repeats} and at most {BUDGET.max_repeats}, each contender in its own "
        "block); samples/s is "
        "batch / median; ÷ columns are each row's median over lowbit's (above 1: lowbit is "
        "faster); in the GEMM table, over onnxruntime's u8 x s8 MatMulInteger. Inputs are real "
        f"test samples. {machine(load_at_start)}.",
        "Targets:\n" + "\n".join(verdicts),
        *(render_speed_table(table) for table in tables.values()),
        "### int8 GEMM micro-benchmark\n\n" + render_gemm(gemm),
        "Contenders:\n" + "\n".join(f"- **{c.name}**: {c.summary}" for c in SPEED_CONTENDERS),
    ]) + "\n"
