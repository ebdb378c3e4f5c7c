"""Smoke test of the accuracy benchmark: it runs end to end on digits-cnn with a few
calibration samples and yields a well-formed table and report. No accuracy thresholds here;
the targets are checked in the benchmark's own output, and their logic on hand-made tables.
The peers themselves are tested in ``test_peers.py``."""

from __future__ import annotations

import argparse
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from lowbit.bench.accuracy import (CONTENDERS, FLOAT, LOWBIT_INT8, LOWBIT_W4A8, NNCF,
                                   NNCF_TRANSFORMER, ORT_QDQ, ORT_W4A8, PT2E, PT2E_W4A8,
                                   ModelTable, Row, bench_model)
from lowbit.bench.neighbours import neighbour_agreement
from lowbit.bench.report import provenance, render_tables
from lowbit.bench.targets import TARGETS, verdicts
from lowbit.cli.bench_cmd import COMMAND
from lowbit.compiler.errors import LowbitError
from lowbit.models import get_model

CALIB_SAMPLES = 8

# the PT2E peer imports torch._inductor, whose import of torch.utils.mkldnn warns about torch.jit
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated")


@pytest.fixture(scope="module")
def table() -> ModelTable:
    model = get_model("digits-cnn")
    return bench_model(model, model.sample_inputs(CALIB_SAMPLES, "calib"))


def test_table_has_one_well_formed_row_per_contender(table: ModelTable) -> None:
    assert [row.contender for row in table.rows] == [c.name for c in CONTENDERS]
    assert table.rows[0].contender == FLOAT and table.rows[0].error is None
    assert table.calib_samples == CALIB_SAMPLES and table.test_samples > 0
    assert all(row.error is None for row in table.rows if row.contender.startswith("lowbit"))
    for row in table.rows:
        assert row.seconds >= 0
        if row.error is None:
            assert set(row.metrics) == {"accuracy"}, row
            assert 0.0 <= row.metrics["accuracy"] <= 1.0 and math.isfinite(row.metrics["accuracy"])
            assert row.test_samples == table.test_samples
        else:
            assert row.error and not row.metrics and row.test_samples == 0


def test_report_has_table_and_one_verdict_per_target(table: ModelTable) -> None:
    text = provenance("accuracy", "lowbit bench digits-cnn", datetime.now(timezone.utc), 1.0
                      ) + "\n\n" + render_tables([table])
    lines = text.splitlines()
    assert "## digits-cnn" in lines and "- command: `lowbit bench digits-cnn`" in lines
    assert "| contender | top-1 accuracy | Δ vs float | time (s) |" in lines
    assert all(any(line.startswith(f"| {c.name} |") for line in lines) for c in CONTENDERS)
    verdicts = [line for line in lines if line.startswith(("- **PASS**", "- **FAIL**",
                                                           "- **N/A**"))]
    assert len(verdicts) == sum(t.model == "digits-cnn" for t in TARGETS)


def _hand_table(accuracy: dict[str, float]) -> ModelTable:
    rows = tuple(Row(name, {"accuracy": value}, 0.0, 450) for name, value in accuracy.items())
    return ModelTable("digits-cnn", "hand-made", 8, rows)


HAND_ACCURACY = {FLOAT: 0.990, LOWBIT_INT8: 0.985, ORT_QDQ: 0.986, NNCF: 0.990,
                 NNCF_TRANSFORMER: 0.987, PT2E: 0.984, LOWBIT_W4A8: 0.970, ORT_W4A8: 0.960,
                 PT2E_W4A8: 0.970}


@pytest.mark.parametrize("changes, labels", [
    # 0.5 pt below float (allowed); 0.5 pt below NNCF, the best INT8 peer (0.3 allowed);
    # W4A8 level with PT2E: not better
    ({}, ["PASS", "FAIL", "FAIL"]),
    # 0.2 pt below the best INT8 peer, now NNCF's transformer row; W4A8 0.1 pt above PT2E
    ({NNCF: 0.980, LOWBIT_W4A8: 0.971}, ["PASS", "PASS", "PASS"]),
    ({NNCF: 0.980, NNCF_TRANSFORMER: 0.989, LOWBIT_W4A8: 0.971}, ["PASS", "FAIL", "PASS"]),
    ({LOWBIT_INT8: 0.979, PT2E_W4A8: 0.950}, ["FAIL", "FAIL", "PASS"]),
    ({NNCF: None, ORT_W4A8: None}, ["PASS", "N/A", "N/A"]),
    ({LOWBIT_INT8: None, LOWBIT_W4A8: None}, ["N/A", "N/A", "N/A"]),
])
def test_targets_against_best_peer(changes: dict[str, float | None], labels: list[str]) -> None:
    accuracy = {name: value for name, value in (HAND_ACCURACY | changes).items()
                if value is not None}
    got = {v.target.description: v.label for v in verdicts(_hand_table(accuracy))}
    assert list(got.values()) == labels, got


def test_neighbour_agreement_hand_example() -> None:
    # reference neighbours: 0<->1, 2<->3; in the other set row 3 sits between 0/1 and 2 and is
    # nearest to row 1 (cos 0.78 vs 0.71), so only row 3 disagrees -> 3 of 4
    reference = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    moved = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.5, 0.5]])
    assert neighbour_agreement(moved, reference) == {"nn_agreement": 0.75}
    assert neighbour_agreement(reference, reference) == {"nn_agreement": 1.0}


@pytest.mark.parametrize("model, samples, suite", [("no-such-model", None, "accuracy"),
                                                   ("digits-cnn", 10**6, "accuracy"),
                                                   ("digits-cnn", None, "no-such-suite")])
def test_bad_arguments_are_user_errors(model: str, samples: int | None, suite: str) -> None:
    args = argparse.Namespace(model=model, calib_samples=samples, out=None, suite=suite)
    with pytest.raises(LowbitError):
        COMMAND.run(args)
