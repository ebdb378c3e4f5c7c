"""`BundledModel` wiring shared by the digits classifiers: same data, split, cache and metric."""

from collections.abc import Callable

import torch

from lowbit.models.bundled import BundledModel
from lowbit.models.digits_data import (
    INPUT_NAME,
    OUTPUT_NAME,
    digits_split,
    evaluate_accuracy,
    sample_images,
)
from lowbit.models.predict import torch_predictor
from lowbit.models.trained import load_or_train
from lowbit.models.training import TrainConfig


def _score(module: torch.nn.Module) -> dict[str, float]:
    return evaluate_accuracy(torch_predictor(module, (INPUT_NAME,), (OUTPUT_NAME,)))


def digits_model(
    name: str, description: str, build: Callable[[], torch.nn.Module], config: TrainConfig
) -> BundledModel:
    """Classifier `build()` trained with `config` on first use: image [N,1,8,8] -> logits [N,10]."""

    def load() -> torch.nn.Module:
        data = digits_split()
        return load_or_train(name, build, config, data.train_images, data.train_labels, _score)

    return BundledModel(
        name=name,
        description=description,
        input_names=(INPUT_NAME,),
        output_names=(OUTPUT_NAME,),
        load=load,
        sample_inputs=sample_images,
        evaluate=evaluate_accuracy,
    )
