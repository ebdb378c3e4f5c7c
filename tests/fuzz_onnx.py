"""Seed models and mutators for fuzzing the ONNX importer.

A mutator is a row of ``MUTATORS``: a name and a function that takes a parsed seed model and a
``random.Random`` (drawn by hypothesis, so failures shrink and replay) and returns the bytes of
a damaged model. Byte-level rows damage the serialized file (truncation, flipped or inserted
bytes); structural rows damage the protobuf in ways a hostile or broken exporter could: wrong
shapes, missing initializers, cycles, unknown opsets and domains, huge dimensions, wrong element
types, dangling inputs, duplicate names, external data pointing outside the model's folder.

``SAVED_MUTATORS`` damage ``.lowbit`` graph files the same way (bytes, and junk in their JSON).

The contract under test (``capture_outcome``): every case ends in a graph that verifies or in a
``LowbitError``; any other exception, or a case running past ``CASE_SECONDS``, is a crash.
"""

from __future__ import annotations

import random
import signal
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lowbit.compiler.errors import LowbitError
from lowbit.compiler.importers import capture

CASE_SECONDS = 5.0
Mutator = Callable[[onnx.ModelProto, random.Random], bytes]
HUGE_DIMS = (0, -1, -7, 2**31, 2**40, 2**62, 2**63 - 1)
ELEM_TYPES = tuple(TensorProto.DataType.values())


class CaseTimeout(Exception):
    """A capture ran past ``CASE_SECONDS``."""


# -- seeds ---------------------------------------------------------------------------------------

def export_bundled(name: str, directory: Path) -> Path:
    """The bundled torch model exported with the TorchScript exporter (opset 17, dynamic batch)."""
    import torch

    from lowbit.models import get_model

    model = get_model(name)
    sample = model.sample_inputs(2, "calib")
    args = tuple(torch.from_numpy(v) for v in sample.values())
    path = directory / f"{name}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.load(), args, str(path), dynamo=False,
                          input_names=list(model.input_names),
                          output_names=list(model.output_names),
                          dynamic_axes={n: {0: "batch"} for n in model.input_names},
                          opset_version=17)
    return path


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], initializers: list[onnx.TensorProto],
           name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _f32(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array, name)


def handmade_seeds() -> dict[str, onnx.ModelProto]:
    """Small graphs covering shape subgraphs, constants, gathers and attention-style matmuls."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    conv_w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    seeds = {
        "gemm_relu": _model(
            [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1, name="fc"),
             helper.make_node("Relu", ["h"], ["y"], name="act")],
            [_f32("x", "N", 3)], [_f32("y", "N", 4)],
            [_init("w", w), _init("b", np.ones(4, np.float32))], "gemm_relu"),
        "conv_pool_reshape": _model(
            [helper.make_node("Conv", ["x", "cw"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Shape", ["p"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["p", "target"], ["y"])],
            [_f32("x", "N", 1, 6, 6)], [_f32("y", "N", 18)],
            [_init("cw", conv_w), _init("zero", np.array(0, np.int64)),
             _init("zero1", np.array([0], np.int64)), _init("minus1", np.array([-1], np.int64))],
            "conv_pool_reshape"),
        "attention": _model(
            [helper.make_node("MatMul", ["x", "xt"], ["s"]),
             helper.make_node("Softmax", ["s"], ["a"], axis=-1),
             helper.make_node("MatMul", ["a", "x"], ["o"]),
             helper.make_node("LayerNormalization", ["o", "g", "beta"], ["y"], axis=-1),
             helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1])],
            [_f32("x", "N", 4, 3)], [_f32("y", "N", 4, 3)],
            [_init("g", np.ones(3, np.float32)), _init("beta", np.zeros(3, np.float32))],
            "attention"),
        "embedding": _model(
            [helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"],
                              value=numpy_helper.from_array(np.ones(1, np.float32))),
             helper.make_node("Add", ["e", "ones"], ["y"])],
            [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
            [_f32("y", "N", 5, 3)],
            [_init("table", w), _init("shape", np.array([5, 3], np.int64))], "embedding"),
    }
    # the attention seed lists Transpose last: reorder into topological order
    attention = seeds["attention"].graph.node
    attention.insert(0, attention.pop())
    return seeds


# -- mutators ------------------------------------------------------------------------------------

def _nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return list(model.graph.node)


def _values(model: onnx.ModelProto) -> list[str]:
    names = [v.name for v in model.graph.input] + [t.name for t in model.graph.initializer]
    return names + [o for node in model.graph.node for o in node.output if o]


def truncate(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    data = model.SerializeToString()
    return data[:rnd.randrange(len(data))]


def flip_bytes(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    data = bytearray(model.SerializeToString())
    for _ in range(rnd.randint(1, 8)):
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    return bytes(data)


def splice_bytes(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    data = bytearray(model.SerializeToString())
    at = rnd.randrange(len(data))
    if rnd.random() < 0.5:
        del data[at:at + rnd.randint(1, 64)]
    else:
        data[at:at] = rnd.randbytes(rnd.randint(1, 64))
    return bytes(data)


def wrong_input_shape(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    value = rnd.choice(list(model.graph.input) + list(model.graph.output))
    dims = value.type.tensor_type.shape.dim
    choice = rnd.random()
    if choice < 0.3 and len(dims):
        del dims[rnd.randrange(len(dims))]
    elif choice < 0.5:
        dims.add().dim_value = rnd.choice((1, 3, 7))
    elif len(dims):
        dim = dims[rnd.randrange(len(dims))]
        if rnd.random() < 0.3:
            dim.dim_param = rnd.choice(("batch", "seq", "", "N"))
        else:
            dim.dim_value = rnd.choice(HUGE_DIMS + (1, 2, 5))
    return model.SerializeToString()


def wrong_dtype(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """Another element type on a graph input or output, or a ``Cast`` to another type."""
    casts = [a for n in model.graph.node if n.op_type == "Cast" for a in n.attribute]
    if casts and rnd.random() < 0.3:
        rnd.choice(casts).i = rnd.choice(ELEM_TYPES + (999,))
    else:
        value = rnd.choice(list(model.graph.input) + list(model.graph.output))
        value.type.tensor_type.elem_type = rnd.choice(ELEM_TYPES + (999,))
    return model.SerializeToString()


def drop_initializer(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    inits = model.graph.initializer
    if len(inits):
        del inits[rnd.randrange(len(inits))]
    return model.SerializeToString()


def damage_initializer(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """Dims that disagree with the data, huge dims, another element type, cut raw data."""
    inits = model.graph.initializer
    if not len(inits):
        return model.SerializeToString()
    tensor = inits[rnd.randrange(len(inits))]
    choice = rnd.random()
    if choice < 0.3 and len(tensor.dims):
        tensor.dims[rnd.randrange(len(tensor.dims))] = rnd.choice(HUGE_DIMS + (2, 3))
    elif choice < 0.5:
        tensor.data_type = rnd.choice(ELEM_TYPES)
    elif choice < 0.7 and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[:rnd.randrange(len(tensor.raw_data))]
    elif choice < 0.85:
        tensor.dims.append(rnd.choice((1, 2, 2**33)))
    else:
        tensor.data_location = TensorProto.EXTERNAL
        del tensor.external_data[:]
        entry = tensor.external_data.add()
        entry.key, entry.value = "location", rnd.choice(
            ("../../etc/passwd", "/etc/passwd", "../x.bin", "missing.bin", "a/../../b"))
    return model.SerializeToString()


def make_cycle(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """A node reads a value that it or a later node defines."""
    nodes = model.graph.node
    if len(nodes) < 1:
        return model.SerializeToString()
    first = rnd.randrange(len(nodes))
    later = nodes[rnd.randrange(first, len(nodes))]
    outputs = [o for o in later.output if o]
    if len(nodes[first].input) and outputs:
        nodes[first].input[rnd.randrange(len(nodes[first].input))] = rnd.choice(outputs)
    return model.SerializeToString()


def shuffle_nodes(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    nodes = _nodes(model)
    rnd.shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model.SerializeToString()


def change_opset(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    choice = rnd.random()
    if choice < 0.4:
        model.opset_import[0].version = rnd.choice((0, 1, 7, 12, 13, 21, 22, 99, 2**40))
    elif choice < 0.6:
        model.opset_import[0].domain = rnd.choice(("com.evil", "ai.onnx.ml", "x"))
    elif choice < 0.8:
        model.opset_import.append(helper.make_opsetid(rnd.choice(("com.evil", "", "ai.onnx")),
                                                      rnd.choice((1, 17, 99))))
    else:
        model.ir_version = rnd.choice((0, 1, 3, 99, 2**40))
    return model.SerializeToString()


def change_domain(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    nodes = model.graph.node
    if len(nodes):
        nodes[rnd.randrange(len(nodes))].domain = rnd.choice(
            ("com.microsoft", "com.evil", "ai.onnx.ml", "ai.onnx.preview.training"))
    return model.SerializeToString()


def change_op_type(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    nodes = model.graph.node
    if len(nodes):
        nodes[rnd.randrange(len(nodes))].op_type = rnd.choice(
            ("Relu", "Add", "MatMul", "Conv", "Reshape", "Gather", "Loop", "If", "Scan",
             "NoSuchOp", "Softmax", "Transpose", "Concat", "Slice", "Expand", "Tile", "Split",
             "Where", "ConstantOfShape", "Range", "Resize", "TopK", "NonZero", "Einsum"))
    return model.SerializeToString()


def damage_attribute(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """Delete an attribute, change its type, or give it out-of-range values."""
    nodes = [n for n in model.graph.node if len(n.attribute)]
    if not nodes:
        return model.SerializeToString()
    node = rnd.choice(nodes)
    index = rnd.randrange(len(node.attribute))
    attr = node.attribute[index]
    choice = rnd.random()
    if choice < 0.25:
        del node.attribute[index]
    elif choice < 0.5:
        replacement = helper.make_attribute(attr.name, rnd.choice(
            (1.5, "text", [1, 2, 3], [0.5], -(2**40), 2**62)))
        node.attribute[index].CopyFrom(replacement)
    elif attr.ints:
        attr.ints[rnd.randrange(len(attr.ints))] = rnd.choice(HUGE_DIMS + (-100, 100))
    else:
        attr.i = rnd.choice(HUGE_DIMS + (-100, 100))
    return model.SerializeToString()


def dangle_input(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    nodes = [n for n in model.graph.node if len(n.input)]
    if nodes:
        node = rnd.choice(nodes)
        node.input[rnd.randrange(len(node.input))] = rnd.choice(("ghost", "", "x/../y"))
    else:
        model.graph.output.add().name = "ghost"
    return model.SerializeToString()


def duplicate_name(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """A value defined twice: a node output renamed to an existing value, or a repeated input."""
    names = _values(model)
    if rnd.random() < 0.3:
        model.graph.input.append(rnd.choice(list(model.graph.input)))
    elif rnd.random() < 0.5 and len(model.graph.initializer):
        copy = model.graph.initializer.add()
        copy.CopyFrom(rnd.choice(list(model.graph.initializer)))
    else:
        nodes = [n for n in model.graph.node if len(n.output)]
        if nodes:
            node = rnd.choice(nodes)
            node.output[rnd.randrange(len(node.output))] = rnd.choice(names)
    return model.SerializeToString()


def hostile_names(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """Renames a value everywhere to a name with path separators, dots or control bytes."""
    names = _values(model)
    old = rnd.choice(names)
    new = rnd.choice(("../../evil", "/abs/path", "a/b\\c", "..", "", "\x00nul", "é" * 300))
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name == old:
            value.name = new
    for tensor in model.graph.initializer:
        if tensor.name == old:
            tensor.name = new
    for node in model.graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name == old:
                    field[i] = new
    model.graph.name = rnd.choice((model.graph.name, "../../graph", "/tmp/x"))
    return model.SerializeToString()


def huge_constant(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """An integer initializer (a shape, an index) set to huge or negative values."""
    ints = [t for t in model.graph.initializer
            if t.data_type in (TensorProto.INT64, TensorProto.INT32)]
    if ints:
        tensor = rnd.choice(ints)
        try:
            array = numpy_helper.to_array(tensor).copy()
        except Exception:  # noqa: BLE001  (damaged by an earlier mutation of a stack)
            return model.SerializeToString()
        if array.size:
            flat = array.reshape(-1)
            info = np.iinfo(array.dtype)
            flat[rnd.randrange(flat.size)] = rnd.choice(
                (info.max, info.min, -1, 0, 2**20, -(2**20)))
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    else:
        model.graph.node.append(helper.make_node(
            "ConstantOfShape", ["huge_shape"], ["huge"], name="huge"))
        model.graph.initializer.append(
            numpy_helper.from_array(np.array([2**20, 2**20, 2**10], np.int64), "huge_shape"))
        model.graph.output.append(_f32("huge"))
    return model.SerializeToString()


def stack(model: onnx.ModelProto, rnd: random.Random) -> bytes:
    """Two to four structural mutations in a row."""
    structural = [m for name, m in MUTATORS.items() if name not in BYTE_LEVEL and m is not stack]
    data = b""
    for _ in range(rnd.randint(2, 4)):
        data = rnd.choice(structural)(model, rnd)
        try:
            model = onnx.load_from_string(data)
        except Exception:  # noqa: BLE001  (a mutation may leave an unparsable model)
            break
    return data


BYTE_LEVEL = frozenset({"truncate", "flip_bytes", "splice_bytes"})
MUTATORS: dict[str, Mutator] = {
    "truncate": truncate, "flip_bytes": flip_bytes, "splice_bytes": splice_bytes,
    "wrong_input_shape": wrong_input_shape, "wrong_dtype": wrong_dtype,
    "drop_initializer": drop_initializer,
    "damage_initializer": damage_initializer, "make_cycle": make_cycle,
    "shuffle_nodes": shuffle_nodes, "change_opset": change_opset,
    "change_domain": change_domain, "change_op_type": change_op_type,
    "damage_attribute": damage_attribute, "dangle_input": dangle_input,
    "duplicate_name": duplicate_name, "hostile_names": hostile_names,
    "huge_constant": huge_constant, "stack": stack,
}


# -- running one case ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    kind: str  # "graph" or "error"
    message: str
    seconds: float


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise ``CaseTimeout`` in this thread once ``seconds`` have passed."""
    def expire(signum: int, frame: object) -> None:
        raise CaseTimeout(f"capture ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def capture_outcome(data: bytes, directory: Path, name: str = "model.onnx") -> Outcome:
    """Capture ``data`` written as ``name`` in a fresh folder under ``directory``.

    Returns the outcome; any exception other than ``LowbitError`` propagates (a crash)."""
    folder = Path(tempfile.mkdtemp(dir=directory))
    path = folder / name
    path.write_bytes(data)
    start = time.perf_counter()
    try:
        with time_bound(CASE_SECONDS):
            graph = capture(str(path))
        graph.verify()
        return Outcome("graph", graph.name, time.perf_counter() - start)
    except LowbitError as err:
        return Outcome("error", str(err), time.perf_counter() - start)
    finally:
        path.unlink()
        folder.rmdir()


def mutate(seed: onnx.ModelProto, mutator: str, rnd: random.Random) -> bytes:
    copy = onnx.ModelProto()
    copy.CopyFrom(seed)
    return MUTATORS[mutator](copy, rnd)


# -- saved graphs (.lowbit files, which capture also reads) --------------------------------------

JSON_JUNK = (None, 1, -1, 1.5, "x", "../../x", [], {}, [1, 2], {"sym": "a"}, {"a": 1}, True,
             2**70)


def flip_saved_bytes(arrays: dict[str, np.ndarray], rnd: random.Random) -> bytes:
    data = bytearray(_savez(arrays))
    for _ in range(rnd.randint(1, 4)):
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    return bytes(data)


def junk_in_graph_json(arrays: dict[str, np.ndarray], rnd: random.Random) -> bytes:
    """Replace a random field of ``graph.json``, up to four levels deep, with junk."""
    import json

    doc = json.loads(arrays["graph_json"].tobytes())
    parent, key = None, None
    node = doc
    for _ in range(rnd.randint(1, 4)):
        if isinstance(node, dict) and node:
            parent, key = node, rnd.choice(sorted(node))
        elif isinstance(node, list) and node:
            parent, key = node, rnd.randrange(len(node))
        else:
            break
        node = parent[key]
    if parent is not None:
        parent[key] = rnd.choice(JSON_JUNK)
    text = json.dumps(doc).encode()
    return _savez({**arrays, "graph_json": np.frombuffer(text, np.uint8)})


def _savez(arrays: dict[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


SAVED_MUTATORS: dict[str, Callable[[dict[str, np.ndarray], random.Random], bytes]] = {
    "flip_saved_bytes": flip_saved_bytes, "junk_in_graph_json": junk_in_graph_json,
}
