"""TVM code generation: a lowbit integer program to one Relax ``IRModule``.

Invariant: for any inputs the reference interpreter accepts, the built module gives the same
arrays as ``run_graph``, element for element and dtype for dtype.

``TVM_EMITTERS[op](em, *operands, **attrs)`` binds the Relax ops of one lowbit node (see
``tvm_context``); integer ops are in ``tvm_int_rules``, data movement and the float-table ops
lowered programs use on integer tensors in ``tvm_data_rules``. An op with no emitter is a
``LowbitError`` naming the node and op; so is an emitter's refusal (a ``ValueError``) and a
result whose Relax type disagrees with the node's lowbit type.

The module has two functions. ``main`` takes the graph inputs in order (a batch-sized
dimension ``Sym(k)`` is ``k * N`` for one symbolic ``int64`` ``N``, so one build serves every
batch size) and returns the outputs (a tuple when there are several). ``lowbit_signature``
returns the UTF-8 bytes of a JSON record of the graph's name, inputs, outputs, device and the
CPU extensions its code needs, so that a module loaded from a file can be run by name without
the graph, and refused where it cannot run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm
import tvm.sym
from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, batch_var, dtype_of, tensor_type
from lowbit.compiler.codegen.tvm_block_rules import BLOCK_EMITTERS
from lowbit.compiler.codegen.tvm_data_rules import DATA_EMITTERS
from lowbit.compiler.codegen.tvm_int_rules import INT_EMITTERS, TvmEmitter
from lowbit.compiler.codegen.tvm_log2_rules import LOG2_EMITTERS
from lowbit.compiler.dims import Sym, dim_to_json
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph, Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import TensorType

TVM_EMITTERS: dict[str, TvmEmitter] = {**DATA_EMITTERS, **INT_EMITTERS, **BLOCK_EMITTERS,
                                       **LOG2_EMITTERS}
if len(TVM_EMITTERS) != (len(DATA_EMITTERS) + len(INT_EMITTERS) + len(BLOCK_EMITTERS)
                         + len(LOG2_EMITTERS)):
    raise RuntimeError("an op has TVM emitters in two tables")

ENTRY = "main"
SIGNATURE = "lowbit_signature"


def to_relax(graph: Graph, device: str = "cpu", requires: Sequence[str] = ()) -> tvm.IRModule:
    """The Relax module of a verified lowbit graph; raises LowbitError for what it cannot emit.

    ``device`` ("cpu" or "cuda") and ``requires`` (CPU extensions the compiled code will use
    that a loader must check, such as ``amx``) are recorded in the signature for runtimes that
    load the module from a file."""
    return to_relax_traced(graph, device, requires)[0]


def to_relax_traced(graph: Graph, device: str = "cpu", requires: Sequence[str] = ()
                    ) -> tuple[tvm.IRModule, dict[str, str]]:
    """``to_relax``, and the lowbit node that made each binding of ``main`` (variable name to
    node name), which the NPU partitioner uses to trace pattern matches back to nodes."""
    graph.verify()
    batch = batch_var()
    _check_batch_is_bound(graph)
    builder = relax.BlockBuilder()
    params = [relax.Var(name, tensor_type(batch, graph.types[name])) for name in graph.inputs]
    with builder.function(ENTRY, params):
        with builder.dataflow():
            em = Emitter(graph, builder, batch)
            em.values.update(zip(graph.inputs, params))
            for node in graph.nodes:
                _emit_node(em, node)
            results = [em.operand(name).expr for name in graph.outputs]
            output = builder.emit_output(results[0] if len(results) == 1
                                         else relax.Tuple(results))
        builder.emit_func_output(output)
    with builder.function(SIGNATURE, []):
        text = json.dumps(signature(graph, device, requires)).encode()
        builder.emit_func_output(relax.const(np.frombuffer(text, np.uint8), "uint8"))
    return builder.get(), em.origins


def signature(graph: Graph, device: str, requires: Sequence[str] = ()) -> dict[str, Any]:
    def describe(name: str) -> dict[str, Any]:
        ttype = graph.types[name]
        return {"name": name, "dtype": ttype.dtype,
                "shape": [dim_to_json(d) for d in ttype.shape]}
    return {"graph": graph.name, "device": device, "requires": list(requires),
            "inputs": [describe(n) for n in graph.inputs],
            "outputs": [describe(n) for n in graph.outputs]}


def _emit_node(em: Emitter, node: Node) -> None:
    emit = TVM_EMITTERS.get(node.op)
    if emit is None:
        raise LowbitError("op has no TVM emitter", node=node.name, op=node.op)
    spec = OP_TABLE[node.op]
    operands = [em.operand(v) if v else None for v in node.inputs]
    operands += [None] * (len(spec.inputs) - len(operands))
    em.hint = node.name  # the node's bindings are named after it and traced to it
    try:
        results = emit(em, *operands, **spec.with_defaults(node.attrs))
    except (ValueError, TypeError, RuntimeError) as err:
        raise LowbitError(f"cannot emit for TVM: {err}", node=node.name, op=node.op) from err
    results = results if isinstance(results, tuple) else (results,)
    for result, name in zip(results, node.outputs, strict=True):
        problem = _type_mismatch(em, result, em.graph.types[name])
        if problem:
            raise LowbitError(f"emitted {name!r} {problem}", node=node.name, op=node.op)
        em.values[name] = result


def _type_mismatch(em: Emitter, expr: relax.Expr, want: TensorType) -> str | None:
    """Why the Relax type of ``expr`` is not the lowbit type ``want`` (None when it is)."""
    if dtype_of(expr) != want.dtype:
        return f"has dtype {dtype_of(expr)}, lowbit says {want.dtype}"
    shape = expr.ty.shape
    if shape is None or len(shape.values) != want.rank:
        return f"has shape {shape}, lowbit says {want}"
    analyzer = tvm.sym.Analyzer()
    for got, dim in zip(shape.values, want.shape):
        if not analyzer.can_prove_equal(got, em.dim(dim)):
            return f"has shape {list(shape.values)}, lowbit says {want}"
    return None


def _check_batch_is_bound(graph: Graph) -> None:
    """The batch variable is read off an input dimension equal to ``N`` itself."""
    dims = [d for name in graph.inputs for d in graph.types[name].shape if isinstance(d, Sym)]
    if dims and Sym(1) not in dims:
        raise LowbitError("TVM needs an input with a dimension of exactly the batch size N; "
                          f"the inputs only have {sorted(set(map(str, dims)))}")


__all__ = ["ENTRY", "SIGNATURE", "TVM_EMITTERS", "signature", "to_relax", "to_relax_traced"]
