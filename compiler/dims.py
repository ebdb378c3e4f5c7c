"""Tensor dimensions: static integers or multiples of the symbolic batch size ``N``.

Only the batch dimension is symbolic in lowbit. Ops that fold the batch into another axis
(attention heads reshaped to ``[N*12, S, D]``) produce ``Sym(12)``, so shape inference stays
exact without a general symbolic algebra. Products of two symbols are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BATCH = "N"


@dataclass(frozen=True, order=True)
class Sym:
    """``coeff * N``: a dimension proportional to the batch size."""

    coeff: int = 1

    def __str__(self) -> str:
        return BATCH if self.coeff == 1 else f"{self.coeff}*{BATCH}"

    def __repr__(self) -> str:
        return str(self)


Dim = int | Sym
Shape = tuple[Dim, ...]

_SYM_TEXT = re.compile(rf"^(?:(\d+)\*)?{BATCH}$")


def parse_dim(value: int | str) -> Dim:
    """Inverse of ``str(dim)`` for serialized shapes."""
    if isinstance(value, int):
        return value
    match = _SYM_TEXT.match(value)
    if match is None:
        raise ValueError(f"not a dimension: {value!r}")
    return Sym(int(match.group(1) or 1))


def dim_to_json(dim: Dim) -> int | str:
    return dim if isinstance(dim, int) else str(dim)


def is_static(shape: Shape) -> bool:
    return all(isinstance(d, int) for d in shape)


def multiply(a: Dim, b: Dim) -> Dim:
    if isinstance(a, Sym) and isinstance(b, Sym):
        raise ValueError(f"product of two batch-sized dimensions {a} x {b}")
    if isinstance(a, Sym) or isinstance(b, Sym):
        sym, factor = (a, b) if isinstance(a, Sym) else (b, a)
        if factor <= 0:  # type: ignore[operator]
            raise ValueError(f"batch-sized dimension {sym} times {factor}")
        return Sym(sym.coeff * factor)  # type: ignore[union-attr, operator]
    return a * b


def product(dims: Shape) -> Dim:
    total: Dim = 1
    for d in dims:
        total = multiply(total, d)
    return total


def divide(a: Dim, b: Dim) -> Dim:
    """Exact division of dimensions; raises ValueError when it does not divide."""
    if isinstance(b, Sym):
        if not isinstance(a, Sym) or a.coeff % b.coeff:
            raise ValueError(f"{a} is not divisible by {b}")
        return a.coeff // b.coeff
    if isinstance(a, Sym):
        if a.coeff % b:
            raise ValueError(f"{a} is not divisible by {b}")
        return Sym(a.coeff // b)
    if b == 0 or a % b:
        raise ValueError(f"{a} is not divisible by {b}")
    return a // b


def concrete(dim: Dim, batch: int) -> int:
    """The size of ``dim`` for a run with the given batch size."""
    return dim.coeff * batch if isinstance(dim, Sym) else dim


def concrete_shape(shape: Shape, batch: int) -> tuple[int, ...]:
    return tuple(concrete(d, batch) for d in shape)


def broadcast(*shapes: Shape) -> Shape:
    """Numpy broadcasting over dimensions that may be symbolic."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    out: list[Dim] = []
    for axis_dims in zip(*padded):
        sizes = {d for d in axis_dims if d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {' and '.join(map(format_shape, shapes))} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out)


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def batch_of(shape: tuple[int, ...], declared: Shape) -> int | None:
    """The batch size implied by a concrete shape for a declared (possibly symbolic) shape."""
    for got, want in zip(shape, declared):
        if isinstance(want, Sym):
            return got // want.coeff if got % want.coeff == 0 else None
    return None


__all__ = [
    "BATCH", "Sym", "Dim", "Shape", "parse_dim", "dim_to_json", "is_static", "multiply",
    "product", "divide", "concrete", "concrete_shape", "broadcast", "format_shape",
    "normalize_axis", "batch_of",
]
