"""Channel sites: the tensors that must share one permutation of a channel axis.

Permuting the reduction channels of a linear layer is free only if every tensor carrying those
channels is permuted the same way: the producers' output rows (weights, bias, norm affine,
embedding columns, constants added on the way) and every consumer's input columns. A *site*
is found by following the channel axis from a reader's input through the graph, one rule per
op (``CHANNEL_RULES``), until it ends at writers (linear/conv/matmul output rows, embedding
tables) and readers (linear/conv/matmul input columns) or reductions over the channel axis
(sum, mean, max and normalization statistics are permutation-invariant). Residual adds and
LayerNorms are followed, so a residual stream is one site with one permutation.

A site is *declined*, with the reason, when the channel axis reaches a graph input or output
(permuting would change the model's interface), an op with no rule, or a reshape that splits or
merges the channel axis (attention heads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lowbit.compiler.dims import normalize_axis, product
from lowbit.compiler.ir import Graph, Node


@dataclass(frozen=True)
class Link:
    """What one node ties to a channel axis: other tensors that carry it (value, axis),
    constant inputs to permute (input index, axis), and the node's role in the site."""

    joined: tuple[tuple[str, int], ...] = ()
    edits: tuple[tuple[int, int], ...] = ()
    role: str | None = None  # "reader" (input columns), "writer" (output rows) or None


Rule = Callable[[Graph, Node, str, int], Link | str]
"""``rule(graph, node, value, axis)``: ``value`` (an input or output of ``node``) carries the
channels on ``axis``; returns the link, or a string saying why the channels cannot pass."""
CHANNEL_RULES: dict[str, Rule] = {}


def channel_rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            CHANNEL_RULES[op] = fn
        return fn
    return register


@dataclass
class Site:
    """The tensors of one channel axis and what permuting it touches."""

    start: str
    channels: int
    values: dict[str, int] = field(default_factory=dict)
    edits: set[tuple[str, int, int]] = field(default_factory=set)  # node, input index, axis
    readers: dict[str, str] = field(default_factory=dict)  # reader node -> its input value
    writers: list[str] = field(default_factory=list)
    declined: str | None = None


def find_site(graph: Graph, start: str, axis: int) -> Site:
    """Follow the channel axis ``axis`` of value ``start`` through ``graph``."""
    producer, users = graph.producers(), graph.consumers()
    site = Site(start, int(graph.types[start].shape[axis]), {start: axis})
    queue = [start]
    while queue and site.declined is None:
        value = queue.pop()
        site.declined = _boundary(graph, value)
        nodes = ([producer[value]] if value in producer else []) + users.get(value, [])
        for node in nodes:
            if site.declined is not None:
                break
            rule = CHANNEL_RULES.get(node.op)
            link = rule(graph, node, value, site.values[value]) if rule else (
                f"no channel rule for op {node.op}")
            if isinstance(link, str):
                site.declined = f"{node.name}: {link}"
                break
            site.declined = _merge(site, node, link, queue)
    return site


def _boundary(graph: Graph, value: str) -> str | None:
    if value in graph.inputs:
        return f"the channels come from graph input {value!r}"
    if value in graph.outputs:
        return f"the channels reach graph output {value!r}; permuting would change it"
    return None


def _merge(site: Site, node: Node, link: Link, queue: list[str]) -> str | None:
    for value, axis in link.joined:
        if value in site.values:
            if site.values[value] != axis:
                return f"{node.name}: {value!r} would carry the channels on two axes"
            continue
        site.values[value] = axis
        queue.append(value)
    site.edits.update((node.name, index, axis) for index, axis in link.edits)
    if link.role == "reader":
        site.readers.setdefault(node.name, node.inputs[0])
    elif link.role == "writer" and node.name not in site.writers:
        site.writers.append(node.name)
    return None


def _rank(graph: Graph, value: str) -> int:
    return graph.types[value].rank


def _constant_inputs(graph: Graph, node: Node, indices: tuple[int, ...]) -> str | None:
    missing = [node.inputs[i] for i in indices
               if i < len(node.inputs) and node.inputs[i] and node.inputs[i] not in graph.constants]
    return f"{missing} computed at run time" if missing else None


# -- products: readers and writers --------------------------------------------------------------
def _weighted_product(graph: Graph, node: Node, value: str) -> Link | str:
    """A linear's or convolution's link through ``value``, its input or output channel axis:
    the weight (output channels on axis 0, input channels on axis 1) and bias must be constants;
    as a reader it edits the weight's axis 1, as a writer the weight's axis 0 and the bias."""
    problem = _constant_inputs(graph, node, (1, 2))
    if problem:
        return problem
    if value == node.inputs[0]:
        return Link(edits=((1, 1),), role="reader")
    bias = ((2, 0),) if len(node.inputs) > 2 and node.inputs[2] else ()
    return Link(edits=((1, 0),) + bias, role="writer")


@channel_rule("linear")
def linear(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    last = _rank(graph, value) - 1
    if axis != last or value not in (node.inputs[0], node.outputs[0]):
        return "the channel axis is not the feature axis"
    return _weighted_product(graph, node, value)


@channel_rule("conv")
def conv(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    if axis != 1 or node.attrs.get("groups", 1) != 1 or value not in (node.inputs[0],
                                                                         node.outputs[0]):
        return "only axis 1 of an ungrouped convolution is a channel axis"
    return _weighted_product(graph, node, value)


@channel_rule("matmul")
def matmul(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    weight = node.inputs[1]
    if weight not in graph.constants or _rank(graph, weight) != 2:
        return "a product of two activations mixes the channels"
    last = _rank(graph, value) - 1
    if axis != last or value not in (node.inputs[0], node.outputs[0]):
        return "the channel axis is not the feature axis"
    return Link(edits=((1, 0),), role="reader") if value == node.inputs[0] else Link(
        edits=((1, 1),), role="writer")


@channel_rule("gather")
def gather(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    table = node.inputs[0]
    if (value != node.outputs[0] or table not in graph.constants or _rank(graph, table) != 2
            or node.attrs.get("axis", 0) != 0 or axis != _rank(graph, value) - 1):
        return "only the columns of a constant embedding table can be permuted"
    return Link(edits=((0, 1),), role="writer")


# -- ops that keep channels apart ----------------------------------------------------------------
ELEMENTWISE = ("add", "sub", "mul", "div", "pow", "maximum", "minimum", "where", "equal",
               "relu", "sigmoid", "silu", "tanh", "erf", "exp", "log", "sqrt", "neg", "abs",
               "reciprocal", "gelu", "clip", "cast")


@channel_rule(*ELEMENTWISE)
def elementwise(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    """Broadcasting: inputs align at the right; a size-1 or missing axis is broadcast along
    the channels (invariant), a size-C one carries them (a constant is permuted)."""
    out = node.outputs[0]
    out_axis = axis + _rank(graph, out) - _rank(graph, value)
    channels = graph.types[out].shape[out_axis]
    joined, edits = [(out, out_axis)], []
    for index, name in enumerate(node.inputs):
        if not name:
            continue
        aligned = out_axis - (_rank(graph, out) - _rank(graph, name))
        if aligned < 0 or graph.types[name].shape[aligned] == 1:
            continue
        if graph.types[name].shape[aligned] != channels:
            return f"input {name!r} does not broadcast along the channels"
        if name in graph.constants:
            edits.append((index, aligned))
        else:
            joined.append((name, aligned))
    return Link(tuple(joined), tuple(edits))


@channel_rule("layer_norm")
def layer_norm(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    """LN(x P) = LN(x) P when gamma and beta are permuted too (statistics are invariant)."""
    rank = _rank(graph, node.outputs[0])
    first = normalize_axis(node.attrs.get("axis", -1), rank)
    other = node.outputs[0] if value == node.inputs[0] else node.inputs[0]
    if value not in (node.inputs[0], node.outputs[0]):
        return "LayerNorm affine parameters computed at run time"
    if axis < first:
        return Link(((other, axis),))
    if first != rank - 1:
        return "normalization over several axes including the channels"
    problem = _constant_inputs(graph, node, (1, 2))
    if problem:
        return problem
    affine = tuple((i, 0) for i in (1, 2) if len(node.inputs) > i and node.inputs[i])
    return Link(((other, axis),), affine)


@channel_rule("softmax")
def softmax(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    """Elementwise along other axes, permutation-equivariant along its own."""
    other = node.outputs[0] if value == node.inputs[0] else node.inputs[0]
    return Link(((other, axis),))


@channel_rule("max_pool", "avg_pool")
def pool(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    """Pooling windows span the spatial axes (2 and up) only."""
    if axis >= 2:
        return "pooling mixes the channel axis"
    other = node.outputs[0] if value == node.inputs[0] else node.inputs[0]
    return Link(((other, axis),))


@channel_rule("reduce_mean", "reduce_sum", "reduce_max")
def reduce(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    rank = _rank(graph, node.inputs[0])
    axes = sorted(normalize_axis(a, rank) for a in node.attrs["axes"])
    keep = node.attrs.get("keepdims", False)
    kept = [a for a in range(rank) if keep or a not in axes]
    if value == node.inputs[0]:
        if axis in axes:
            return Link()  # a reduction over the channels is invariant
        return Link(((node.outputs[0], kept.index(axis)),))
    return Link(((node.inputs[0], kept[axis]),))


@channel_rule("transpose")
def transpose(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    perm = list(node.attrs["perm"])
    if value == node.inputs[0]:
        return Link(((node.outputs[0], perm.index(axis)),))
    return Link(((node.inputs[0], perm[axis]),))


@channel_rule("reshape")
def reshape(graph: Graph, node: Node, value: str, axis: int) -> Link | str:
    """The channel axis survives a reshape that keeps it whole, with the same leading size."""
    other = node.outputs[0] if value == node.inputs[0] else node.inputs[0]
    shape, target = graph.types[value].shape, graph.types[other].shape
    for candidate, size in enumerate(target):
        if size == shape[axis] and product(target[:candidate]) == product(shape[:axis]):
            return Link(((other, candidate),))
    return "the reshape splits or merges the channel axis (e.g. into attention heads)"


def permute_site(graph: Graph, site: Site, order: np.ndarray, tag: str) -> None:
    """Apply channel order ``order`` to ``graph`` in place: every constant the site names is
    replaced by a permuted copy (one per node input, over all its axes); a replaced constant
    left unused is dropped. ``graph`` must have the structure the site was found in."""
    nodes = {n.name: n for n in graph.nodes}
    grouped: dict[tuple[str, int], list[int]] = {}
    replaced: set[str] = set()
    for node_name, index, axis in sorted(site.edits):
        grouped.setdefault((node_name, index), []).append(axis)
    for (node_name, index), axes in grouped.items():
        node = nodes[node_name]
        source = node.inputs[index]
        replaced.add(source)
        array = graph.constants[source]
        for axis in axes:
            array = np.take(array, order, axis=axis)
        name = _fresh(graph, f"{source}.{tag}")
        array.flags.writeable = False
        graph.constants[name] = array
        graph.types[name] = graph.types[source]
        node.inputs = node.inputs[:index] + (name,) + node.inputs[index + 1:]
    used = {v for n in graph.nodes for v in n.present_inputs()} | set(graph.outputs)
    for name in replaced - used:
        del graph.constants[name], graph.types[name]


def _fresh(graph: Graph, base: str) -> str:
    name, counter = base, 1
    while name in graph.types:
        name, counter = f"{base}_{counter}", counter + 1
    return name
