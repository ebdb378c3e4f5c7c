"""The NPU op kinds: which lowbit nodes each spec op covers, and what the spec must allow.

Invariant: ``plan`` admits a group of nodes only when the reference NPU kernel computes
exactly what the interpreter computes for it: int8/int16 codes in, products accumulated in
int32 with a static bound proving that no partial sum leaves int32, and a requantize epilogue
whose multiplier lies in ``[0, 2^31)`` and shift in ``[0, 62]`` (so ``acc * mult`` plus the
rounding half fits int64). Every node left out gets one reason. Nothing here imports TVM.

``NPU_KINDS`` has one row per spec op: the lowbit op it is anchored on, whether a
``requantize`` epilogue is fused after it, which anchor nodes it claims (a grouped conv is
depthwise or nothing), and what it checks beyond the common dtype checks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.codegen.npu.spec import NpuSpec, OpLimits
from lowbit.compiler.dims import Sym
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.compiler.types import TensorType

INT32_LIMIT = 1 << 31
MULT_LIMIT = 1 << 31
MAX_SHIFT = 62


@dataclass(frozen=True)
class Group:
    """Nodes one NPU op runs: the anchor and its fused requantize epilogue (if the kind has one)."""

    kind: str
    anchor: Node
    epilogue: Node | None

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.anchor,) if self.epilogue is None else (self.anchor, self.epilogue)

    @property
    def output(self) -> str:
        return self.nodes[-1].outputs[0]

    def inputs(self, graph: Graph) -> list[str]:
        """The runtime (non-constant) tensors the group reads, in the anchor's input order."""
        return [v for v in self.anchor.present_inputs() if v not in graph.constants]


Check = Callable[[Group, Graph, OpLimits], str | None]


@dataclass(frozen=True)
class NpuKind:
    """One spec op: its anchor op, whether a requantize is fused, which anchors it claims and
    its own checks."""

    name: str
    anchor: str
    fused_requantize: bool
    claims: Callable[[Node, Graph], bool]
    check: Check
    channel_axis: int = 1
    """Axis of the output along which requantize parameters may vary."""


# -- helpers -----------------------------------------------------------------------------------
def static(ttype: TensorType) -> list[int]:
    """Dimensions with the batch ``Sym(k)`` counted as ``k`` (one sample)."""
    return [d.coeff if isinstance(d, Sym) else int(d) for d in ttype.shape]


def magnitude(graph: Graph, name: str, zero_point: int = 0) -> int:
    """Largest ``|v - zero_point|`` over a constant's values, else over its dtype's range."""
    value = graph.constants.get(name)
    if value is not None and value.size:
        return int(np.abs(value.astype(np.int64) - zero_point).max())
    lo, hi = INT_RANGES[graph.types[name].dtype]
    return max(abs(lo - zero_point), abs(hi - zero_point))


def per_channel(graph: Graph, name: str, out: TensorType, axis: int) -> np.ndarray | None:
    """A requantize parameter as one int64 value per output channel along ``axis``, or None
    when it is not a constant or varies along another axis."""
    value = graph.constants.get(name)
    if value is None:
        return None
    shape = [1 if isinstance(d, Sym) else int(d) for d in out.shape]
    rows = np.moveaxis(np.broadcast_to(value.astype(np.int64), shape), axis, 0)
    rows = rows.reshape(rows.shape[0], -1)
    return rows[:, 0].copy() if np.all(rows == rows[:, :1]) else None


def _dtype_problem(what: str, dtype: str, allowed: frozenset[str]) -> str | None:
    return None if dtype in allowed else f"{what} is {dtype}; the spec allows {sorted(allowed)}"


def _pair_problem(what: str, pair: tuple[int, ...], allowed: frozenset[tuple[int, int]] | None
                  ) -> str | None:
    if allowed is None or tuple(pair) in allowed:
        return None
    return f"{what} {list(pair)} not in the spec's {sorted(map(list, allowed))}"


def _channels_problem(channels: int, limits: OpLimits) -> str | None:
    if limits.max_channels is None or channels <= limits.max_channels:
        return None
    return f"{channels} channels exceed the spec's max_channels {limits.max_channels}"


def _first(*problems: str | None) -> str | None:
    return next((p for p in problems if p), None)


# -- products with a requantize epilogue -------------------------------------------------------
def _product_problem(group: Group, graph: Graph, limits: OpLimits, taps: int) -> str | None:
    inputs = group.anchor.inputs
    x, w, b = inputs[0], inputs[1], inputs[2] if len(inputs) > 2 else ""
    if w not in graph.constants or (b and b not in graph.constants):
        return "weights and bias must be constants"
    bound = (taps * magnitude(graph, x, group.anchor.attrs.get("x_zero_point", 0))
             * magnitude(graph, w) + (magnitude(graph, b) if b else 0))
    if bound >= INT32_LIMIT:
        return f"partial sums may reach {bound}, beyond the int32 accumulator"
    return _dtype_problem("weight", graph.types[w].dtype, limits.weight)


def _conv_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    node = group.anchor
    x, w = graph.types[node.inputs[0]], graph.types[node.inputs[1]]
    kernel = tuple(int(d) for d in w.shape[2:])
    return _first(
        None if tuple(node.attrs["dilations"]) == (1, 1) else "dilated convolution",
        _pair_problem("kernel", kernel, limits.kernel_sizes),
        _pair_problem("stride", node.attrs["strides"], limits.strides),
        _channels_problem(max(int(x.shape[1]), int(w.shape[0])), limits),
        _product_problem(group, graph, limits, int(np.prod(static(w)[1:]))))


def _linear_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    w = graph.types[group.anchor.inputs[1]]
    return _first(_channels_problem(max(static(w)), limits),
                  _product_problem(group, graph, limits, static(w)[1]))


def _pool_sum_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    node = group.anchor
    x = graph.types[node.inputs[0]]
    bound = int(np.prod(static(x)[2:])) * magnitude(graph, node.inputs[0],
                                                   node.attrs["zero_point"])
    return _first(_channels_problem(static(x)[1], limits),
                  None if bound < INT32_LIMIT else "window sum may leave int32")


def _add_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    node = group.anchor
    a, b = node.inputs
    if a in graph.constants or b in graph.constants:
        return "one operand is a constant (the NPU adds two feature maps)"
    if graph.types[a].shape != graph.types[b].shape:
        return "operands have different shapes (no broadcasting on the NPU)"
    attrs = node.attrs
    if not all(0 <= attrs[k] < MULT_LIMIT for k in ("a_mult", "b_mult")):
        return "input multipliers outside [0, 2^31)"
    return None if 0 <= attrs["shift"] <= MAX_SHIFT else "shift outside [0, 62]"


def _max_pool_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    attrs = group.anchor.attrs
    return _first(None if not attrs["ceil_mode"] else "ceil_mode pooling",
                  None if tuple(attrs["dilations"]) == (1, 1) else "dilated pooling",
                  _pair_problem("kernel", attrs["kernel"], limits.kernel_sizes),
                  _pair_problem("stride", attrs["strides"], limits.strides))


def _is_conv2d(node: Node, graph: Graph) -> bool:
    return graph.types[node.inputs[0]].rank == 4 and node.attrs["groups"] == 1


def _is_depthwise(node: Node, graph: Graph) -> bool:
    x, w = graph.types[node.inputs[0]], graph.types[node.inputs[1]]
    groups = node.attrs["groups"]
    return x.rank == 4 and groups > 1 and groups == int(x.shape[1]) == int(w.shape[0])


def _is_2d_window(node: Node, graph: Graph) -> bool:
    return len(node.attrs["kernel"]) == 2


def _is_global_pool(node: Node, graph: Graph) -> bool:
    x = graph.types[node.inputs[0]]
    return x.rank == 4 and sorted(a % 4 for a in node.attrs["axes"]) == [2, 3]


def _always(node: Node, graph: Graph) -> bool:
    return True


NPU_KINDS: tuple[NpuKind, ...] = (
    NpuKind("conv2d", "int_conv", True, _is_conv2d, _conv_problem),
    NpuKind("depthwise_conv2d", "int_conv", True, _is_depthwise, _conv_problem),
    NpuKind("fully_connected", "int_linear", True, _always, _linear_problem, channel_axis=-1),
    NpuKind("add", "int_add", False, _always, _add_problem),
    NpuKind("max_pool2d", "max_pool", False, _is_2d_window, _max_pool_problem),
    NpuKind("global_avg_pool2d", "int_sum", True, _is_global_pool, _pool_sum_problem),
)
KINDS = {kind.name: kind for kind in NPU_KINDS}
ANCHORS = {kind.anchor for kind in NPU_KINDS}


# -- planning ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """Groups the spec admits, and the reason every other node stays on the host."""

    groups: tuple[Group, ...]
    reasons: dict[str, str]


def plan(graph: Graph, spec: NpuSpec) -> Plan:
    """Walks the nodes in order: each anchor takes its requantize epilogue into a group, which
    the spec admits or refuses as a whole."""
    groups: list[Group] = []
    reasons: dict[str, str] = {}
    consumers = graph.consumers()
    grouped: set[str] = set()
    for node in graph.nodes:
        if node.name in reasons or node.name in grouped:
            continue  # an epilogue, already placed with its anchor
        group, reason = _group(node, graph, spec, consumers)
        if group is None:
            reasons[node.name] = reason
            continue
        if reason is None:
            groups.append(group)
            grouped.update(member.name for member in group.nodes)
            continue
        reasons[node.name] = reason
        if group.epilogue is not None:
            reasons[group.epilogue.name] = (f"epilogue of {node.name} ({node.op}), which stays "
                                            f"on the host: {reason}")
    return Plan(tuple(groups), reasons)


def _group(node: Node, graph: Graph, spec: NpuSpec, consumers: dict[str, list[Node]]
           ) -> tuple[Group | None, str | None]:
    """The group anchored at ``node`` and why the spec refuses it (None: admitted)."""
    if node.op == "requantize":
        return None, "requantize that does not follow an NPU op (only fused epilogues run there)"
    if node.op not in ANCHORS:
        return None, f"no NPU op kind runs {node.op}"
    kind = next((k for k in NPU_KINDS if k.anchor == node.op and k.claims(node, graph)), None)
    if kind is None:
        return None, f"this {node.op} matches no NPU op kind (rank, groups or axes)"
    epilogue = _epilogue(node, graph, consumers) if kind.fused_requantize else None
    if kind.fused_requantize and epilogue is None:
        return None, "no requantize epilogue to fuse (the NPU writes requantized codes only)"
    group = Group(kind.name, node, epilogue)
    if kind.name not in spec.ops:
        return group, f"the spec {spec.name!r} does not list {kind.name}"
    limits = spec.ops[kind.name]
    return group, _first(_io_problem(group, graph, limits),
                         _epilogue_problem(group, graph, kind),
                         kind.check(group, graph, limits))


def _epilogue(node: Node, graph: Graph, consumers: dict[str, list[Node]]) -> Node | None:
    out = node.outputs[0]
    users = consumers.get(out, [])
    if out in graph.outputs or len(users) != 1:
        return None
    user = users[0]
    return user if user.op == "requantize" and user.inputs[0] == out else None


def _io_problem(group: Group, graph: Graph, limits: OpLimits) -> str | None:
    inputs = [_dtype_problem("input", graph.types[v].dtype, limits.input)
              for v in group.inputs(graph)]
    out = graph.types[group.output].dtype
    allowed_out = limits.output or limits.input
    return _first(*inputs, _dtype_problem("output", out, allowed_out))


def _epilogue_problem(group: Group, graph: Graph, kind: NpuKind) -> str | None:
    rq = group.epilogue
    if rq is None:
        return None
    present = list(rq.present_inputs())
    if len(present) == 4:
        return "requantize with an offset (the NPU epilogue has none)"
    out = graph.types[rq.outputs[0]]
    mult = per_channel(graph, rq.inputs[1], out, kind.channel_axis)
    shift = per_channel(graph, rq.inputs[2], out, kind.channel_axis)
    if mult is None or shift is None:
        return "requantize parameters are not per-channel constants"
    if mult.min() < 0 or mult.max() >= MULT_LIMIT:
        return "requantize multiplier outside [0, 2^31)"
    return None if shift.min() >= 0 and shift.max() <= MAX_SHIFT else "shift outside [0, 62]"


__all__ = ["Group", "KINDS", "NPU_KINDS", "NpuKind", "Plan", "per_channel", "plan", "static"]
