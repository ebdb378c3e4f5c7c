"""Integer-only lowering (HAWQ-V3, I-BERT): a calibrated float graph becomes an integer program.

Invariant: every node between the boundary ``quantize`` (graph inputs) and ``dequantize``
(graph outputs) computes on integers only: int8 x int8 products accumulate in int32, every
rescale is a dyadic ``b / 2^c`` with one rounding rule (``lowbit.kernels.dyadic``), ReLU/ReLU6
are the requantization's clamp, and GELU/softmax/LayerNorm use I-BERT's integer algorithms.
``check_integer_only`` proves the invariant on the result and names any float op left inside.

Each float op is lowered by its row in ``lowering_rules.LOWERING_RULES``; an op without a row
stops the pass with an error naming the node and op. Every integer node keeps the origin of the
float node(s) it implements, so relevance and reports still point at the user's model.

Activation dtypes: int8 for values that feed products (linear, conv, matmul) and for the rest
by default; int16 for graph outputs and for values whose consumers are the I-BERT
nonlinearities, residual adds or other elementwise arithmetic, where 8 bits would cost
accuracy for no speed. One exception among product inputs: GELU's output (heavy-tailed, the
largest single error of 8-bit BERT, see BENCHMARKS.md) gets 15-bit codes in int16 when the
reading linear's int32 accumulator provably holds them with the actual weight codes
(W8A16 for that layer; the products stay exact in int32).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.errors import LowbitError, UnsupportedOpError
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.kernels import dyadic
from lowbit.passes.quantize.qparams import (EXACT_INT64, QParams, activation_qparams,
                                            quantize_tensor, quantize_weight_per_channel)

WIDE_CONSUMERS = frozenset({"softmax", "gelu", "layer_norm", "add", "sub", "mul", "div",
                            "sqrt", "pow", "reduce_mean", "reduce_sum"})
PRODUCT_CONSUMERS = frozenset({"linear", "conv", "matmul"})
SYMMETRIC_CONSUMERS = frozenset({"div", "sqrt", "pow"})
WIDE_PRODUCT_SOURCES = frozenset({"gelu"})
WIDE_PRODUCT_BITS = 15
BOUNDARY_OPS = frozenset({"quantize", "dequantize"})


@dataclass(frozen=True)
class LoweringOptions:
    bits: int = 8
    """Weight bits of every conv/linear not named in ``layer_bits``."""
    activation_bits: int = 8
    """Bits of the activation codes that feed products (stored in int8); graph inputs stay 8."""
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    """Weight bits per float node name (mixed precision), overriding ``bits``."""
    symmetric_activations: bool = False
    wide_dtype: str = "int16"
    # SmoothQuant strength for LayerNorm -> linear migration; None keeps per-tensor codes.
    migration_alpha: float | None = 0.8
    block_size: int | None = None
    """Linear weights get one scale per block of this many input channels (16, 32 or 64,
    ``block_lowering``); None keeps one scale per output channel."""


@dataclass(frozen=True)
class ConsumerCodes:
    """Codes of a value made for one consumer, whose weight columns absorb ``column_scale``."""

    codes: str
    qparams: QParams
    column_scale: np.ndarray


@dataclass
class LoweringContext:
    """State of one lowering: the float graph, its calibration and the integer graph so far."""

    source: Graph
    ranges: Mapping[str, tuple[float, float]]
    options: LoweringOptions
    builder: GraphBuilder
    channel_absmax: Mapping[str, np.ndarray] = field(default_factory=dict)
    bound: dict[str, tuple[str, QParams]] = field(default_factory=dict)
    per_consumer: dict[tuple[str, str], ConsumerCodes] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    stats: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.users = self.source.consumers()
        self.producer = self.source.producers()

    # values ---------------------------------------------------------------------------------
    def value(self, float_name: str) -> tuple[str, QParams]:
        """Codes and qparams of a value; constants are converted on first use (integer ones
        exactly, float ones per tensor, symmetric, in the wide dtype)."""
        if float_name not in self.bound and float_name in self.source.constants:
            self.bound[float_name] = self._constant_codes(float_name)
        if float_name not in self.bound:
            raise LowbitError(f"value {float_name!r} has no integer form (its producer was not "
                              "lowered)")
        return self.bound[float_name]

    def _constant_codes(self, float_name: str) -> tuple[str, QParams]:
        values = self.source.constants[float_name]
        if values.dtype.kind in "iu":
            return (self.add_constant(values.astype(np.int64), f"{float_name}.int"),
                    QParams(1.0, 0, "int64", exact=True))
        qparams = activation_qparams(float(values.min()), float(values.max()),
                                     self.options.wide_dtype, symmetric=True)
        return self.add_constant(quantize_tensor(values, qparams), f"{float_name}.q"), qparams

    def bind(self, float_name: str, int_name: str, qparams: QParams) -> None:
        self.bound[float_name] = (int_name, qparams)

    def constant(self, float_name: str) -> np.ndarray | None:
        return self.source.constants.get(float_name)

    def is_constant(self, float_name: str) -> bool:
        return float_name in self.source.constants

    def range_of(self, float_name: str) -> tuple[float, float]:
        if float_name not in self.ranges:
            raise LowbitError(f"no calibrated range for value {float_name!r}")
        return self.ranges[float_name]

    def weight_bits(self, node: Node) -> int:
        return self.options.layer_bits.get(node.name, self.options.bits)

    def qparams_for(self, float_name: str, consumers: Iterable[Node] | None = None,
                    bits: int | None = None) -> QParams:
        """Activation qparams of a value, its dtype chosen by what consumes it; int8 codes
        have ``options.activation_bits`` unless ``bits`` says otherwise."""
        users = self.users.get(float_name, []) if consumers is None else consumers
        consumers = {n.op for n in users}
        is_output = float_name in self.source.outputs  # dequantized: no product reads it
        wide = ((bool(consumers & WIDE_CONSUMERS) or is_output)
                and not consumers & PRODUCT_CONSUMERS)
        dtype = self.options.wide_dtype if wide else "int8"
        symmetric = self.options.symmetric_activations or bool(consumers & SYMMETRIC_CONSUMERS)
        lo, hi = self.range_of(float_name)
        if not wide and bits is None:
            wide_codes = activation_qparams(lo, hi, self.options.wide_dtype, symmetric,
                                            WIDE_PRODUCT_BITS)
            if self._wide_product_input(float_name, users, wide_codes):
                return wide_codes
        narrow = bits or self.options.activation_bits
        return activation_qparams(lo, hi, dtype, symmetric,
                                  None if wide or narrow >= 8 else narrow)

    def _wide_product_input(self, float_name: str, users: Iterable[Node], codes: QParams
                            ) -> bool:
        """A heavy-tailed value (GELU's output) read only by linears whose int32 accumulator
        provably holds its 15-bit ``codes``: for every output channel, the interval sum of
        ``w_q[o, k] * (code - zero_point)`` over the code range stays inside ``±2^30``,
        leaving half of int32 for the bias."""
        producer = self.producer.get(float_name)
        readers = list(users)
        if (producer is None or producer.op not in WIDE_PRODUCT_SOURCES or not readers
                or self.options.activation_bits < 8 or self.options.block_size):
            return False
        for reader in readers:
            weight = self.constant(reader.inputs[1]) if reader.op == "linear" else None
            if weight is None or reader.inputs[0] != float_name:
                return False
            w_q, _ = quantize_weight_per_channel(weight, self.weight_bits(reader))
            w_q = w_q.astype(np.int64)
            low, high = codes.qmin - codes.zero_point, codes.qmax - codes.zero_point
            most = np.maximum(np.abs(np.minimum(w_q * low, w_q * high).sum(axis=1)),
                              np.abs(np.maximum(w_q * low, w_q * high).sum(axis=1)))
            if most.max() >= 1 << 30:
                return False
        return True

    def sole_consumer(self, float_name: str) -> Node | None:
        users = self.users.get(float_name, [])
        if len(users) == 1 and float_name not in self.source.outputs:
            return users[0]
        return None

    # emission -------------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[str], origin: Iterable[int],
             attrs: Mapping[str, Any] | None = None, hint: str | None = None) -> str:
        return self.builder.add(op, inputs, frozenset(origin), attrs, hint)

    def add_constant(self, array: np.ndarray, hint: str) -> str:
        return self.builder.add_constant(array, hint)

    def requantize(self, acc: str, ratio: float | np.ndarray, out: QParams,
                   origin: Iterable[int], hint: str, qmin: int | None = None,
                   qmax: int | None = None, channel_shape: tuple[int, ...] | None = None,
                   offset: np.ndarray | None = None) -> str:
        """Emit ``requantize`` of ``acc`` (real = ratio-scaled codes) into ``out`` codes."""
        ratios = np.atleast_1d(np.asarray(ratio, np.float64))
        mult, shift = dyadic_or_zero(ratios)
        shape = channel_shape or ()
        inputs = [acc, self.add_constant(mult.reshape(shape), f"{hint}.mult"),
                  self.add_constant(shift.reshape(shape), f"{hint}.shift")]
        if offset is not None:
            inputs.append(self.add_constant(offset.reshape(shape), f"{hint}.offset"))
        return self.emit("requantize", inputs, origin,
                         {"zero_point": out.zero_point, "dtype": out.dtype,
                          "qmin": out.qmin if qmin is None else qmin,
                          "qmax": out.qmax if qmax is None else qmax}, hint)


def dyadic_or_zero(ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Dyadic multipliers; ratios too small to matter for 32-bit accumulators become 0."""
    tiny = np.abs(ratios) < 2.0**-40
    mult, shift = dyadic(np.where(tiny, 0.0, np.abs(ratios)))
    return np.where(ratios < 0, -mult, mult).astype(np.int64), shift.astype(np.int64)


def lower_graph(graph: Graph, ranges: Mapping[str, tuple[float, float]],
                options: LoweringOptions = LoweringOptions(),
                channel_absmax: Mapping[str, np.ndarray] | None = None
                ) -> tuple[Graph, dict[str, Any]]:
    from lowbit.passes.quantize.lowering_rules import LOWERING_RULES

    input_ranges = {name: [int(np.floor(ranges[name][0])), int(np.ceil(ranges[name][1]))]
                    for name in graph.inputs if graph.types[name].dtype in INT_RANGES
                    and name in ranges}
    builder = GraphBuilder(graph.name, metadata={**graph.metadata, "stage": "integer",
                                                 "bits": options.bits,
                                                 "activation_bits": options.activation_bits,
                                                 "layer_bits": dict(options.layer_bits),
                                                 "block_size": options.block_size,
                                                 "input_ranges": input_ranges})
    builder.graph.captured.update(graph.captured)
    ctx = LoweringContext(graph, ranges, options, builder, channel_absmax or {})
    for name in graph.inputs:
        _lower_input(ctx, name)
    for node in graph.nodes:
        if node.name in ctx.done:
            continue
        rule = LOWERING_RULES.get(node.op)
        if rule is None:
            raise UnsupportedOpError("no integer lowering rule for this op", node=node.name,
                                     op=node.op)
        try:
            rule(ctx, node)
        except LowbitError as err:
            err.node, err.op = err.node or node.name, err.op or node.op
            raise
        except (ValueError, ArithmeticError) as err:
            raise LowbitError(f"integer lowering failed: {err}", node=node.name,
                              op=node.op) from None
    outputs = [_lower_output(ctx, name) for name in graph.outputs]
    _attach_absorbed_origins(ctx)
    builder.graph.metadata["quantized_values"] = _value_map(ctx)
    result = builder.finish(outputs)
    check_integer_only(result)
    return result, ctx.stats


def _value_map(ctx: LoweringContext) -> dict[str, dict[str, Any]]:
    """Which integer value carries each float value, and how to read it as real numbers
    (``real = scale * (codes - zero_point)``): relevance and reports use this map."""
    def current(name: str) -> str:
        while name in ctx.builder.renamed:
            name = ctx.builder.renamed[name]
        return name

    return {float_name: {"codes": current(codes), "scale": qparams.scale,
                         "zero_point": qparams.zero_point}
            for float_name, (codes, qparams) in ctx.bound.items()
            if float_name not in ctx.source.constants}


def _attach_absorbed_origins(ctx: LoweringContext) -> None:
    """A float node that became no integer op (a constant factor folded into a scale, an exact
    cast) is implemented by its consumers' integer nodes: they inherit its origin."""
    emitted = ctx.builder.graph.nodes
    covered = frozenset().union(*(n.origin for n in emitted))
    for node in reversed(ctx.source.nodes):
        missing = node.origin - covered
        if not missing:
            continue
        consumers = frozenset().union(*(c.origin for v in node.outputs
                                        for c in ctx.users.get(v, [])))
        for target in emitted:
            if target.origin & consumers:
                target.origin = target.origin | missing
        covered |= missing


def _lower_input(ctx: LoweringContext, name: str) -> None:
    ttype = ctx.source.types[name]
    name_in = ctx.builder.add_input(name, ttype)
    if ttype.dtype in INT_RANGES:
        ctx.bind(name, name_in, EXACT_INT64 if ttype.dtype == "int64" else
                 QParams(1.0, 0, ttype.dtype, exact=True))
        return
    origin = frozenset().union(*(n.origin for n in ctx.users.get(name, [])))
    qparams = ctx.qparams_for(name, bits=8)  # the boundary quantize keeps 8-bit codes
    codes = ctx.emit("quantize", [name_in], origin,
                     {"scale": qparams.scale, "zero_point": qparams.zero_point,
                      "dtype": qparams.dtype}, f"{name}.q")
    ctx.bind(name, codes, qparams)


def _lower_output(ctx: LoweringContext, name: str) -> str:
    codes, qparams = ctx.value(name)
    origin = ctx.producer[name].origin if name in ctx.producer else frozenset(ctx.source.captured)
    value = ctx.emit("dequantize", [codes], origin,
                     {"scale": qparams.scale, "zero_point": qparams.zero_point}, f"{name}.dq")
    return ctx.builder.rename_value(value, name)


def check_integer_only(graph: Graph) -> None:
    """No float value inside: only boundary quantize/dequantize touch floats."""
    for node in graph.nodes:
        types = [graph.types[v] for v in list(node.present_inputs()) + list(node.outputs)]
        floats = [t for t in types if t.dtype.startswith("float")]
        if node.op == "quantize" and node.inputs[0] in graph.inputs:
            continue
        if node.op == "dequantize" and all(o in graph.outputs for o in node.outputs):
            continue
        if floats or node.op in BOUNDARY_OPS:
            raise LowbitError("float computation inside the integer program", node=node.name,
                              op=node.op)
