"""Graph helpers shared by the scale reparameterization passes (SmoothQuant, AWQ, RepQ-ViT).

The common rewrite is RepQ-ViT's post-LayerNorm fold (Li et al., ICCV 2023, section 4.2):
with per-channel factors ``r`` and offsets ``b`` on the LayerNorm output ``x``,
``x' = x / r - b`` is again a LayerNorm (``gamma' = gamma / r``, ``beta' = beta / r - b``) and
each linear ``y = W x + bias`` reading it becomes ``y = (W r) x' + bias + (W r) b``. SmoothQuant
and AWQ are the case ``b = 0``. Exact in real arithmetic; arrays are computed in float64 and
stored in the weights' dtype. When the LayerNorm output has other readers (the residual add of
a post-norm block, a graph output), the LayerNorm is duplicated: the copy (same origin) feeds
the linears, the original keeps feeding the rest, so no reader sees a changed value.

Folded LayerNorm outputs are listed in ``graph.metadata[MIGRATED_KEY]``: the lowering does not
migrate their scales a second time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.types import type_of_array
from lowbit.runtime.interpreter import run_graph

MIGRATED_KEY = "scale_migrated"
"""Graph metadata: LayerNorm output values whose channel scales a pass already migrated."""


@dataclass(frozen=True)
class NormGroup:
    """A last-axis LayerNorm and the linears (constant weights) that read its output."""

    norm: Node
    linears: tuple[Node, ...]

    @property
    def value(self) -> str:
        return self.norm.outputs[0]


def norm_linear_groups(graph: Graph) -> list[NormGroup]:
    """Every LayerNorm over the last axis with constant (or absent) affine parameters whose
    output feeds at least one linear layer with a constant weight."""
    users = graph.consumers()
    groups = []
    for node in graph.nodes:
        if node.op != "layer_norm" or not _last_axis(graph, node):
            continue
        if any(v and v not in graph.constants for v in node.inputs[1:]):
            continue
        linears = tuple(u for u in users.get(node.outputs[0], [])
                        if u.op == "linear" and u.inputs[0] == node.outputs[0]
                        and u.inputs[1] in graph.constants
                        and (len(u.inputs) < 3 or not u.inputs[2]
                             or u.inputs[2] in graph.constants))
        if linears:
            groups.append(NormGroup(node, linears))
    return groups


def _last_axis(graph: Graph, node: Node) -> bool:
    rank = graph.types[node.inputs[0]].rank
    return node.attrs.get("axis", -1) in (-1, rank - 1)


def channel_samples(graph: Graph, data: Mapping[str, np.ndarray], values: Sequence[str],
                    batch_size: int = 32) -> dict[str, np.ndarray]:
    """The calibration values of ``values`` as ``[rows, channels]`` float32 arrays (channels =
    last axis), from the float reference interpreter run batch by batch."""
    total = len(next(iter(data.values())))
    parts: dict[str, list[np.ndarray]] = {v: [] for v in values}
    for start in range(0, total, batch_size):
        env = run_graph(graph, {k: data[k][start:start + batch_size] for k in graph.inputs},
                        keep=True)
        for name in values:
            parts[name].append(env[name].reshape(-1, env[name].shape[-1]).astype(np.float32))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def set_constant(graph: Graph, node: Node, index: int, array: np.ndarray, suffix: str) -> None:
    """Make input ``index`` of ``node`` a new read-only constant; the old one is dropped when
    nothing else reads it."""
    old = node.inputs[index] if index < len(node.inputs) else ""
    name = f"{node.name}.{suffix}"
    while name in graph.types:
        name += "_"
    frozen = np.array(array, copy=True)
    frozen.flags.writeable = False
    graph.constants[name] = frozen
    graph.types[name] = type_of_array(frozen)
    inputs = list(node.inputs) + [""] * (index + 1 - len(node.inputs))
    inputs[index] = name
    node.inputs = tuple(inputs)
    if old and old in graph.constants and not any(old in n.inputs for n in graph.nodes):
        del graph.constants[old]
        del graph.types[old]


def fold_into_norm(graph: Graph, group: NormGroup, r: np.ndarray, b: np.ndarray,
                   tag: str) -> Node:
    """Rewrite ``group`` so the linears read ``x / r - b`` (see the module docstring); returns
    the LayerNorm node that now feeds them (a copy when the output had other readers)."""
    norm = _exclusive_norm(graph, group, tag)
    channels = r.shape[0]
    dtype = graph.types[norm.outputs[0]].dtype
    r64, b64 = r.astype(np.float64), b.astype(np.float64)
    gamma = _affine(graph, norm, 1, np.ones(channels))
    beta = _affine(graph, norm, 2, np.zeros(channels))
    set_constant(graph, norm, 1, (gamma / r64).astype(dtype), f"{tag}_gamma")
    set_constant(graph, norm, 2, (beta / r64 - b64).astype(dtype), f"{tag}_beta")
    for layer in group.linears:
        weight = graph.constants[layer.inputs[1]].astype(np.float64) * r64
        bias = _affine(graph, layer, 2, np.zeros(weight.shape[0]))
        wdtype = graph.constants[layer.inputs[1]].dtype
        set_constant(graph, layer, 1, weight.astype(wdtype), f"{tag}_weight")
        if np.any(b64 != 0) or (len(layer.inputs) > 2 and layer.inputs[2]):
            set_constant(graph, layer, 2, (bias + weight @ b64).astype(wdtype), f"{tag}_bias")
    graph.metadata.setdefault(MIGRATED_KEY, []).append(norm.outputs[0])
    return norm


def _affine(graph: Graph, node: Node, index: int, default: np.ndarray) -> np.ndarray:
    name = node.inputs[index] if len(node.inputs) > index else ""
    return graph.constants[name].astype(np.float64) if name else default


def _exclusive_norm(graph: Graph, group: NormGroup, tag: str) -> Node:
    """The LayerNorm itself when the linears are its only readers, else a copy feeding them."""
    norm = graph.node(group.norm.name)
    value = norm.outputs[0]
    readers = [n for n in graph.nodes if value in n.inputs]
    if len(readers) == len(group.linears) and value not in graph.outputs:
        return norm
    copy_value = f"{value}.{tag}"
    copy = Node(f"{norm.name}.{tag}", norm.op, norm.inputs, (copy_value,), dict(norm.attrs),
                norm.origin)
    graph.types[copy_value] = graph.types[value]
    graph.nodes.insert(graph.nodes.index(norm) + 1, copy)
    names = {layer.name for layer in group.linears}
    for node in graph.nodes:
        if node.name in names:
            node.inputs = (copy_value,) + node.inputs[1:]
    return copy


def spread(values: np.ndarray) -> float:
    """max / min of positive per-channel magnitudes (1.0 for an empty or all-zero array)."""
    positive = values[values > 0]
    return float(positive.max() / positive.min()) if positive.size else 1.0


def report_table(rows: list[dict[str, Any]]) -> list[str]:
    """The per-layer stats of a pass as markdown lines for the compile report (``markdown``)."""
    if not rows:
        return []
    columns = list(rows[0])
    lines = ["", "| " + " | ".join(c.replace("_", " ") for c in columns) + " |",
             "| --- |" + " ---: |" * (len(columns) - 1)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return lines + [""]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(v) for v in value)
    return str(value)


def tabulated(stats: dict[str, Any], key: str) -> dict[str, Any]:
    """``stats`` with ``stats[key]`` (per-layer stats keyed by layer) turned into a list of rows
    and rendered as the report's ``markdown`` table."""
    rows = [{"layer": name, **values} for name, values in stats[key].items()]
    return {**stats, key: rows, "markdown": report_table(rows)}
