"""Relevance-weighted sensitivity, an option the issue asks to compare with the plain Hessian:
``Omega'_i(b) = rho_i * Omega_i(b)``, where ``rho_i`` is layer i's mean absolute LRP relevance
(at its output, per sample) divided by the mean over the layers.

Relevance comes from ``lowbit.passes.relevance.explain`` on the float graph after the float
passes, with the graph's default composite (AttnLRP with softmax, epsilon / z+ / flat
otherwise; Bach et al. 2015, Achtibat et al. 2024). The idea: a layer the prediction relies on
more should pay more for the same weight perturbation. This is a heuristic outside HAWQ-V3.
Only the benchmark tries it. Note that in a plain chain, LRP conservation gives every layer
about the same relevance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.passes.mixed_precision.layers import QuantLayer
from lowbit.passes.relevance import Objective, composite_named, explain
from lowbit.passes.relevance.composites import default_rule


def relevance_weights(float_graph: Graph, layers: Sequence[QuantLayer],
                      feeds: Mapping[str, np.ndarray]) -> np.ndarray:
    """``rho`` per layer (mean 1), from the captured node that bears the layer's name."""
    nodes = explain(float_graph, feeds, composite_named(default_rule(float_graph)),
                    Objective()).nodes
    values = []
    for layer in layers:
        node = nodes.get(layer.name)
        if node is None or node.relevance is None:
            raise LowbitError(f"no relevance for layer {layer.name!r}", node=layer.name)
        values.append(float(np.abs(node.relevance).mean()))
    weights = np.asarray(values)
    return weights / weights.mean()
