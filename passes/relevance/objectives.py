"""What is explained: the relevance placed on the first graph output before propagation.

- ``class``: for each sample the score of one class, ``R = y[n, k]`` at ``k`` and 0 elsewhere
  (LXT's ``logit.backward(logit)``; zennit with ``attr_output = onehot * y``). ``k`` is the
  requested class or, by default, the predicted one (argmax).
- ``self``: an embedding's dot product with itself, ``R = y * y``; each dimension's share of
  ``<y, y>`` (which is 1 for L2-normalised embeddings such as MiniLM's). An embedding has no
  classes, and this explains what the whole vector is made of.
- ``auto`` (default): ``self`` when every row of the output has unit L2 norm (an embedding
  model), ``class`` otherwise. A requested class always means ``class``.

Other graph outputs get no relevance.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph

KINDS = ("auto", "class", "self")


@dataclass(frozen=True)
class Seed:
    kind: str
    relevance: dict[str, np.ndarray]
    targets: tuple[int, ...] | None

    def total(self) -> np.ndarray:
        """Seeded relevance per sample."""
        (values,) = self.relevance.values()
        return values.reshape(values.shape[0], -1).sum(axis=1)


@dataclass(frozen=True)
class Objective:
    kind: str = "auto"
    target_class: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"objective must be one of {KINDS}, not {self.kind!r}")

    def seed(self, graph: Graph, values: Mapping[str, np.ndarray]) -> Seed:
        name = graph.outputs[0]
        y = np.asarray(values[name], dtype=np.float64)
        if y.ndim != 2:
            raise LowbitError(f"output {name!r} has shape {list(y.shape)}; explaining needs "
                              "[batch, classes] or [batch, features]")
        kind = self._resolve(y)
        if kind == "self":
            return Seed(kind, {name: y * y}, None)
        targets = (np.full(y.shape[0], self.target_class) if self.target_class is not None
                   else y.argmax(axis=1))
        if not ((targets >= 0) & (targets < y.shape[1])).all():
            raise LowbitError(f"target class {self.target_class} is out of range: output "
                              f"{name!r} has {y.shape[1]} entries")
        relevance = np.zeros_like(y)
        rows = np.arange(y.shape[0])
        relevance[rows, targets] = y[rows, targets]
        return Seed(kind, {name: relevance}, tuple(int(t) for t in targets))

    def _resolve(self, y: np.ndarray) -> str:
        if self.target_class is not None:
            return "class"
        if self.kind != "auto":
            return self.kind
        unit = np.allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-3)
        return "self" if unit else "class"
