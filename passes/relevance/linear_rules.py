"""LRP rules for ops affine in their live operand: conv, linear, matmul, batch norm, pooling.

Formulas follow zennit (``src/zennit/rules.py``, Anders et al. 2021) term by term, including
its conventions: the stabilizer adds ``eps * sign(z)`` with sign(0) = +1; Gamma uses the
generalized form for inputs of either sign (Andeol et al. 2021); ZPlus and AlphaBeta keep the
bias only in the copies that take ``x+``, clamped to its positive (or negative) part; Flat uses
ones for inputs and weights and no bias (Lapuschkin et al. 2019). With notation ``z = Wx + b``:

- Epsilon (Bach et al. 2015):   ``R_x = x * W^T (R / stab(z))``
- Gamma (Montavon et al. 2019): ``R_x = x+ W_p^T g_p + x- W_n^T g_p + x+ W_n^T g_n + x- W_p^T g_n``
  with ``W_p = W + gamma W+``, ``W_n = W + gamma W-``, ``g_p = [z > 0] R / stab(z_p)`` etc.
- ZPlus: ``R_x = x+ W+^T g + x- W-^T g``, ``g = R / stab(x+ W+ + x- W- + b+)``
- AlphaBeta: ``alpha`` times the positive part minus ``beta`` times the negative part, each
  normalized by its own stabilized sum; requires ``alpha - beta = 1``.

When both factors of a matmul carry relevance (a product of two activations) each takes half
of the rule applied with the other factor as its weight: AttnLRP's uniform rule followed by
the chosen rule (Achtibat et al. 2024, Prop. 3.3; for epsilon this is their ``R / (2 z)``).
Relevance taken by the bias and relevance a rule drops by definition (Gamma at ``z == 0``; z+
and alpha-beta where an output has no positive or no negative contribution, which the
stabilizer then takes whole) are reported as ``constants`` and ``stabilizer``, so every rule
conserves relevance exactly, up to float rounding. The unmodified ``z`` is the node's output
from the forward run (as in zennit, which recomputes it in the forward's precision), so the
signs the rules test agree with the activations the relevance came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from lowbit.passes.relevance.base import (ROUNDED, Affine, Split, Stabilizer, Step, negative,
                                          positive)


class Factor(NamedTuple):
    relevance: np.ndarray
    constants: float = 0.0
    stabilizer: float = 0.0


def per_factor(step: Step, rule: str, factor: Callable[[Affine], Factor]) -> Split:
    """Apply ``factor`` to every live factor; two live factors share the relevance equally."""
    views = step.affines(rule)
    if not views:
        raise step.fail("no operand carries relevance")
    share = 1.0 / len(views)
    inputs: list[np.ndarray | None] = [None] * len(step.inputs)
    constants = stabilizer = 0.0
    for view in views:
        result = factor(view)
        inputs[view.operand] = share * result.relevance
        constants += share * result.constants
        stabilizer += share * result.stabilizer
    return Split(tuple(inputs), constants, stabilizer)


def _weight(view: Affine, rule: str, step: Step) -> np.ndarray:
    if view.weight is None:
        raise step.fail(f"rule {rule!r} modifies weights, but this op has none")
    return view.weight


def _part(bias: np.ndarray | None, sign: Callable[[np.ndarray], np.ndarray]) -> np.ndarray | None:
    return None if bias is None else sign(bias)


def _total(term: np.ndarray | None, g: np.ndarray) -> float:
    return 0.0 if term is None else float(np.sum(term * g))


@dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon (Bach et al. 2015); ``epsilon = 0`` is LRP-0. ``signed=False`` adds epsilon
    without the sign, as LXT does (AttnLRP)."""

    epsilon: float = 1e-6
    signed: bool = True
    name: ClassVar[str] = "epsilon"
    tolerance: ClassVar[float | None] = ROUNDED

    def __call__(self, step: Step) -> Split:
        stab = Stabilizer(self.epsilon, self.signed)

        def factor(view: Affine) -> Factor:
            g, kept = stab.divide(step.relevance, step.output)
            return Factor(view.x * view.adjoint(g, view.weight), _total(view.bias, g), kept)

        return per_factor(step, self.name, factor)


@dataclass(frozen=True)
class Gamma:
    """Generalized LRP-gamma (Montavon et al. 2019; Andeol et al. 2021), zennit's ``Gamma``."""

    gamma: float = 0.25
    stabilizer: float = 1e-6
    name: ClassVar[str] = "gamma"
    tolerance: ClassVar[float | None] = ROUNDED

    def __post_init__(self) -> None:
        if not self.gamma >= 0:
            raise ValueError(f"gamma must be >= 0, not {self.gamma}")

    def __call__(self, step: Step) -> Split:
        stab = Stabilizer(self.stabilizer)

        def factor(view: Affine) -> Factor:
            w = _weight(view, self.name, step)
            x_pos, x_neg = positive(view.x), negative(view.x)
            w_pos, w_neg = w + self.gamma * positive(w), w + self.gamma * negative(w)
            b = view.bias
            b_pos = None if b is None else b + self.gamma * positive(b)
            b_neg = None if b is None else b + self.gamma * negative(b)
            z = step.output
            z_pos = view.output(x_pos, w_pos, b_pos) + view.apply(x_neg, w_neg)
            z_neg = view.output(x_pos, w_neg, b_neg) + view.apply(x_neg, w_pos)
            g_pos, kept_pos = stab.divide((z > 0) * step.relevance, z_pos)
            g_neg, kept_neg = stab.divide((z < 0) * step.relevance, z_neg)
            relevance = (x_pos * view.adjoint(g_pos, w_pos) + x_neg * view.adjoint(g_pos, w_neg)
                         + x_pos * view.adjoint(g_neg, w_neg) + x_neg * view.adjoint(g_neg, w_pos))
            dropped = float(np.sum(step.relevance * (z == 0)))  # zennit drops it too
            return Factor(relevance, _total(b_pos, g_pos) + _total(b_neg, g_neg) + dropped,
                          kept_pos + kept_neg)

        return per_factor(step, self.name, factor)


@dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta (Bach et al. 2015), zennit's ``AlphaBeta``: it creates ``alpha`` and
    removes ``beta`` times each output's relevance; an output with an empty positive or negative
    part leaves that term to the stabilizer, so the totals still balance."""

    alpha: float = 2.0
    beta: float = 1.0
    stabilizer: float = 1e-6
    name: ClassVar[str] = "alphabeta"
    tolerance: ClassVar[float | None] = ROUNDED

    def __post_init__(self) -> None:
        if self.alpha < 0 or self.beta < 0 or self.alpha - self.beta != 1:
            raise ValueError(f"alpha-beta needs alpha, beta >= 0 and alpha - beta = 1, "
                             f"not alpha={self.alpha}, beta={self.beta}")

    def __call__(self, step: Step) -> Split:
        stab = Stabilizer(self.stabilizer)

        def factor(view: Affine) -> Factor:
            w = _weight(view, self.name, step)
            x_pos, x_neg = positive(view.x), negative(view.x)
            w_pos, w_neg = positive(w), negative(w)
            b_pos, b_neg = _part(view.bias, positive), _part(view.bias, negative)
            g_pos, kept_pos = stab.divide(step.relevance, view.output(x_pos, w_pos, b_pos)
                                          + view.apply(x_neg, w_neg))
            g_neg, kept_neg = stab.divide(step.relevance, view.output(x_pos, w_neg, b_neg)
                                          + view.apply(x_neg, w_pos))
            relevance = (self.alpha * (x_pos * view.adjoint(g_pos, w_pos)
                                       + x_neg * view.adjoint(g_pos, w_neg))
                         - self.beta * (x_pos * view.adjoint(g_neg, w_neg)
                                        + x_neg * view.adjoint(g_neg, w_pos)))
            return Factor(relevance,
                          self.alpha * _total(b_pos, g_pos) - self.beta * _total(b_neg, g_neg),
                          self.alpha * kept_pos - self.beta * kept_neg)

        return per_factor(step, self.name, factor)


@dataclass(frozen=True)
class ZPlus(AlphaBeta):
    """LRP-z+ (Montavon et al. 2017): alpha-beta with alpha = 1, beta = 0, allowing negative
    inputs; zennit's ``ZPlus``. An output without positive contributions passes nothing on (its
    relevance goes to the stabilizer)."""

    alpha: float = 1.0
    beta: float = 0.0
    name: ClassVar[str] = "zplus"


@dataclass(frozen=True)
class Flat:
    """LRP-flat (Lapuschkin et al. 2019): relevance spread evenly over each output's receptive
    field (inputs and weights set to ones, no bias); zennit's ``Flat``."""

    stabilizer: float = 1e-6
    name: ClassVar[str] = "flat"
    tolerance: ClassVar[float | None] = ROUNDED

    def __call__(self, step: Step) -> Split:
        stab = Stabilizer(self.stabilizer)

        def factor(view: Affine) -> Factor:
            ones = np.ones_like(_weight(view, self.name, step))
            g, kept = stab.divide(step.relevance, view.apply(np.ones_like(view.x), ones))
            return Factor(view.adjoint(g, ones), 0.0, kept)

        return per_factor(step, self.name, factor)
