"""The `Contender` record: one way of turning a bundled model plus calibration data into a
batched predict function, named as it appears in the benchmark table."""

from collections.abc import Callable
from dataclasses import dataclass

from lowbit.models import BundledModel, torch_predictor
from lowbit.models.bundled import ArrayDict, PredictFn

BuildFn = Callable[[BundledModel, ArrayDict], PredictFn]


@dataclass(frozen=True)
class Contender:
    """`build(model, calib)` prepares (exports, calibrates, quantizes) and returns a predictor;
    `summary` says in one line how, for the report."""

    name: str
    summary: str
    build: BuildFn


def float_torch(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """The float eager torch module: the reference every delta is taken against."""
    del calib  # the float model needs no calibration
    return torch_predictor(model.load(), model.input_names, model.output_names)
