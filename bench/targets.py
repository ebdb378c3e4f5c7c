"""The issue's accuracy targets, checked against the benchmark tables.

A target either bounds how far lowbit INT8 may fall below a baseline row (float torch, or
onnxruntime QDQ) or sets a floor on a metric. Rising above the baseline always passes. A target
whose rows have no result is N/A, never PASS.
"""

from dataclasses import dataclass

from lowbit.bench.accuracy import FLOAT, LOWBIT_INT8, ORT_QDQ, ModelTable
from lowbit.bench.metrics import metric_format

SLACK = 1e-12  # float rounding of differences such as 0.9888... - 0.9844...


@dataclass(frozen=True)
class Target:
    """`contender`'s `metric` may be at most `limit` below `baseline`'s, or with no baseline,
    must be at least `limit`."""

    model: str
    description: str
    metric: str
    limit: float
    baseline: str | None
    contender: str = LOWBIT_INT8


@dataclass(frozen=True)
class Verdict:
    target: Target
    measured: str
    passed: bool | None

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]


TARGETS: tuple[Target, ...] = (
    Target("digits-cnn", "INT8 top-1 at most 0.5 points below float", "accuracy", 0.005, FLOAT),
    Target("digits-cnn", "lowbit INT8 at most 0.3 points below onnxruntime QDQ", "accuracy",
           0.003, ORT_QDQ),
    Target("digits-vit", "INT8 top-1 at most 1 point below float", "accuracy", 0.01, FLOAT),
    Target("digits-vit", "lowbit INT8 at most 0.3 points below onnxruntime QDQ", "accuracy",
           0.003, ORT_QDQ),
    Target("minilm", "INT8 mean cosine to float >= 0.99", "mean_cosine_to_float", 0.99, None),
    Target("minilm", "INT8 nearest-neighbour agreement >= 95%", "nn_agreement", 0.95, None),
    Target("minilm", "lowbit INT8 mean cosine at most 0.005 below onnxruntime QDQ",
           "mean_cosine_to_float", 0.005, ORT_QDQ),
)


def check(target: Target, table: ModelTable) -> Verdict:
    fmt = metric_format(target.metric)
    value = table.value(target.contender, target.metric)
    if value is None:
        return Verdict(target, f"no {target.contender} result", None)
    if target.baseline is None:
        return Verdict(target, f"{fmt.value(value)} (floor {fmt.value(target.limit)})",
                       value >= target.limit - SLACK)
    base = table.value(target.baseline, target.metric)
    if base is None:
        return Verdict(target, f"no {target.baseline} result", None)
    measured = (f"{fmt.value(value)} vs {target.baseline} {fmt.value(base)}: "
                f"{fmt.delta(value - base)} (allowed {fmt.delta(-target.limit)})")
    return Verdict(target, measured, base - value <= target.limit + SLACK)


def verdicts(table: ModelTable) -> list[Verdict]:
    """The verdict of every target on `table`'s model."""
    return [check(target, table) for target in TARGETS if target.model == table.model]
