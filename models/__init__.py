"""Bundled real models: two digits classifiers trained on first use, and MiniLM sentence embeddings.

Each `BundledModel` carries its loader, real calibration/test inputs and its accuracy metric.
"""

from lowbit.models.bundled import BundledModel
from lowbit.models.predict import torch_predictor
from lowbit.models.registry import UnknownModelError, get_model, model_names

__all__ = ["BundledModel", "UnknownModelError", "get_model", "model_names", "torch_predictor"]
