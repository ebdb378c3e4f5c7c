"""Relax patterns shared by the int8 kernel rewrites (``tvm_kernels``, ``tvm_kernels_conv``,
``tvm_kernels_batched``): an 8-bit operand widened to int32 the way ``tvm_int_rules`` writes it,
``astype(x)`` or ``astype(x) - zero_point``, and its product with a constant weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard


def widened(x: DFPattern, shifted: bool, zero_point: DFPattern) -> DFPattern:
    """``astype(x)`` in int32, minus ``zero_point`` where ``shifted``."""
    wide = is_op("relax.astype")(x).has_dtype("int32")
    return is_op("relax.subtract")(wide, zero_point) if shifted else wide


@dataclass(frozen=True)
class ConstantProduct:
    """``op(astype(x) - zero_point, weight)`` (``shifted``) or ``op(astype(x), weight)`` in int32,
    ``op`` a Relax operator name and ``weight`` a constant, with its named parts. The two forms
    are two patterns: TVM's matcher memoizes a sub-pattern on its first candidate, so one pattern
    cannot offer ``astype(x)`` in two alternatives."""

    op: str
    shifted: bool
    x: DFPattern = field(default_factory=wildcard)
    zero_point: DFPattern = field(default_factory=is_const)
    weight: DFPattern = field(default_factory=is_const)

    def product(self) -> DFPattern:
        return is_op(self.op)(widened(self.x, self.shifted, self.zero_point),
                              self.weight).has_dtype("int32")


__all__ = ["ConstantProduct", "widened"]
