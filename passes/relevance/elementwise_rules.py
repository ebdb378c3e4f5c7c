"""Rules for elementwise ops, data movement and selections.

- Identity: an elementwise function of one operand passes relevance through unchanged
  (AttnLRP, Achtibat et al. 2024, eq. 9; zennit's ``Pass`` for activations).
- Route: copies and selections send relevance to where each output element came from
  (``routing``); equal to the gradient of the op, which LRP-0 reduces to for such ops.
- ProportionalSplit (add, sub): ``R_a = a R / stab(a + b)`` (AttnLRP eq. 8; zennit's ``Norm``
  on a canonized sum). Relevance of a constant operand is kept as ``constants``, except a
  learned positional table (constant ``[1, S, D]`` added to ``[N, S, D]`` tokens), whose share
  is reported as positional relevance (PA-LRP, Bakish et al. 2025) instead of being absorbed.
- UniformProduct (mul): each live factor takes ``R / n`` for ``n`` live factors, all of it when
  the other factor is constant (AttnLRP Prop. 3.2, LXT ``mul2``).
- Numerator (div, pow): the first live operand takes everything; a live divisor or exponent
  is treated as a fixed scale, as AttnLRP does with normalization statistics (Prop. 3.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lowbit.passes.relevance.base import EXACT, ROUNDED, Split, Stabilizer, Step, unbroadcast
from lowbit.passes.relevance.routing import Routed


def _single_live(step: Step) -> int:
    live = [i for i, flag in enumerate(step.live) if flag]
    if len(live) != 1:
        raise step.fail(f"the identity rule needs exactly one operand carrying relevance, "
                        f"found {len(live)}")
    return live[0]


@dataclass(frozen=True)
class Identity:
    """Relevance passes to the one live operand unchanged."""

    name: ClassVar[str] = "identity"
    tolerance: ClassVar[float | None] = EXACT

    def __call__(self, step: Step) -> Split:
        index = _single_live(step)
        inputs: list[np.ndarray | None] = [None] * len(step.inputs)
        inputs[index] = step.relevance
        return Split(tuple(inputs))


@dataclass(frozen=True)
class Route:
    """Relevance follows the data: ``back`` says, per operand, where each element came from."""

    back: Callable[[Step], Routed]
    name: ClassVar[str] = "route"
    tolerance: ClassVar[float | None] = EXACT

    def __call__(self, step: Step) -> Split:
        routed = self.back(step)
        inputs = tuple(r if r is not None and step.live[i] else None for i, r in enumerate(routed))
        constants = sum(float(r.sum()) for i, r in enumerate(routed)
                        if r is not None and not step.live[i])
        return Split(inputs, constants)


def is_positional_table(table: np.ndarray, output_shape: tuple[int, ...]) -> bool:
    """A learned absolute position table: ``[1, S, D]`` (or ``[S, D]``) with ``S > 1``, added
    along the last two axes of ``[N, S, D]`` tokens."""
    if table.ndim < 2 or table.shape[-2] <= 1:
        return False
    leading = table.shape[:-2]
    return all(d == 1 for d in leading) and table.shape[-2:] == output_shape[-2:]


@dataclass(frozen=True)
class ProportionalSplit:
    """``R_a = a R / stab(z)``, ``R_b = +-b R / stab(z)`` for ``z = a +- b``."""

    epsilon: float = 1e-6
    signed: bool = True
    positional: bool = True
    name: ClassVar[str] = "proportional"
    tolerance: ClassVar[float | None] = ROUNDED

    def __call__(self, step: Step) -> Split:
        a, b = step.inputs
        assert a is not None and b is not None
        sign = -1.0 if step.node.op == "sub" else 1.0
        g, stabilized = Stabilizer(self.epsilon, self.signed).divide(step.relevance, a + sign * b)
        shares = (np.broadcast_to(a * g, g.shape), np.broadcast_to(sign * b * g, g.shape))
        inputs: list[np.ndarray | None] = [None, None]
        constants, positional = 0.0, None
        for index, (operand, share) in enumerate(zip((a, b), shares)):
            if step.live[index]:
                inputs[index] = unbroadcast(share, operand.shape)
            elif (self.positional and step.constant[index] and step.live[1 - index]
                  and is_positional_table(operand, g.shape)):
                positional = np.array(share)
            else:
                constants += float(share.sum())
        return Split(tuple(inputs), constants, stabilized, positional)


@dataclass(frozen=True)
class UniformProduct:
    """Each of the ``n`` live factors takes ``R / n``."""

    name: ClassVar[str] = "uniform"
    tolerance: ClassVar[float | None] = EXACT

    def __call__(self, step: Step) -> Split:
        count = sum(step.live)
        return Split(tuple(unbroadcast(step.relevance / count, x.shape) if live else None
                           for x, live in zip(step.inputs, step.live)))  # type: ignore[union-attr]


@dataclass(frozen=True)
class Numerator:
    """All relevance to the first live operand (the numerator or base)."""

    name: ClassVar[str] = "numerator"
    tolerance: ClassVar[float | None] = EXACT

    def __call__(self, step: Step) -> Split:
        index = step.live.index(True)
        operand = step.inputs[index]
        assert operand is not None
        inputs: list[np.ndarray | None] = [None] * len(step.inputs)
        inputs[index] = unbroadcast(step.relevance, operand.shape)
        return Split(tuple(inputs))
