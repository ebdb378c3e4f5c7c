"""ONNX exporter: a lowbit graph to a standard ONNX model that onnxruntime runs bit-exactly.

Invariant: for any inputs the reference interpreter accepts, onnxruntime (CPU) running the
exported model gives the same arrays as ``run_graph``, element for element and dtype for
dtype. Only default-domain ops of opset ``OPSET`` are used, no custom op.

``ONNX_EXPORT_RULES[op](em, *operands, **attrs)`` emits one lowbit node (see ``onnx_emit``);
integer ops are in ``onnx_int_rules``, data movement and the float-table ops lowered programs
use on integer tensors in ``onnx_data_rules``, the float ops of captured graphs in
``onnx_float_rules`` (float graphs match to float tolerance, integer programs bit for bit). An op with no rule is a ``LowbitError`` naming
the node and op; so is a rule's refusal (a ``ValueError``, e.g. a dtype ONNX lacks).

Names: graph inputs, constants (initializers) and every node output keep their lowbit names,
so intermediate values can be compared one by one; names the exporter invents contain ``/``.
Batch-sized dimensions become the symbolic dimension ``N`` (``2*N`` for ``Sym(2)``) of the
inputs and outputs; the model computes sizes that depend on ``N`` at run time.
"""

from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import helper

from lowbit.compiler.dims import Sym
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.exporters.onnx_block_rules import BLOCK_RULES
from lowbit.compiler.exporters.onnx_data_rules import DATA_RULES
from lowbit.compiler.exporters.onnx_emit import Emitter, ExportRule, onnx_elem_type
from lowbit.compiler.exporters.onnx_float_rules import FLOAT_RULES
from lowbit.compiler.exporters.onnx_int_rules import INT_RULES
from lowbit.compiler.exporters.onnx_log2_rules import LOG2_RULES
from lowbit.compiler.fileio import write_atomically
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import TensorType

OPSET = 17

RULE_TABLES: tuple[dict[str, ExportRule], ...] = (DATA_RULES, INT_RULES, BLOCK_RULES,
                                                  FLOAT_RULES, LOG2_RULES)
ONNX_EXPORT_RULES: dict[str, ExportRule] = {op: rule for table in RULE_TABLES
                                            for op, rule in table.items()}
if len(ONNX_EXPORT_RULES) != sum(len(table) for table in RULE_TABLES):
    raise RuntimeError("an op has export rules in two tables")


def export_onnx(graph: Graph, path: str | os.PathLike[str]) -> Path:
    """Write ``graph`` as an ONNX file (atomically); returns the path written."""
    model = to_onnx_model(graph)
    return write_atomically(path, lambda handle: handle.write(model.SerializeToString()))


def to_onnx_model(graph: Graph) -> onnx.ModelProto:
    """The ONNX model of a verified lowbit graph; raises LowbitError for what it cannot export."""
    graph.verify()
    em = Emitter(graph)
    for node in graph.nodes:
        _export_node(em, node)
    for name in graph.outputs:  # an output may be an input or constant, under its own name
        em.use(em.operand(name))
    onnx_graph = helper.make_graph(
        em.nodes, graph.name,
        [_value_info(name, graph.types[name]) for name in graph.inputs],
        [_value_info(name, graph.types[name]) for name in graph.outputs],
        em.initializer_protos())
    opsets = [helper.make_opsetid("", OPSET)]
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="lowbit",
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


def _export_node(em: Emitter, node: Node) -> None:
    export = ONNX_EXPORT_RULES.get(node.op)
    if export is None:
        raise LowbitError("op has no ONNX export rule", node=node.name, op=node.op)
    spec = OP_TABLE[node.op]
    operands = [em.operand(v) if v else None for v in node.inputs]
    operands += [None] * (len(spec.inputs) - len(operands))
    em.scope, first = node.name, len(em.nodes)
    try:
        results = export(em, *operands, **spec.with_defaults(node.attrs))
    except ValueError as err:
        raise LowbitError(f"cannot export: {err}", node=node.name, op=node.op) from None
    results = results if isinstance(results, tuple) else (results,)
    for result, name in zip(results, node.outputs, strict=True):
        _rename_result(em, result, name, first)


def _rename_result(em: Emitter, result: str, name: str, first: int) -> None:
    """Give the value ``result``, computed by nodes ``em.nodes[first:]``, the lowbit ``name``:
    rename it there if one of those nodes made it, else copy it with an Identity."""
    made_here = any(result in n.output for n in em.nodes[first:])
    if not made_here:
        em.dtypes[name] = em.dtypes[result]
        em.nodes.append(helper.make_node("Identity", [result], [name],
                                         name=em.fresh("Identity", scope=f"{em.scope}/node")))
        return
    for onnx_node in em.nodes[first:]:
        for field in (onnx_node.input, onnx_node.output):
            for i, value in enumerate(field):
                if value == result:
                    field[i] = name
    em.dtypes[name] = em.dtypes[result]


def _value_info(name: str, ttype: TensorType) -> onnx.ValueInfoProto:
    dims = [str(d) if isinstance(d, Sym) else int(d) for d in ttype.shape]
    return helper.make_tensor_value_info(name, onnx_elem_type(ttype.dtype), dims)
