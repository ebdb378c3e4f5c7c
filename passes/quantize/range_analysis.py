"""Static range analysis of an integer program: proves that no accumulator can overflow.

Interval arithmetic over the graph, one rule per integer op, starting from the codes a
``quantize`` can produce and the calibrated ranges of integer inputs. Products against constant
weights are bounded per output channel from the actual weights (tight, not ``K * 127 * 127``).
A node is *proved* when its interval fits its declared dtype and, for requantizations and
residual adds, when the int64 intermediate stays below 2^62. ``RangeReport.accumulator_bits``
gives each node's worst case in bits (result or intermediate, whichever is wider);
``tests/test_range_property.py`` checks on random programs that no value ever exceeds it.
The interpreter still checks at run time (an overflow raises an error naming the node); this
analysis shows it cannot happen for inputs in the calibrated range.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan
from lowbit.compiler.ops.integer_block import weight_codes
from lowbit.compiler.ops.integer_log2 import ODD_MULT, ODD_SHIFT, frac_bits
from lowbit.kernels import apply_gelu

Interval = tuple[int, int]
RangeRule = Callable[["RangeState", Node], Interval | None]
RANGE_RULES: dict[str, RangeRule] = {}
INT64_SAFE = 2**62


@dataclass
class RangeState:
    graph: Graph
    intervals: dict[str, Interval] = field(default_factory=dict)
    intermediate: dict[str, int] = field(default_factory=dict)

    def of(self, value: str) -> Interval:
        if value in self.intervals:
            return self.intervals[value]
        array = self.graph.constants[value]
        return int(array.min()), int(array.max())


@dataclass(frozen=True)
class RangeReport:
    intervals: dict[str, Interval]
    unproved: list[str]
    worst_int32_use: float  # largest |bound| / 2^31 over int32 accumulators
    accumulator_bits: dict[str, int] = field(default_factory=dict)
    """Per analysed node: the signed bits its worst case needs, of the result or, where
    larger, of the int64 intermediate (a requantization's product)."""

    def summary(self) -> str:
        if self.unproved:
            return f"NOT proved for {len(self.unproved)} node(s): {', '.join(self.unproved)}"
        return (f"no overflow possible for inputs in the calibrated range (largest int32 "
                f"accumulator uses {self.worst_int32_use:.1%} of its range)")


def signed_bits(low: int, high: int) -> int:
    """The fewest bits of a two's complement integer holding every value in [low, high]."""
    low, high = int(low), int(high)
    return max((-low - 1).bit_length() if low < 0 else 0, high.bit_length() if high > 0 else 0) + 1


def range_rule(*ops: str) -> Callable[[RangeRule], RangeRule]:
    def register(fn: RangeRule) -> RangeRule:
        for op in ops:
            RANGE_RULES[op] = fn
        return fn
    return register


def _span(*values: int) -> Interval:
    return min(values), max(values)


def _shifted(interval: Interval, zero_point: int) -> Interval:
    return interval[0] - zero_point, interval[1] - zero_point


def _product(a: Interval, b: Interval) -> Interval:
    return _span(a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1])


@range_rule("quantize", "requantize", "int_add")
def clamped(state: RangeState, node: Node) -> Interval:
    if node.op == "quantize":
        return INT_RANGES[node.attrs.get("dtype", "int8")]
    if node.op == "requantize":
        acc = state.of(node.inputs[0])
        mult = state.of(node.inputs[1])
        offset = state.of(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else (0, 0)
        state.intermediate[node.name] = max(abs(v) for v in _product(acc, mult)) + max(
            abs(v) for v in offset)
    else:
        a = _shifted(state.of(node.inputs[0]), node.attrs.get("a_zero_point", 0))
        b = _shifted(state.of(node.inputs[1]), node.attrs.get("b_zero_point", 0))
        state.intermediate[node.name] = (max(abs(v) for v in _product(a, (node.attrs["a_mult"],) * 2))
                                         + max(abs(v) for v in _product(b, (node.attrs["b_mult"],) * 2)))
    return node.attrs.get("qmin", -128), node.attrs.get("qmax", 127)


def _weighted_sum_bounds(x: Interval, weights: np.ndarray, bias: np.ndarray | None) -> Interval:
    """Per output channel (axis 0): sum over the rest of max/min of w * [x.lo, x.hi] and 0."""
    w = weights.reshape(weights.shape[0], -1).astype(object)
    low = np.minimum(np.minimum(w * x[0], w * x[1]), 0).sum(axis=1)
    high = np.maximum(np.maximum(w * x[0], w * x[1]), 0).sum(axis=1)
    if bias is not None:
        low, high = low + bias.astype(object), high + bias.astype(object)
    return int(low.min()), int(high.max())


@range_rule("int_linear", "int_conv")
def weighted(state: RangeState, node: Node) -> Interval:
    x = _shifted(state.of(node.inputs[0]), node.attrs.get("x_zero_point", 0))
    bias = state.graph.constants[node.inputs[2]] if len(node.inputs) > 2 and node.inputs[2] \
        else None
    return _weighted_sum_bounds(x, state.graph.constants[node.inputs[1]], bias)


@range_rule("int_block_linear")
def block_weighted(state: RangeState, node: Node) -> Interval:
    """Per (channel, block): the partial's bounds from the actual weights (must fit int32);
    the int64 accumulator sums ``mult * partial`` bounds over the blocks of each channel."""
    x = _shifted(state.of(node.inputs[0]), node.attrs.get("x_zero_point", 0))
    block = node.attrs["block_size"]
    codes = weight_codes(state.graph.constants[node.inputs[1]], node.attrs.get("weight_bits", 8))
    mult = state.graph.constants[node.inputs[2]].astype(object)
    w = codes.astype(object).reshape(codes.shape[0], -1, block)
    low = np.minimum(np.minimum(w * x[0], w * x[1]), 0).sum(axis=2)
    high = np.maximum(np.maximum(w * x[0], w * x[1]), 0).sum(axis=2)
    acc_low = np.minimum(low * mult, high * mult).sum(axis=1)
    acc_high = np.maximum(low * mult, high * mult).sum(axis=1)
    partial = max(-int(low.min()), int(high.max()))
    state.intermediate[node.name] = (max(-int(acc_low.min()), int(acc_high.max()))
                                     if partial < 2**31 else INT64_SAFE)  # int32 partials
    return int(acc_low.min()), int(acc_high.max())


@range_rule("int_matmul")
def matmul(state: RangeState, node: Node) -> Interval:
    a = _shifted(state.of(node.inputs[0]), node.attrs.get("a_zero_point", 0))
    b = _shifted(state.of(node.inputs[1]), node.attrs.get("b_zero_point", 0))
    depth = int(state.graph.types[node.inputs[0]].shape[-1])
    low, high = _product(a, b)
    return depth * min(low, 0), depth * max(high, 0)


@range_rule("int_log2_matmul")
def log2_matmul(state: RangeState, node: Node) -> Interval:
    """Each term is ``u << s`` with ``s <= F``; the odd sum takes ``odd_mult``, the even sum
    ``2^odd_shift``, whichever is larger bounds both."""
    low, high = _shifted(state.of(node.inputs[1]), node.attrs.get("v_zero_point", 0))
    depth = int(state.graph.types[node.inputs[0]].shape[-1])
    gain = max(node.attrs.get("odd_mult", ODD_MULT),
               1 << node.attrs.get("odd_shift", ODD_SHIFT))
    scale = depth * gain << frac_bits(node.attrs["zero_code"])
    return scale * min(low, 0), scale * max(high, 0)


@range_rule("int_mul")
def multiply(state: RangeState, node: Node) -> Interval:
    return _product(_shifted(state.of(node.inputs[0]), node.attrs.get("a_zero_point", 0)),
                    _shifted(state.of(node.inputs[1]), node.attrs.get("b_zero_point", 0)))


@range_rule("int_sum")
def total(state: RangeState, node: Node) -> Interval:
    shape = state.graph.types[node.inputs[0]].shape
    count = math.prod(int(shape[a]) for a in node.attrs["axes"])
    low, high = _shifted(state.of(node.inputs[0]), node.attrs.get("zero_point", 0))
    return count * min(low, 0), count * max(high, 0)


@range_rule("int_div")
def divide(state: RangeState, node: Node) -> Interval:
    a, b = state.of(node.inputs[0]), state.of(node.inputs[1])
    if b[0] <= 0 <= b[1]:
        return INT_RANGES["int64"]
    smallest = min(abs(b[0]), abs(b[1]))
    largest = max(abs(a[0]), abs(a[1])) << node.attrs.get("shift", 0)
    return -(largest // smallest), largest // smallest


@range_rule("int_softmax")
def softmax(state: RangeState, node: Node) -> Interval:
    return 0, (1 << node.attrs.get("out_bits", 8)) - 1


@range_rule("int_gelu")
def gelu(state: RangeState, node: Node) -> Interval:
    low, high = _shifted(state.of(node.inputs[0]), node.attrs.get("zero_point", 0))
    codes = np.arange(low, high + 1, dtype=np.int64)  # at most 2^16 codes: evaluate them all
    values = apply_gelu(gelu_plan(node.attrs["scale"]), codes)
    return int(values.min()), int(values.max())


@range_rule("int_layernorm")
def layernorm(state: RangeState, node: Node) -> Interval:
    channels = int(state.graph.types[node.inputs[0]].shape[-1])
    bound = math.isqrt(channels - 1) * 2**24 + 2**24 + 1
    return -bound, bound


@range_rule("int_sqrt")
def square_root(state: RangeState, node: Node) -> Interval:
    low, high = state.of(node.inputs[0])
    return math.isqrt(max(low, 0)), math.isqrt(max(high, 0))


@range_rule("reshape", "transpose", "slice", "expand", "max_pool", "reduce_max", "cast")
def same(state: RangeState, node: Node) -> Interval:
    return state.of(node.inputs[0])


@range_rule("concat")
def union(state: RangeState, node: Node) -> Interval:
    parts = [state.of(v) for v in node.present_inputs()]
    return min(p[0] for p in parts), max(p[1] for p in parts)


@range_rule("where")
def select(state: RangeState, node: Node) -> Interval:
    a, b = state.of(node.inputs[1]), state.of(node.inputs[2])
    return min(a[0], b[0]), max(a[1], b[1])


@range_rule("gather")
def lookup(state: RangeState, node: Node) -> Interval:
    return state.of(node.inputs[0])


@range_rule("equal")
def boolean(state: RangeState, node: Node) -> Interval:
    return 0, 1


@range_rule("neg")
def negate(state: RangeState, node: Node) -> Interval:
    low, high = state.of(node.inputs[0])
    return -high, -low


@range_rule("add", "sub")
def exact_arithmetic(state: RangeState, node: Node) -> Interval:
    a, b = state.of(node.inputs[0]), state.of(node.inputs[1])
    if node.op == "sub":
        b = (-b[1], -b[0])
    return a[0] + b[0], a[1] + b[1]


@range_rule("clip")
def clip(state: RangeState, node: Node) -> Interval:
    low, high = state.of(node.inputs[0])
    floor, ceiling = node.attrs.get("min"), node.attrs.get("max")
    low = low if floor is None else max(low, int(math.ceil(floor)))
    high = high if ceiling is None else min(high, int(math.floor(ceiling)))
    return low, high


def analyze_ranges(graph: Graph, input_ranges: Mapping[str, Interval] | None = None
                   ) -> RangeReport:
    state = RangeState(graph)
    declared = graph.metadata.get("input_ranges", {})
    for name in graph.inputs:
        dtype = graph.types[name].dtype
        if dtype in INT_RANGES:
            bounds = (input_ranges or {}).get(name) or declared.get(name) or INT_RANGES[dtype]
            state.intervals[name] = (int(bounds[0]), int(bounds[1]))
    unproved, worst, bits = [], 0.0, {}
    for node in graph.nodes:
        if node.op == "dequantize":
            continue
        rule = RANGE_RULES.get(node.op)
        if rule is None:
            unproved.append(f"{node.name} ({node.op}: no range rule)")
            continue
        interval = rule(state, node)
        out_type = graph.types[node.outputs[0]]
        state.intervals[node.outputs[0]] = interval
        magnitude = state.intermediate.get(node.name, 0)
        bits[node.name] = max(signed_bits(*interval), signed_bits(-magnitude, magnitude))
        lo, hi = INT_RANGES.get(out_type.dtype, (0, 1))
        if not lo <= interval[0] <= interval[1] <= hi or \
                state.intermediate.get(node.name, 0) >= INT64_SAFE:
            unproved.append(node.name)
        if out_type.dtype == "int32":
            worst = max(worst, max(abs(interval[0]), abs(interval[1])) / 2**31)
    return RangeReport(state.intervals, unproved, worst, bits)
