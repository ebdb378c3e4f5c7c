"""Relax patterns shared by the int8 kernel rewrites (``tvm_kernels``, ``tvm_kernels_conv``,
``tvm_kernels_batched``): an integer operand widened to int32 the way ``tvm_int_rules`` writes it,
``astype(x)`` or ``astype(x) - zero_point``, and its product with a constant weight, in int32 or
(``tvm_int_rules``' int64 accumulator) in int64 plus an optional constant bias, truncated to
int32.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard


def widened(x: DFPattern, shifted: bool, zero_point: DFPattern, dtype: str = "int32"
            ) -> DFPattern:
    """``astype(x)`` in ``dtype``, minus ``zero_point`` where ``shifted``."""
    wide = is_op("relax.astype")(x).has_dtype(dtype)
    return is_op("relax.subtract")(wide, zero_point) if shifted else wide


@dataclass(frozen=True)
class ConstantProduct:
    """``op(astype(x) - zero_point, weight)`` (``shifted``) or ``op(astype(x), weight)`` in int32,
    ``op`` a Relax operator name and ``weight`` a constant, with its named parts; or, where
    ``truncated``, the same product in int64, plus the constant ``bias`` where ``biased``, cast
    to int32. Each form is its own pattern: TVM's matcher memoizes a sub-pattern on its first
    candidate, so one pattern cannot offer ``astype(x)`` in two alternatives."""

    op: str
    shifted: bool
    truncated: bool = False
    biased: bool = False
    x: DFPattern = field(default_factory=wildcard)
    zero_point: DFPattern = field(default_factory=is_const)
    weight: DFPattern = field(default_factory=is_const)
    bias: DFPattern = field(default_factory=is_const)

    def product(self) -> DFPattern:
        acc = "int64" if self.truncated else "int32"
        product = is_op(self.op)(widened(self.x, self.shifted, self.zero_point, acc),
                                 self.weight).has_dtype(acc)
        if not self.truncated:
            return product
        summed = is_op("relax.add")(product, self.bias) if self.biased else product
        return is_op("relax.astype")(summed).has_dtype("int32")


__all__ = ["ConstantProduct", "widened"]
