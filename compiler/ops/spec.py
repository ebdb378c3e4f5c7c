"""The op table: one ``OpSpec`` row per op, holding everything lowbit knows about that op.

A row has a shape-inference function and a float reference kernel (numpy). Later stages add
their own columns as separate tables keyed by op name (integer kernel, relevance rule, TVM
emitter, ONNX exporter); ``lowbit.compiler.ops.coverage`` reports which rows lack which column.
Adding an op means adding one row here, never a branch in an interpreter or importer.

Both column functions are written in natural form, tensors positional and attributes as
keywords::

    def infer_conv(x: TensorType, w: TensorType, b: TensorType | None, *, strides, ...) -> TensorType
    def eval_conv(x: ndarray, w: ndarray, b: ndarray | None, *, strides, ...) -> ndarray

A kernel that declares a keyword ``batch`` also receives the run's batch size (needed where an
attribute shape mentions the symbolic batch dimension).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.types import TensorType

InferFn = Callable[..., TensorType | tuple[TensorType, ...]]
KernelFn = Callable[..., np.ndarray | tuple[np.ndarray, ...]]


@dataclass(frozen=True)
class OpSpec:
    """One row of the op table.

    ``inputs`` names the tensor operands in order; a trailing ``?`` marks an optional one
    (absent operands are the empty value name ``""``). ``attrs`` lists every attribute with its
    default; ``REQUIRED`` marks attributes without one.
    """

    name: str
    summary: str
    inputs: tuple[str, ...]
    infer: InferFn
    evaluate: KernelFn
    attrs: Mapping[str, Any] = field(default_factory=dict)
    num_outputs: int = 1

    @property
    def min_inputs(self) -> int:
        return sum(1 for name in self.inputs if not name.endswith("?"))

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ValueError(f"unknown attribute(s) {sorted(unknown)} for op {self.name}")
        merged = {**self.attrs, **attrs}
        missing = [k for k, v in merged.items() if v is REQUIRED]
        if missing:
            raise ValueError(f"missing attribute(s) {missing} for op {self.name}")
        return merged

    def infer_types(self, inputs: Sequence[TensorType | None], attrs: Mapping[str, Any]
                    ) -> tuple[TensorType, ...]:
        return _as_tuple(self.infer(*_padded(inputs, self.inputs), **attrs))

    def run(self, inputs: Sequence[np.ndarray | None], attrs: Mapping[str, Any],
            batch: int) -> tuple[np.ndarray, ...]:
        extra = {"batch": batch} if _wants_batch(self.evaluate) else {}
        return _as_tuple(self.evaluate(*_padded(inputs, self.inputs), **attrs, **extra))


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

OP_TABLE: dict[str, OpSpec] = {}


def register(spec: OpSpec) -> OpSpec:
    if spec.name in OP_TABLE:
        raise ValueError(f"op {spec.name} registered twice")
    OP_TABLE[spec.name] = spec
    return spec


def _padded(values: Sequence[Any], names: tuple[str, ...]) -> list[Any]:
    return list(values) + [None] * (len(names) - len(values))


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return value if isinstance(value, tuple) else (value,)


def _wants_batch(fn: Callable[..., Any]) -> bool:
    return "batch" in inspect.signature(fn).parameters
