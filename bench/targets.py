"""The issue's accuracy targets, checked against the benchmark tables.

A target bounds how far a lowbit row may fall below the best of its baseline rows (float torch,
or every peer of the same bit setting), or, with `strict`, requires it to beat that best row
outright; with no baseline it sets a floor on a metric. A target whose rows lack a result
(lowbit's, or any baseline's) is N/A, never PASS. Every metric here is higher-is-better.
"""

from dataclasses import dataclass

from lowbit.bench.accuracy import (FLOAT, INT8_PEERS, LOWBIT_INT8, LOWBIT_W4A8, W4A8_PEERS,
                                   ModelTable)
from lowbit.bench.metrics import metric_format

SLACK = 1e-12  # float rounding of differences such as 0.9888... - 0.9844...


@dataclass(frozen=True)
class Target:
    """`contender`'s `metric` may be at most `limit` below the best of `baselines` (with
    `strict`: must exceed it by more than `-limit`, i.e. beat it when `limit` is 0); with no
    baselines it must be at least `limit`."""

    model: str
    description: str
    metric: str
    limit: float
    baselines: tuple[str, ...] = ()
    contender: str = LOWBIT_INT8
    strict: bool = False


@dataclass(frozen=True)
class Verdict:
    target: Target
    measured: str
    passed: bool | None

    @property
    def label(self) -> str:
        return {True: "PASS", False: "FAIL", None: "N/A"}[self.passed]


def _int8_vs_peers(model: str, metric: str, limit: float, allowed: str) -> Target:
    return Target(model, f"lowbit INT8 at most {allowed} below the best INT8 peer", metric,
                  limit, INT8_PEERS)


def _w4a8_beats_peers(model: str, metric: str) -> Target:
    return Target(model, "lowbit W4A8 better than every W4A8 peer", metric, 0.0, W4A8_PEERS,
                  LOWBIT_W4A8, strict=True)


TARGETS: tuple[Target, ...] = (
    Target("digits-cnn", "INT8 top-1 at most 0.5 points below float", "accuracy", 0.005,
           (FLOAT,)),
    _int8_vs_peers("digits-cnn", "accuracy", 0.003, "0.3 points"),
    _w4a8_beats_peers("digits-cnn", "accuracy"),
    Target("digits-vit", "INT8 top-1 at most 1 point below float", "accuracy", 0.01, (FLOAT,)),
    _int8_vs_peers("digits-vit", "accuracy", 0.003, "0.3 points"),
    _w4a8_beats_peers("digits-vit", "accuracy"),
    Target("minilm", "INT8 mean cosine to float >= 0.99", "mean_cosine_to_float", 0.99),
    Target("minilm", "INT8 nearest-neighbour agreement >= 95%", "nn_agreement", 0.95),
    _int8_vs_peers("minilm", "mean_cosine_to_float", 0.005, "0.005 mean cosine"),
    _w4a8_beats_peers("minilm", "mean_cosine_to_float"),
)


def _best_baseline(target: Target, table: ModelTable) -> tuple[str, float] | str:
    """The best baseline row and its value, or the text naming the rows without a result."""
    values = {name: table.value(name, target.metric) for name in target.baselines}
    missing = [name for name, value in values.items() if value is None]
    if missing:
        return f"no {', '.join(missing)} result"
    return max(((name, value) for name, value in values.items() if value is not None),
               key=lambda item: item[1])


def check(target: Target, table: ModelTable) -> Verdict:
    fmt = metric_format(target.metric)
    value = table.value(target.contender, target.metric)
    if value is None:
        return Verdict(target, f"no {target.contender} result", None)
    if not target.baselines:
        return Verdict(target, f"{fmt.value(value)} (floor {fmt.value(target.limit)})",
                       value >= target.limit - SLACK)
    best = _best_baseline(target, table)
    if isinstance(best, str):
        return Verdict(target, best, None)
    name, base = best
    margin = value - base
    bound = fmt.delta(0.0 - target.limit)  # 0.0 - 0.0 prints as +0.00, not -0.00
    allowed = f"must be above {bound}" if target.strict else f"allowed {bound}"
    measured = f"{fmt.value(value)} vs {name} {fmt.value(base)}: {fmt.delta(margin)} ({allowed})"
    passed = (margin > -target.limit + SLACK if target.strict
              else margin >= -target.limit - SLACK)
    return Verdict(target, measured, passed)


def verdicts(table: ModelTable) -> list[Verdict]:
    """The verdict of every target on `table`'s model."""
    return [check(target, table) for target in TARGETS if target.model == table.model]
