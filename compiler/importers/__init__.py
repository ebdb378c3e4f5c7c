"""Capture front ends: torch.export and ONNX onto the one lowbit op vocabulary."""

from lowbit.compiler.importers.sources import capture

__all__ = ["capture"]
