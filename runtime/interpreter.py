"""Reference interpreter: runs a graph node by node with the op table's numpy kernels.

Invariant: the result is each op's float reference applied in topological order; nothing is
fused or reordered, so it is the ground truth other backends are compared with. Inputs are
checked against the graph's declared types first; errors name the input or the failing node.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from lowbit.compiler.dims import Sym, batch_of, concrete_shape
from lowbit.compiler.errors import InputError, LowbitError
from lowbit.compiler.ir import Graph
from lowbit.compiler.ops import OP_TABLE


def check_inputs(graph: Graph, feeds: Mapping[str, np.ndarray]) -> int:
    """Validate feeds against the declared inputs; returns the batch size."""
    missing = [name for name in graph.inputs if name not in feeds]
    if missing:
        raise InputError(f"missing input(s) {missing}; the graph takes {graph.inputs}")
    extra = sorted(set(feeds) - set(graph.inputs))
    if extra:
        raise InputError(f"unknown input(s) {extra}; the graph takes {graph.inputs}")
    batch: int | None = None
    for name in graph.inputs:
        declared, array = graph.types[name], np.asarray(feeds[name])
        if str(array.dtype) != declared.dtype:
            raise InputError(f"input {name!r} has dtype {array.dtype}, expected {declared.dtype}")
        implied = batch_of(array.shape, declared.shape) if array.ndim == declared.rank else None
        if not any(isinstance(d, Sym) for d in declared.shape):
            implied = batch if batch is not None else 1
        if implied is None or array.shape != concrete_shape(declared.shape, implied) or (
                batch is not None and implied != batch):
            raise InputError(f"input {name!r} has shape {list(array.shape)}, expected {declared}"
                             + (f" with batch {batch}" if batch is not None else ""))
        batch = implied
    return batch if batch is not None else 1


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray], keep: bool = False,
              replace: Callable[[str, np.ndarray], np.ndarray] | None = None
              ) -> dict[str, np.ndarray]:
    """Outputs keyed by graph output name (all values with ``keep=True``).

    ``replace(name, value)``, when given, sees every graph input and node output as it is
    defined and returns the value the rest of the run uses (relevance of a quantized program
    substitutes its dequantized activations this way)."""
    batch = check_inputs(graph, feeds)
    define = replace or (lambda name, value: value)
    env: dict[str, np.ndarray] = dict(graph.constants)
    env.update({name: define(name, np.asarray(feeds[name])) for name in graph.inputs})
    for node in graph.nodes:
        spec = OP_TABLE[node.op]
        args = [env[v] if v else None for v in node.inputs]
        try:
            with np.errstate(over="ignore"):
                results = spec.run(args, spec.with_defaults(node.attrs), batch)
        except (ValueError, IndexError, TypeError, FloatingPointError) as err:
            raise LowbitError(f"evaluation failed: {err}", node=node.name, op=node.op) from None
        env.update((out, define(out, result)) for out, result in zip(node.outputs, results))
    if keep:
        return env
    return {name: env[name] for name in graph.outputs}
