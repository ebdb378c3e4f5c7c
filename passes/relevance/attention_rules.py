"""Transformer rules: softmax and normalization (AttnLRP), and stopping relevance (CP-LRP).

The two attention matmuls need no rule of their own: ``q @ k^T`` and ``softmax @ v`` are
products of two activations, which the linear rules split uniformly (AttnLRP Prop. 3.3, see
``linear_rules``); under CP-LRP the softmax is stopped, so ``softmax @ v`` sees the attention
weights as fixed and relevance reaches only the values.

- SoftmaxTaylor (AttnLRP, Achtibat et al. 2024, Prop. 3.1; LXT ``softmax_fn``):
  ``R_x = x * (R - s * sum(R))`` along the softmax axis, with -inf logits read as 0. It is a
  Taylor decomposition with a bias term, so it is not conservative (no tolerance stated).
- Stop (CP-LRP "AH" rule, Ali et al. 2022): the node's output is treated as a constant: the
  engine marks it as carrying no relevance, and the rule itself is never applied.
- LayerNormIdentity (AttnLRP Prop. 3.4, CP-LRP "LN" rule; LXT ``layer_norm_grad_fn``): the
  standard deviation is held fixed, the rest (centering, affine) gets the epsilon rule:
  ``R_x = x * J^T (R / stab(y))`` with ``J = diag(w / sigma) (I - 1/D)``. The bias keeps
  ``b R / stab(y)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.passes.relevance.base import ROUNDED, Split, Stabilizer, Step


@dataclass(frozen=True)
class SoftmaxTaylor:
    name: ClassVar[str] = "softmax-taylor"
    tolerance: ClassVar[float | None] = None

    def __call__(self, step: Step) -> Split:
        x = step.inputs[0]
        assert x is not None
        logits = np.where(np.isneginf(x), 0.0, x)
        axis = step.attrs["axis"]
        total = step.relevance.sum(axis=axis, keepdims=True)
        return Split((logits * (step.relevance - step.output * total),))


@dataclass(frozen=True)
class Stop:
    name: ClassVar[str] = "stop"
    tolerance: ClassVar[float | None] = None

    def __call__(self, step: Step) -> Split:
        raise step.fail("a stopped node carries no relevance; the engine must not apply it")


@dataclass(frozen=True)
class LayerNormIdentity:
    epsilon: float = 1e-6
    signed: bool = True
    name: ClassVar[str] = "layer-norm-identity"
    tolerance: ClassVar[float | None] = ROUNDED

    def __call__(self, step: Step) -> Split:
        if any(step.live[1:]):
            raise step.fail("layer_norm weight or bias carries relevance; they must be fixed")
        x, w, b = (list(step.inputs) + [None, None])[:3]
        assert x is not None
        axes = tuple(range(normalize_axis(step.attrs["axis"], x.ndim), x.ndim))
        centered = x - x.mean(axis=axes, keepdims=True)
        sigma = np.sqrt(np.mean(centered**2, axis=axes, keepdims=True) + step.attrs["eps"])
        y = centered / sigma
        if w is not None:
            y = y * w
        if b is not None:
            y = y + b
        g, stabilized = Stabilizer(self.epsilon, self.signed).divide(step.relevance, y)
        u = g if w is None else g * w
        relevance = x * (u - u.mean(axis=axes, keepdims=True)) / sigma
        kept = 0.0 if b is None else float(np.sum(b * g))
        return Split((relevance,) + (None,) * (len(step.inputs) - 1), kept, stabilized)
