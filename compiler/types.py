"""Typed values of the IR: a dtype name and a shape whose dims may be symbolic (``N``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.compiler.dims import Shape, format_shape

FLOAT_DTYPES = frozenset({"float16", "float32", "float64"})
INT_DTYPES = frozenset({"int4", "int8", "uint8", "int16", "int32", "int64"})
DTYPES = FLOAT_DTYPES | INT_DTYPES | {"bool"}


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: Shape

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_shape(self, shape: Shape) -> "TensorType":
        return TensorType(self.dtype, tuple(shape))

    def with_dtype(self, dtype: str) -> "TensorType":
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"


def type_of_array(array: np.ndarray) -> TensorType:
    return TensorType(str(array.dtype), tuple(int(d) for d in array.shape))
