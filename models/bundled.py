"""The `BundledModel` record: how to load, feed and score one bundled real model."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

ArrayDict = dict[str, np.ndarray]
PredictFn = Callable[[ArrayDict], ArrayDict]


@dataclass(frozen=True)
class BundledModel:
    """A real model shipped with lowbit, with its data and its accuracy metric.

    `load()` returns a fresh eval-mode module whose `forward` takes the inputs in `input_names`
    order and returns one tensor (or a tuple in `output_names` order); trainable models are trained
    on first use and cached on disk. `sample_inputs(count, split)` returns `count` real samples of
    split "calib" or "test", stacked along axis 0. `evaluate(predict)` runs a batched predict
    function over the whole held-out test split and returns the model's metrics.
    """

    name: str
    description: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    load: Callable[[], torch.nn.Module]
    sample_inputs: Callable[[int, str], ArrayDict]
    evaluate: Callable[[PredictFn], dict[str, float]]
