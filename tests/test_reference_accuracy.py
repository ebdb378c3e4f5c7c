"""Regression guard: every bundled model and bit setting in models/reference_accuracy.json is
re-compiled and re-scored by the model's own metric; none may fall below its recorded value by
more than its tolerance."""

from __future__ import annotations

import pytest

from lowbit.models.reference_accuracy import SETTINGS, measure, recorded


def test_file_covers_every_setting() -> None:
    assert set(recorded()) == {setting.key for setting in SETTINGS}


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda setting: setting.key)
def test_accuracy_is_no_worse_than_recorded(setting) -> None:
    reference = recorded()[setting.key]
    assert reference.options == setting.options
    assert reference.calib_samples == setting.calib_samples
    value = measure(setting)[setting.metric]
    assert value >= reference.value - reference.tolerance, (
        f"{setting.key} {setting.metric} fell to {value:.4f} from {reference.value:.4f}")
