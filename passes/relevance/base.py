"""What a relevance rule sees at one node (``Step``) and what it hands back (``Split``).

Invariant every rule keeps (LRP's conservation; Bach et al. 2015, Montavon et al. 2019):
the relevance a node receives at its output is redistributed onto its operands, and the
``Split`` names every destination: the live operands, constant terms (biases, fixed operands,
relevance a rule drops by definition), the stabilizer's share and positional tables (PA-LRP).
So the engine can check, per node, ``operands + constants + stabilizer + positional ==
received`` to the rule's stated tolerance: float rounding (the forward runs in float32, the
rules in float64), or ``None`` for a rule that is not conservative by design (its docstring
says why).

A rule is a small frozen dataclass with a ``name``, that ``tolerance`` (relative to the received
relevance mass) and ``__call__(step) -> Split``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Node

EXACT = 1e-9
"""Tolerance of rules that only move relevance (identity, routing, uniform splits)."""
ROUNDED = 1e-5
"""Tolerance of rules that divide by the forward's (float32) output ``z`` while recomputing its
terms in float64: their sum differs from ``z`` by float32 rounding."""


@dataclass(frozen=True)
class Stabilizer:
    """Denominator guard: ``z + eps * sign(z)`` with sign(0) = +1 (zennit ``stabilize``), or
    ``z + eps`` when ``signed`` is false (LXT ``_stabilize``)."""

    epsilon: float = 1e-6
    signed: bool = True

    def __post_init__(self) -> None:
        if not self.epsilon >= 0:
            raise ValueError(f"stabilizer epsilon must be >= 0, not {self.epsilon}")

    def __call__(self, z: np.ndarray) -> np.ndarray:
        if not self.signed:
            return z + self.epsilon
        return z + np.where(z >= 0, self.epsilon, -self.epsilon)

    def divide(self, relevance: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, float]:
        """``R / stab(z)``, and the relevance the stabilizer keeps: ``sum(R (stab(z) - z) /
        stab(z))``, so that ``sum(g * z) + kept == sum(R)``."""
        guarded = self(z)
        g = relevance / guarded
        return g, float(np.sum(g * (guarded - z)))


@dataclass(frozen=True)
class Affine:
    """A node seen as an affine map of one live operand: ``z = apply(x, weight) + bias``.

    ``apply`` is linear in ``x`` for a fixed weight and linear in the weight for a fixed ``x``,
    so rules may substitute modified inputs and weights (x+, w+, ones) as zennit's parameter
    modifiers do. ``adjoint(g, weight)`` is the transposed map ``J^T g`` (shaped like ``x``).
    ``weight`` is None for parameter-free maps (pooling, sums).
    """

    operand: int
    x: np.ndarray
    weight: np.ndarray | None
    bias: np.ndarray | None
    apply: Callable[[np.ndarray, np.ndarray | None], np.ndarray]
    adjoint: Callable[[np.ndarray, np.ndarray | None], np.ndarray]

    def output(self, x: np.ndarray, weight: np.ndarray | None,
               bias: np.ndarray | None) -> np.ndarray:
        z = self.apply(x, weight)
        return z if bias is None else z + bias


@dataclass(frozen=True)
class Step:
    """One node during the backward sweep. Float operands are float64 copies; ``live`` marks
    operands that carry relevance, ``constant`` those that are graph constants."""

    node: Node
    attrs: Mapping[str, Any]
    inputs: tuple[np.ndarray | None, ...]
    live: tuple[bool, ...]
    constant: tuple[bool, ...]
    output: np.ndarray
    relevance: np.ndarray
    affine: Callable[["Step"], tuple[Affine, ...]] | None

    def affines(self, rule: str) -> tuple[Affine, ...]:
        if self.affine is None:
            raise LowbitError(f"rule {rule!r} needs the op as an affine map; this op has none "
                              "(give it an affine entry in the relevance table or another rule)",
                              node=self.node.name, op=self.node.op)
        return self.affine(self)

    def fail(self, message: str) -> LowbitError:
        return LowbitError(message, node=self.node.name, op=self.node.op)


@dataclass(frozen=True)
class Split:
    """Where a node's received relevance went: one entry per operand (None: that operand takes
    none), relevance kept by constant terms and by the stabilizer, and PA-LRP positional
    relevance (output-shaped)."""

    inputs: tuple[np.ndarray | None, ...]
    constants: float = 0.0
    stabilizer: float = 0.0
    positional: np.ndarray | None = None


class Rule(Protocol):
    name: ClassVar[str]
    tolerance: ClassVar[float | None]

    def __call__(self, step: Step) -> Split: ...


def unbroadcast(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``values`` (a broadcast result) back onto an operand of ``shape``."""
    extra = values.ndim - len(shape)
    summed = values.sum(axis=tuple(range(extra))) if extra else values
    axes = tuple(i for i, size in enumerate(shape) if size == 1 and summed.shape[i] != 1)
    return summed.sum(axis=axes, keepdims=True) if axes else summed


def positive(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def negative(x: np.ndarray) -> np.ndarray:
    return np.minimum(x, 0.0)
