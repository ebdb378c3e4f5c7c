"""Relax dataflow patterns of the NPU op kinds, as ``tvm_emit.to_relax`` writes them.

Invariant: a composite function made by ``FuseOpsByPattern`` holds exactly the Relax bindings
of one group that ``kinds.plan`` admitted, all of them and nothing else; the check function
refuses any other match (a partial op, two ops, an op the spec refused), so those bindings
stay on the host. ``to_relax_traced`` says which lowbit node made each binding, which is how
a match is traced back to nodes; the composite function carries the node names in its
``lowbit_nodes`` attribute for the external code generator.

Each pattern follows the emitters of ``tvm_int_rules`` / ``tvm_data_rules``: an operand
widened by ``astype`` and, for a non-zero zero point, a ``subtract``; the product with a
constant weight; an optional bias ``add``; then the requantize epilogue (``astype`` to int64,
``multiply`` unless the multiplier is 1, the rounding ``add`` + ``right_shift`` unless the
shift is 0, ``add`` of a non-zero zero point, ``clip``, ``astype``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, wildcard
from tvm.relax.transform import FusionPattern, PatternCheckContext

from lowbit.compiler.codegen.npu.kinds import Group, Plan
from lowbit.compiler.codegen.npu.spec import NpuSpec
from lowbit.compiler.ir import Graph

CODEGEN = "lowbit_npu"
NODES_ATTR = "lowbit_nodes"


def _widen(x: DFPattern) -> DFPattern:
    cast = is_op("relax.astype")(x)
    return cast | is_op("relax.subtract")(cast, is_const())


def _optional(p: DFPattern, op: str) -> DFPattern:
    """``p``, or the binary ``op`` of ``p`` with a constant."""
    return p | is_op(op)(p, is_const())


def _rescale_tail(scaled: DFPattern) -> DFPattern:
    """Rounding shift, zero point, clamp and narrowing cast after the int64 product."""
    shifted = scaled | is_op("relax.right_shift")(is_op("relax.add")(scaled, is_const()),
                                                  is_const())
    codes = _optional(shifted, "relax.add")
    return is_op("relax.astype")(is_op("relax.clip")(codes, wildcard(), wildcard()))


def _requantize(acc: DFPattern) -> DFPattern:
    return _rescale_tail(_optional(is_op("relax.astype")(acc), "relax.multiply"))


def _conv2d() -> DFPattern:
    conv = is_op("relax.nn.conv2d")(_widen(wildcard()), is_const())
    return _requantize(_optional(conv, "relax.add"))


def _fully_connected() -> DFPattern:
    product = is_op("relax.matmul")(_widen(wildcard()), is_const())
    return _requantize(_optional(product, "relax.add"))


def _add() -> DFPattern:
    def scaled() -> DFPattern:
        return _optional(_widen(wildcard()), "relax.multiply")
    return _rescale_tail(is_op("relax.add")(scaled(), scaled()))


def _max_pool2d() -> DFPattern:
    return is_op("relax.nn.max_pool2d")(wildcard())


def _global_avg_pool2d() -> DFPattern:
    total = is_op("relax.astype")(is_op("relax.sum")(_widen(wildcard())))
    return _requantize(total)


PATTERNS: dict[str, Callable[[], DFPattern]] = {
    "conv2d": _conv2d, "depthwise_conv2d": _conv2d, "fully_connected": _fully_connected,
    "add": _add, "max_pool2d": _max_pool2d, "global_avg_pool2d": _global_avg_pool2d,
}


class Matcher:
    """The fusion patterns of a spec, checked against the plan of one graph; ``origins`` maps
    each binding of its Relax ``main`` to the node that made it (``to_relax_traced``)."""

    def __init__(self, graph: Graph, plan: Plan, spec: NpuSpec, origins: dict[str, str]
                 ) -> None:
        self.graph = graph
        self.spec = spec
        self.origins = origins
        self.bindings = Counter(origins.values())
        self.groups = {frozenset(n.name for n in g.nodes): g for g in plan.groups}
        self._accepted: Group | None = None

    def patterns(self) -> list[FusionPattern]:
        made = {kind: PATTERNS[kind]() for kind in PATTERNS if kind in self.spec.ops}
        return [FusionPattern(f"{CODEGEN}.{kind}", pattern, {"root": pattern},
                              self._check(kind), self._attrs)
                for kind, pattern in made.items()]

    def _check(self, kind: str) -> Callable[[PatternCheckContext], bool]:
        def check(context: PatternCheckContext) -> bool:
            group = self._group_of(context)
            accepted = group is not None and group.kind == kind
            self._accepted = group if accepted else None
            return accepted
        return check

    def _group_of(self, context: PatternCheckContext) -> Group | None:
        names = [self.origins.get(var.name, "") for var in context.matched_bindings.keys()]
        group = self.groups.get(frozenset(names))
        if group is None:
            return None
        complete = all(names.count(n.name) == self.bindings[n.name] for n in group.nodes)
        return group if complete else None

    def _attrs(self, annotated: dict[str, relax.Expr]) -> dict[str, str]:
        """The nodes of the match just accepted: ``FuseOpsByPattern`` asks for a composite
        function's attributes right after its check accepted the match (the result's type
        must be the group's, or this is not that match)."""
        group, self._accepted = self._accepted, None
        root = annotated["root"].ty
        want = self.graph.types[group.output] if group is not None else None
        if want is None or str(root.dtype) != want.dtype or len(root.shape.values) != want.rank:
            raise RuntimeError("NPU composite attributes asked for a match that was not the "
                               "one just accepted")
        return {NODES_ATTR: ",".join(n.name for n in group.nodes)}


__all__ = ["CODEGEN", "Matcher", "NODES_ATTR", "PATTERNS"]
