"""Regression guard: every bundled model and bit setting in models/reference_accuracy.json is
re-compiled and re-scored by the model's own metric; none may fall below its recorded value by
more than its tolerance. The recorded value is the one measured with the same weights where
the file has one (a machine can train other digits weights from the same seed), else the
first recording's."""

from __future__ import annotations

import pytest

from lowbit.models.reference_accuracy import (SETTINGS, measure, recorded, recorded_rows,
                                              reference_for)


def test_file_covers_every_setting() -> None:
    assert set(recorded()) == {setting.key for setting in SETTINGS}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.key)
def test_accuracy_is_no_worse_than_recorded(setting) -> None:
    metrics, weights = measure(setting)
    reference = reference_for(setting.key, weights)
    assert reference.options == setting.options
    assert reference.calib_samples == setting.calib_samples
    value = metrics[setting.metric]
    assert value >= reference.value - reference.tolerance, (
        f"{setting.key} {setting.metric} fell to {value:.4f} from {reference.value:.4f}")


def test_rows_for_other_weights_fall_back_to_the_first_recording() -> None:
    first = recorded()["digits-cnn/W8A8"]
    assert first.weights is None
    assert reference_for("digits-cnn/W8A8", "no such weights") == first
    named = [row for row in recorded_rows().values() if row.weights is not None]
    for row in named:
        assert reference_for(row.key, row.weights) == row
