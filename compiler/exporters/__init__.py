"""Exporters: lowbit graphs to other formats (ONNX, bit-exact with the interpreter)."""

from lowbit.compiler.exporters.onnx_export import (ONNX_EXPORT_RULES, OPSET, export_onnx,
                                                   to_onnx_model)

__all__ = ["ONNX_EXPORT_RULES", "OPSET", "export_onnx", "to_onnx_model"]
