"""Float ONNX export of a bundled model with a dynamic batch axis, shared by the ORT peer."""

import warnings
from pathlib import Path

import torch

from lowbit.models import BundledModel
from lowbit.models.bundled import ArrayDict

OPSET = 17


def export_float_onnx(model: BundledModel, sample: ArrayDict, path: Path) -> Path:
    """Write `model` to `path` with the legacy TorchScript exporter (opset 17).

    The dynamo exporter writes an invalid MiniLM file, so the legacy one is used for all models.
    """
    names = (*model.input_names, *model.output_names)
    args = tuple(torch.from_numpy(sample[name]) for name in model.input_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's DeprecationWarning and tracer noise
        torch.onnx.export(model.load(), args, str(path), input_names=list(model.input_names),
                          output_names=list(model.output_names),
                          dynamic_axes={name: {0: "batch"} for name in names},
                          opset_version=OPSET, dynamo=False)
    return path
