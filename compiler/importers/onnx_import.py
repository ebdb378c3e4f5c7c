"""ONNX importer: an ``.onnx`` file (opset >= 13) to a lowbit graph.

Every ONNX node is captured (``GraphBuilder.capture``) and converted by its entry in
``onnx_rules.ONNX_RULES``; the lowbit nodes it emits carry that capture as their origin.
Values known at import time (initializers, ``Constant`` nodes, shape computations, arithmetic
on constants) are evaluated here rather than emitted, so reshape targets computed from
``Shape`` become resolved ``reshape`` shapes whose batch dimension is ``Sym``. An op with no
rule is still accepted when all its inputs are known: onnxruntime evaluates it here.

Names: graph inputs keep their ONNX names and graph outputs get the ONNX output names, both
sanitized to ``[A-Za-z0-9_.]`` as the builder does; where that changed a name the mapping
``{onnx name: lowbit name}`` is in ``metadata["onnx_names"]``. A symbolic dimension (a
``dim_param`` such as ``batch`` or ``s0``) is accepted on axis 0 of the inputs only and
becomes the batch ``N``; all inputs share it.

Errors are ``LowbitError``s naming the file and, for a node, the ONNX node name and op type.
Files are untrusted: names must be text, external data must have been read by ``onnx.load``
(which confines it to the model's folder), and no value, computed here or later, may exceed
``MAX_KNOWN_ELEMENTS`` per batch item; whatever is malformed ends in a ``LowbitError``
(``tests/test_fuzz_onnx_import.py`` fuzzes this).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import numpy_helper

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.dims import Sym
from lowbit.compiler.errors import LowbitError, UnsupportedOpError
from lowbit.compiler.importers.onnx_context import (
    ImportState,
    NodeContext,
    Value,
    check_known_size,
    known_value,
    onnx_dtype,
)
from lowbit.compiler.importers.onnx_rules import (
    ONNX_RULES,
    fold_with_onnxruntime,
    foldable_without_rule,
)
from lowbit.compiler.ir import Graph
from lowbit.compiler.types import TensorType

MIN_OPSET = 13
_DEFAULT_DOMAINS = ("", "ai.onnx")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")  # as GraphBuilder.fresh_name sanitizes


def import_onnx(path: str | os.PathLike[str]) -> Graph:
    """Load an ONNX file and convert it to a verified lowbit graph."""
    file = str(path)
    source = Path(path)
    if not source.exists():
        raise LowbitError("no such file", file=file)
    if not source.is_file():
        raise LowbitError("not a file", file=file)
    try:
        model = onnx.load(file)
    except DecodeError as err:
        raise LowbitError(f"corrupt or truncated ONNX file: protobuf decoding failed ({err})",
                          file=file) from None
    except Exception as err:  # noqa: BLE001  (onnx.load raises many kinds for a bad file)
        raise LowbitError(f"cannot load ONNX file: {type(err).__name__}: {_first_line(err)}",
                          file=file) from None
    return import_onnx_model(model, file)


def import_onnx_model(model: onnx.ModelProto, source: str = "<model>") -> Graph:
    """Convert an in-memory ONNX model; ``source`` names it in errors and metadata."""
    opset = _check_model(model, source)
    if len(model.functions):
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as err:  # noqa: BLE001  (the C++ inliner raises bare exceptions)
            raise LowbitError(f"cannot inline local functions: {_first_line(err)}",
                              file=source) from None
    graph = model.graph
    metadata = {"source": "onnx", "path": source, "opset": opset,
                "producer": f"{model.producer_name} {model.producer_version}".strip()}
    builder = GraphBuilder(graph.name or Path(source).stem or "onnx", metadata)
    consumed = {name for node in graph.node for name in node.input if name}
    consumed |= {output.name for output in graph.output}
    state = ImportState(builder, source, opset, model.ir_version, consumed,
                        _checker_context(model, source))
    renamed_inputs = _add_initializers_and_inputs(state, graph)
    producers: dict[str, int] = {}
    for index, node in enumerate(graph.node):
        _convert_node(state, node, index, producers)
    outputs, renamed_outputs = _bind_outputs(state, graph, producers)
    _remove_dead_code(builder.graph, outputs)
    _check_value_sizes(builder.graph, source)
    names = {**renamed_inputs, **renamed_outputs}
    if names:
        builder.graph.metadata["onnx_names"] = names
    try:
        return builder.finish(outputs)
    except LowbitError as err:
        raise err.located(file=source) from None


# -- model checks -------------------------------------------------------------------------------

def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else ""


def _checker_context(model: onnx.ModelProto, source: str) -> Any:
    context = onnx.checker.C.CheckerContext()
    try:
        context.ir_version = model.ir_version
        context.opset_imports = {o.domain: o.version for o in model.opset_import}
    except (TypeError, OverflowError) as err:  # a version past the C++ integer range
        raise LowbitError(f"invalid IR or opset version: {_first_line(err)}",
                          file=source) from None
    return context


def _check_no_external_data(model: onnx.ModelProto, source: str) -> None:
    """Tensors still marked external were not loaded by ``onnx.load`` (which confines them to
    the model's folder); reading them later would resolve against the working directory."""
    nodes = [*model.graph.node, *(n for f in model.functions for n in f.node)]
    tensors = [*model.graph.initializer, *(a.t for n in nodes for a in n.attribute),
               *(t for n in nodes for a in n.attribute for t in a.tensors)]
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in tensors):
        raise LowbitError("the model refers to external data that was not loaded with it "
                          "(import the .onnx file by its path)", file=source)


def _check_names(model: onnx.ModelProto, source: str) -> None:
    """Every name is text: protobuf hands invalid UTF-8 in an ONNX (proto2) string back as
    bytes."""
    graph = model.graph
    names = [graph.name, *(v.name for v in (*graph.input, *graph.output, *graph.value_info)),
             *(t.name for t in graph.initializer), *(o.domain for o in model.opset_import)]
    for node in graph.node:
        names += [node.name, node.op_type, node.domain, *node.input, *node.output,
                  *(a.name for a in node.attribute)]
    if not all(isinstance(name, str) for name in names):
        raise LowbitError("corrupt ONNX file: a name is not valid UTF-8 text", file=source)


def _check_model(model: onnx.ModelProto, source: str) -> int:
    if not model.HasField("graph") or not model.opset_import:
        raise LowbitError("corrupt or truncated ONNX file: no graph or no opset "
                          "(not an ONNX model?)", file=source)
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise LowbitError("the model imports no default-domain (ai.onnx) opset", file=source)
    opset = int(versions[0])
    if opset < MIN_OPSET:
        raise LowbitError(f"opset {opset} is not supported: lowbit imports ONNX opset "
                          f"{MIN_OPSET} or newer (re-export with a newer opset_version)",
                          file=source)
    if len(model.graph.sparse_initializer):
        raise LowbitError("sparse initializers are not supported", file=source)
    _check_names(model, source)
    _check_no_external_data(model, source)
    return opset


# -- inputs ---------------------------------------------------------------------------------------

def _input_type(value_info: onnx.ValueInfoProto, source: str,
                batch_names: set[str]) -> TensorType:
    def fail(message: str) -> LowbitError:
        return LowbitError(f"graph input {value_info.name!r}: {message}", file=source)

    if not value_info.type.HasField("tensor_type"):
        raise fail("only tensor inputs are supported")
    tensor = value_info.type.tensor_type
    try:
        dtype = onnx_dtype(tensor.elem_type)
    except ValueError as err:
        raise fail(str(err)) from None
    if not tensor.HasField("shape"):
        raise fail("the input has no shape; export with static shapes (and a dynamic batch "
                   "axis 0 at most)")
    shape: list[Any] = []
    for axis, dim in enumerate(tensor.shape.dim):
        if dim.HasField("dim_value"):
            if dim.dim_value < 0:
                raise fail(f"dimension {axis} is negative ({dim.dim_value})")
            shape.append(int(dim.dim_value))
            continue
        label = dim.dim_param or "?"
        if axis != 0:
            raise fail(f"dimension {axis} is symbolic ({label!r}); lowbit supports a symbolic "
                       "size only on axis 0 (the batch)")
        batch_names.add(label)
        if len(batch_names) > 1:
            raise fail(f"the inputs name different batch dimensions {sorted(batch_names)}; "
                       "lowbit has a single symbolic batch size")
        shape.append(Sym(1))
    try:
        check_known_size([d.coeff if isinstance(d, Sym) else d for d in shape], "the input")
    except ValueError as err:
        raise fail(f"{err} per batch item") from None
    return TensorType(dtype, tuple(shape))


def _add_initializers_and_inputs(state: ImportState, graph: onnx.GraphProto) -> dict[str, str]:
    """Initializers become known values; the other graph inputs become lowbit inputs."""
    for tensor in graph.initializer:
        if tensor.name in state.env:
            raise LowbitError(f"initializer {tensor.name!r} is defined twice", file=state.file)
        try:
            dtype = onnx_dtype(tensor.data_type)
            array = numpy_helper.to_array(tensor)
        except (ValueError, TypeError) as err:
            raise LowbitError(f"initializer {tensor.name!r}: {_first_line(err)}",
                              file=state.file) from None
        state.env[tensor.name] = known_value(array, tensor.name, dtype)
    renamed: dict[str, str] = {}
    batch_names: set[str] = set()
    listed: set[str] = set()
    for value_info in graph.input:
        if value_info.name in listed:
            raise LowbitError(f"graph input {value_info.name!r} is listed twice", file=state.file)
        listed.add(value_info.name)
        if value_info.name in state.env:
            continue  # an initializer also listed as an input (old exporters)
        ttype = _input_type(value_info, state.file, batch_names)
        name = state.builder.add_input(value_info.name, ttype)
        if name != value_info.name:
            renamed[value_info.name] = name
        state.env[value_info.name] = Value(ttype, name=name, hint=value_info.name)
    return renamed


# -- nodes ----------------------------------------------------------------------------------------

def _attribute(attr: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", errors="replace") for v in value]
    return value


def _convert_node(state: ImportState, node: onnx.NodeProto, index: int,
                  producers: dict[str, int]) -> None:
    name = node.name or f"{node.op_type}_{index}"
    origin = state.builder.capture(name, node.op_type)
    where = {"file": state.file, "node": name, "op": node.op_type}
    if node.domain not in _DEFAULT_DOMAINS:
        raise UnsupportedOpError(f"op {node.op_type} of domain {node.domain!r} is not "
                                 "supported (only the default ai.onnx domain)", **where)
    missing = [v for v in node.input if v and v not in state.env]
    if missing:
        raise LowbitError(f"input(s) {missing} are not defined before this node", **where)
    redefined = [v for v in node.output if v and v in state.env]
    if redefined:
        raise LowbitError(f"output(s) {redefined} are already defined (an invalid ONNX model: "
                          "every value has one definition)", **where)
    ctx = NodeContext(state, node, name, {a.name: _attribute(a) for a in node.attribute},
                      [state.env[v] if v else None for v in node.input], origin)
    convert = ONNX_RULES.get(node.op_type)
    if convert is None and foldable_without_rule(ctx):
        convert = fold_with_onnxruntime
    if convert is None:
        raise UnsupportedOpError(f"ONNX op {node.op_type} is not supported by the lowbit "
                                 "importer", **where)
    try:  # the node against its schema (input counts, attributes); not the whole model,
        # as onnx.checker.check_model is stricter than onnxruntime about graph outputs
        onnx.checker.check_node(node, state.checker)
    except onnx.checker.ValidationError as err:
        raise LowbitError(f"invalid node: {_first_line(err)}", **where) from None
    try:
        convert(ctx)
    except LowbitError as err:
        if err.file is not None:
            raise
        # from the builder: it names the lowbit node; name the ONNX node and the file too
        detail = f" (lowbit {err.op} node {err.node})" if err.node else ""
        raise type(err)(f"{err.message}{detail}", **where) from None
    except (ValueError, IndexError, ZeroDivisionError, OverflowError) as err:
        raise LowbitError(f"cannot convert: {_first_line(err)}", **where) from None
    for position, output in enumerate(node.output):
        if not output:
            continue
        value = ctx.outputs[position]
        if value is None:
            if output in state.consumed:
                raise UnsupportedOpError(f"output {position} ({output!r}) is not supported",
                                         **where)
            continue
        state.env[output] = value
        producers[output] = origin


# -- outputs --------------------------------------------------------------------------------------

def _sanitized(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_") or "v"


def _bind_outputs(state: ImportState, graph: onnx.GraphProto, producers: dict[str, int]
                  ) -> tuple[list[str], dict[str, str]]:
    """Lowbit names for the ONNX graph outputs, named after them where possible.

    An output that is a graph input, a constant or another output's value gets a copy (a
    same-shape ``reshape``), since a lowbit value has one name.
    """
    builder = state.builder
    lowbit = builder.graph
    outputs: list[str] = []
    renamed: dict[str, str] = {}
    for output in graph.output:
        value = state.env.get(output.name)
        if value is None:
            raise LowbitError(f"graph output {output.name!r} is never computed", file=state.file)
        try:
            name = state.materialize(value)
        except ValueError as err:
            raise LowbitError(f"graph output {output.name!r}: {err}", file=state.file) from None
        wanted = _sanitized(output.name)
        if name in lowbit.inputs or name in lowbit.constants or name in outputs:
            origin = producers.get(output.name)
            if origin is None:
                origin = builder.capture(output.name, "GraphOutput")
            name = builder.add("reshape", [name], origin, {"shape": value.shape}, wanted)
        elif name != wanted:
            try:
                value.name = name = builder.rename_value(name, wanted)
            except LowbitError:
                pass  # the name is taken (sanitizing made two names equal): keep ours
        if name != output.name:
            renamed[output.name] = name
        outputs.append(name)
    return outputs, renamed


def _check_value_sizes(graph: Graph, source: str) -> None:
    """No value may exceed ``MAX_KNOWN_ELEMENTS`` per batch item, so that running the graph
    (``lowbit check``) cannot be made to allocate without bound."""
    for name, ttype in graph.types.items():
        try:
            check_known_size([d.coeff if isinstance(d, Sym) else d for d in ttype.shape],
                             f"value {name!r}")
        except ValueError as err:
            raise LowbitError(f"{err} per batch item", file=source) from None


def _remove_dead_code(graph: Graph, outputs: list[str]) -> None:
    """Drop nodes whose results nothing uses, then constants nothing reads."""
    live = set(outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(v in live for v in node.outputs):
            kept.append(node)
            live.update(node.present_inputs())
        else:
            for v in node.outputs:
                graph.types.pop(v, None)
    graph.nodes = kept[::-1]
    for name in [c for c in graph.constants if c not in live]:
        del graph.constants[name]
        del graph.types[name]


__all__ = ["MIN_OPSET", "import_onnx", "import_onnx_model"]
