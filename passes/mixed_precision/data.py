"""Labelled slices of a bundled model's calibration split for sensitivity and accuracy checks.

Invariant: nothing here reads a test split. Samples ``[0, calib)`` of the calibration split are
what calibration and the Hessian see; samples ``[calib, calib + held)`` are held back and are the
only data an accuracy-drop decision is measured on. Labels exist for the digits models (their
calibration split is the training set's head); other models get ``labels = None``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict
from lowbit.models.digits_data import digits_split, sample_images


@dataclass(frozen=True)
class Slice:
    feeds: ArrayDict
    labels: np.ndarray | None

    def __len__(self) -> int:
        return len(next(iter(self.feeds.values())))


def calibration_slice(model: BundledModel, start: int, stop: int) -> Slice:
    """Samples ``[start, stop)`` of the model's calibration split, with labels if it has any."""
    try:
        feeds = {k: v[start:stop] for k, v in model.sample_inputs(stop, "calib").items()}
    except ValueError as err:
        raise LowbitError(f"{model.name}: cannot take calibration samples {start}..{stop}: "
                          f"{err}") from None
    labels = digits_split().train_labels[start:stop].copy() \
        if model.sample_inputs is sample_images else None
    return Slice(feeds, labels)


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Percent of rows whose largest logit is the label's."""
    return 100.0 * float((np.asarray(logits).argmax(axis=1) == labels).mean())
