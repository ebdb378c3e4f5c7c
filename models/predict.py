"""Adapter from a torch module to the batched numpy predict function that `evaluate` takes."""

from collections.abc import Sequence

import numpy as np
import torch

from lowbit.models.bundled import ArrayDict, PredictFn


def torch_predictor(
    module: torch.nn.Module, input_names: Sequence[str], output_names: Sequence[str]
) -> PredictFn:
    """A predict function running `module` on named numpy inputs, returning named numpy outputs."""

    def predict(inputs: ArrayDict) -> ArrayDict:
        args = [torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in input_names]
        with torch.no_grad():
            result = module(*args)
        outputs = result if isinstance(result, tuple) else (result,)
        return {name: out.numpy() for name, out in zip(output_names, outputs, strict=True)}

    return predict
