"""The relevance column of the op table: one row per op, keyed by op name like ``OP_TABLE``.

A row gives the op's default rule (what runs when no composite entry matches it) and, for ops
that are affine in their live operand, that affine view, which lets any linear rule (epsilon,
gamma, z+, alpha-beta, flat) apply to the op. An op whose values never carry relevance (bool
results, the integer program) has a row with ``rule=None`` and the reason; the engine stops
with an error naming the node and op if relevance ever reaches such an op, or an op with no row
at all. A new op needs one row here; ``tests/test_relevance_rules.py`` checks that every op of
``OP_TABLE`` has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lowbit.passes.relevance import linear_maps, routing
from lowbit.passes.relevance.attention_rules import LayerNormIdentity, SoftmaxTaylor, Stop
from lowbit.passes.relevance.base import Affine, Rule, Step
from lowbit.passes.relevance.elementwise_rules import (Identity, Numerator, ProportionalSplit,
                                                       Route, UniformProduct)
from lowbit.passes.relevance.linear_rules import AlphaBeta, Epsilon, Flat, Gamma, ZPlus

AffineFn = Callable[[Step], tuple[Affine, ...]]


@dataclass(frozen=True)
class RelevanceRow:
    rule: Rule | None
    affine: AffineFn | None = None
    reason: str = ""


def _route(back: Callable[[Step], routing.Routed]) -> RelevanceRow:
    return RelevanceRow(Route(back))


_INTEGER = ("integer program op: relevance on lowered graphs is not implemented yet "
            "(explain the float graph; origins map it to the same captured nodes)")
_IDENTITY_OPS = ("relu", "clip", "gelu", "silu", "sigmoid", "tanh", "erf", "exp", "log", "sqrt",
                 "neg", "abs", "reciprocal", "cast")
_INTEGER_OPS = ("quantize", "dequantize", "requantize", "int_linear", "int_conv", "int_matmul",
                "int_mul", "int_sum", "int_add", "int_div", "int_softmax", "int_gelu",
                "int_layernorm", "int_sqrt", "int_log2_matmul", "int_block_linear")

RELEVANCE_TABLE: dict[str, RelevanceRow] = {
    **{op: RelevanceRow(Identity()) for op in _IDENTITY_OPS},
    "add": RelevanceRow(ProportionalSplit()),
    "sub": RelevanceRow(ProportionalSplit()),
    "mul": RelevanceRow(UniformProduct()),
    "div": RelevanceRow(Numerator()),
    "pow": RelevanceRow(Numerator()),
    "maximum": _route(routing.maximum_back),
    "minimum": _route(routing.minimum_back),
    "where": _route(routing.where_back),
    "linear": RelevanceRow(Epsilon(), linear_maps.linear_affines),
    "matmul": RelevanceRow(Epsilon(), linear_maps.matmul_affines),
    "conv": RelevanceRow(Epsilon(), linear_maps.conv_affines),
    "batch_norm": RelevanceRow(Epsilon(), linear_maps.batch_norm_affines),
    "avg_pool": RelevanceRow(Epsilon(), linear_maps.avg_pool_affines),
    "reduce_mean": RelevanceRow(Epsilon(), linear_maps.reduce_mean_affines),
    "reduce_sum": RelevanceRow(Epsilon(), linear_maps.reduce_sum_affines),
    "layer_norm": RelevanceRow(LayerNormIdentity()),
    "softmax": RelevanceRow(SoftmaxTaylor()),
    "max_pool": _route(routing.max_pool_back),
    "reduce_max": _route(routing.reduce_max_back),
    "reshape": _route(routing.reshape_back),
    "transpose": _route(routing.transpose_back),
    "slice": _route(routing.slice_back),
    "concat": _route(routing.concat_back),
    "expand": _route(routing.expand_back),
    "gather": _route(routing.gather_back),
    "equal": RelevanceRow(None, reason="bool result: carries no relevance"),
    **{op: RelevanceRow(None, reason=_INTEGER) for op in _INTEGER_OPS},
}

LINEAR_RULES: dict[str, Rule] = {
    "epsilon": Epsilon(), "gamma": Gamma(), "zplus": ZPlus(), "alphabeta": AlphaBeta(),
    "flat": Flat(),
}
"""The linear rules by name, with zennit's defaults; ``--rule`` offers all but flat, which the
``*-flat`` composites put on the first layer only."""

NAMED_RULES: dict[str, Rule] = {**LINEAR_RULES, "identity": Identity(),
                                "proportional": ProportionalSplit(), "uniform": UniformProduct(),
                                "softmax-taylor": SoftmaxTaylor(),
                                "layer-norm-identity": LayerNormIdentity(), "stop": Stop()}
"""Rules a per-node override may name on the command line."""
