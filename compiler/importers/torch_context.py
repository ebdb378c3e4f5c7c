"""What a torch.export conversion rule sees: the fx node, its arguments as lowbit values.

Rules live in ``torch_rules``; this module maps fx arguments (nodes, Python scalars, symbolic
sizes) onto lowbit values and types, so each rule is a few lines over lowbit ops.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch
import torch.fx

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.dims import Dim, Shape, Sym
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.types import TensorType

TORCH_TO_NUMPY = {
    torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
    torch.int64: "int64", torch.int32: "int32", torch.int16: "int16", torch.int8: "int8",
    torch.uint8: "uint8", torch.bool: "bool",
}


def numpy_dtype(dtype: torch.dtype) -> str:
    if dtype not in TORCH_TO_NUMPY:
        raise LowbitError(f"dtype {dtype} is not supported")
    return TORCH_TO_NUMPY[dtype]


@dataclass
class SymbolTable:
    """Maps torch's symbolic sizes onto lowbit dims; only the batch symbol is allowed."""

    batch: sympy.Symbol | None = None

    def dim(self, size: int | torch.SymInt) -> Dim:
        if isinstance(size, int):
            return size
        expr = sympy.sympify(size.node.expr)
        if expr.is_Integer:
            return int(expr)
        if self.batch is None and expr.is_Symbol:
            self.batch = expr
        coeff = sympy.simplify(expr / self.batch) if self.batch is not None else None
        if coeff is None or not coeff.is_Integer:
            raise LowbitError(f"dimension {expr} is not a multiple of the batch size; "
                              "only the batch (axis 0 of inputs) may be dynamic")
        return Sym(int(coeff))

    def shape(self, sizes: Sequence[int | torch.SymInt]) -> Shape:
        return tuple(self.dim(s) for s in sizes)


class RuleContext:
    """One fx node being converted. ``value`` turns any argument into a lowbit value name."""

    def __init__(self, builder: GraphBuilder, node: torch.fx.Node, values: Mapping[Any, Any],
                 symbols: SymbolTable, origin: int) -> None:
        self.builder = builder
        self.node = node
        self._values = values
        self.symbols = symbols
        self.origin = origin

    @property
    def args(self) -> tuple[Any, ...]:
        return tuple(self.node.args)

    def arg(self, index: int, name: str, default: Any = None) -> Any:
        if len(self.node.args) > index:
            return self.node.args[index]
        return self.node.kwargs.get(name, default)

    def type_of_meta(self, meta: Any) -> TensorType:
        return TensorType(numpy_dtype(meta.dtype), self.symbols.shape(meta.shape))

    @property
    def out_type(self) -> TensorType:
        meta = self.node.meta["val"]
        if isinstance(meta, (tuple, list)):
            meta = meta[0]
        return self.type_of_meta(meta)

    @property
    def out_shape(self) -> Shape:
        return self.out_type.shape

    def value(self, arg: Any, dtype: str | None = None) -> str:
        """A lowbit value for an fx argument; scalars become constants of ``dtype``."""
        if arg is None:
            return ""
        if isinstance(arg, torch.fx.Node):
            name = self._values[arg]
            if isinstance(name, tuple):
                raise LowbitError("multi-output value used directly", node=arg.name)
            if dtype is not None and self.builder.type_of(name).dtype != dtype:
                return self.cast(name, dtype)
            return name
        if isinstance(arg, (bool, int, float)):
            return self.builder.add_constant(np.array(arg, dtype=dtype or "float32"), "scalar")
        raise LowbitError(f"unsupported argument {arg!r}", node=self.node.name,
                          op=str(self.node.target))

    def cast(self, value: str, dtype: str) -> str:
        constant = self.builder.constant_value(value)
        if constant is not None:
            return self.builder.add_constant(constant.astype(dtype), value)
        return self.emit("cast", [value], {"to": dtype})

    def emit(self, op: str, inputs: Sequence[str], attrs: Mapping[str, Any] | None = None) -> str:
        return self.builder.add(op, inputs, self.origin, attrs, hint=self.node.name)

    def constant(self, array: np.ndarray, hint: str) -> str:
        return self.builder.add_constant(array, f"{self.node.name}.{hint}")
