"""Capture from PyTorch: ``torch.export`` with a dynamic batch, decomposed to core ATen.

The decomposition keeps a few composite ops whole (linear, matmul, layer_norm, gelu, softmax,
scaled_dot_product_attention) so that the IR sees the layers passes care about; every other op
is decomposed by torch's default table. Each fx node is converted by its row in
``torch_rules.TORCH_RULES``; a node whose tensor inputs are all constants is evaluated by torch
itself at capture time (constant folding) and becomes a constant.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx
from torch.export import Dim, ExportedProgram, default_decompositions
from torch.export.graph_signature import InputKind

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.errors import LowbitError, UnsupportedOpError
from lowbit.compiler.importers.torch_context import RuleContext, SymbolTable
from lowbit.compiler.importers.torch_rules import TORCH_RULES
from lowbit.compiler.ir import Graph

KEPT_WHOLE = ("linear.default", "matmul.default", "layer_norm.default", "gelu.default",
              "softmax.int", "scaled_dot_product_attention.default")
_SHAPE_ONLY = {"aten.sym_size.int", "aten.sym_numel.default", "aten.sym_stride.int"}


def decomposition_table() -> dict[Any, Any]:
    table = default_decompositions()
    for name in KEPT_WHOLE:
        packet, overload = name.split(".")
        table.pop(getattr(getattr(torch.ops.aten, packet), overload), None)
    return table


def export_module(module: torch.nn.Module, sample: Mapping[str, np.ndarray],
                  dynamic_batch: bool = True) -> ExportedProgram:
    """Export ``module(*sample.values())`` with axis 0 of every input as the dynamic batch."""
    args = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in sample.values())
    dynamic = None
    if dynamic_batch:
        batch = Dim("batch", min=1, max=1 << 20)
        dynamic = tuple({0: batch} for _ in args)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic)
    return program.run_decompositions(decomposition_table())


def capture_module(module: torch.nn.Module, sample: Mapping[str, np.ndarray], *, name: str,
                   output_names: Sequence[str] | None = None) -> Graph:
    program = export_module(module, sample)
    return import_exported_program(program, name=name, input_names=list(sample),
                                   output_names=output_names)


def _constant_array(program: ExportedProgram, target: str) -> np.ndarray:
    tensor = program.state_dict[target] if target in program.state_dict else \
        program.constants[target]
    return tensor.detach().cpu().contiguous().numpy()


def _is_constant_node(arg: Any, values: Mapping[torch.fx.Node, Any],
                      builder: GraphBuilder) -> bool:
    value = values.get(arg)
    return isinstance(value, str) and builder.constant_value(value) is not None


def _foldable(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any],
              builder: GraphBuilder) -> bool:
    """All tensor inputs are constants and every size is static: torch can evaluate it now."""
    inputs = node.all_input_nodes
    if not all(_is_constant_node(arg, values, builder) for arg in inputs):
        return False
    metas = node.meta.get("val")
    metas = metas if isinstance(metas, (tuple, list)) else (metas,)
    return all(isinstance(m, torch.Tensor) and all(isinstance(d, int) for d in m.shape)
               for m in metas)


def _fold(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any],
          builder: GraphBuilder) -> str:
    def real(arg: Any) -> Any:
        if isinstance(arg, torch.fx.Node):
            return torch.from_numpy(np.array(builder.constant_value(values[arg])))
        return arg

    args = torch.fx.node.map_aggregate(node.args, real)
    kwargs = torch.fx.node.map_aggregate(node.kwargs, real)
    with torch.no_grad():
        result = node.target(*args, **kwargs)
    if not isinstance(result, torch.Tensor):
        raise UnsupportedOpError("constant folding gave a non-tensor", node=node.name,
                                 op=str(node.target))
    return builder.add_constant(result.numpy(), node.name)


def import_exported_program(program: ExportedProgram, *, name: str,
                            input_names: Sequence[str] | None = None,
                            output_names: Sequence[str] | None = None) -> Graph:
    builder = GraphBuilder(name, metadata={"source": "torch.export"})
    symbols = SymbolTable()
    specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs}
    values: dict[torch.fx.Node, Any] = {}
    user_inputs = iter(input_names or ())
    outputs: Sequence[Any] = ()
    for node in program.graph.nodes:
        if node.op == "placeholder":
            spec = specs[node.name]
            if spec.kind == InputKind.USER_INPUT:
                meta = node.meta["val"]
                ctx_type = RuleContext(builder, node, values, symbols, -1).type_of_meta(meta)
                values[node] = builder.add_input(next(user_inputs, node.name), ctx_type)
            else:
                values[node] = builder.add_constant(_constant_array(program, spec.target),
                                                    spec.target)
        elif node.op == "call_function":
            values[node] = _convert(node, values, builder, symbols)
        elif node.op == "output":
            outputs = node.args[0]
    names = [values[o] for o in outputs]
    for position, out_name in enumerate(output_names or ()):
        names[position] = builder.rename_value(names[position], out_name)
    return builder.finish(names)


def _convert(node: torch.fx.Node, values: Mapping[torch.fx.Node, Any], builder: GraphBuilder,
             symbols: SymbolTable) -> Any:
    if node.target is operator.getitem:
        return values[node.args[0]][node.args[1]]
    target = str(node.target)
    if target in _SHAPE_ONLY:
        return None
    if _foldable(node, values, builder):
        return _fold(node, values, builder)
    convert = TORCH_RULES.get(target)
    if convert is None:
        raise UnsupportedOpError("no lowbit conversion rule for this op", node=node.name,
                                 op=target)
    origin = builder.capture(node.name, target)
    try:
        return convert(RuleContext(builder, node, values, symbols, origin))
    except LowbitError as err:
        err.node = err.node or node.name
        err.op = err.op or target
        raise
