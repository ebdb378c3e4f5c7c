"""Save and load a graph as one ``.lowbit`` file, losslessly.

The file is a zip (numpy ``.npz``) holding ``graph.json`` (structure, types, attributes,
provenance) and one array per constant, stored bit for bit with its dtype. Loading never
unpickles. Attribute values are JSON scalars, lists (read back as tuples) and symbolic
dimensions (``{"sym": k}`` for ``k*N``).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from typing import Any

import numpy as np

from lowbit.compiler.dims import Sym, dim_to_json, parse_dim
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.fileio import write_atomically
from lowbit.compiler.ir import CapturedNode, Graph, Node
from lowbit.compiler.types import TensorType

FORMAT = "lowbit-graph"
# what a damaged or crafted file makes the zip reader, JSON and the graph constructors raise
# (zipfile: RuntimeError for encrypted members, NotImplementedError for unknown compression)
_MALFORMED = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError,
              RuntimeError, NotImplementedError, OverflowError, zipfile.BadZipFile, EOFError)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.]+")
VERSION = 1


def _encode_attr(value: Any) -> Any:
    if isinstance(value, Sym):
        return {"sym": value.coeff}
    if isinstance(value, (tuple, list)):
        return [_encode_attr(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_attr(value: Any) -> Any:
    if isinstance(value, dict):
        return Sym(int(value["sym"]))
    if isinstance(value, list):
        return tuple(_decode_attr(v) for v in value)
    return value


def graph_to_json(graph: Graph) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "types": {k: {"dtype": t.dtype, "shape": [dim_to_json(d) for d in t.shape]}
                  for k, t in graph.types.items()},
        "constants": list(graph.constants),
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs),
                   "outputs": list(n.outputs),
                   "attrs": {k: _encode_attr(v) for k, v in n.attrs.items()},
                   "origin": sorted(n.origin)} for n in graph.nodes],
        "captured": [[c.id, c.name, c.source_op] for c in graph.captured.values()],
        "metadata": graph.metadata,
    }


def _check_names(doc: dict[str, Any]) -> None:
    """Value and node names are what ``GraphBuilder`` makes (``[A-Za-z0-9_.]``): a crafted
    file cannot smuggle a path separator into file names that commands derive from them."""
    names = [*doc["inputs"], *doc["outputs"], *doc["types"], *doc["constants"]]
    for node in doc["nodes"]:
        names += [node["name"], *(v for v in node["inputs"] if v), *node["outputs"]]
    bad = [n for n in names if not isinstance(n, str) or not _SAFE_NAME.fullmatch(n)]
    if not isinstance(doc["name"], str) or bad:
        raise ValueError(f"unsafe or invalid name(s) {bad[:3]!r}")


def graph_from_json(doc: dict[str, Any], constants: dict[str, np.ndarray]) -> Graph:
    _check_names(doc)
    types = {k: TensorType(t["dtype"], tuple(parse_dim(d) for d in t["shape"]))
             for k, t in doc["types"].items()}
    nodes = [Node(n["name"], n["op"], tuple(n["inputs"]), tuple(n["outputs"]),
                  {k: _decode_attr(v) for k, v in n["attrs"].items()}, frozenset(n["origin"]))
             for n in doc["nodes"]]
    captured = {int(i): CapturedNode(int(i), name, op) for i, name, op in doc["captured"]}
    return Graph(doc["name"], list(doc["inputs"]), list(doc["outputs"]), types, constants,
                 nodes, captured, doc.get("metadata", {}))


def save_graph(graph: Graph, path: str | os.PathLike[str]) -> None:
    arrays = {f"const_{i}": array for i, array in enumerate(graph.constants.values())}
    text = json.dumps(graph_to_json(graph), allow_nan=True)
    arrays["graph_json"] = np.frombuffer(text.encode(), dtype=np.uint8)
    write_atomically(path, lambda handle: np.savez(handle, **arrays))


def load_graph(path: str | os.PathLike[str]) -> Graph:
    where = str(path)
    try:
        with open(path, "rb") as handle:
            payload = handle.read()
        with np.load(io.BytesIO(payload), allow_pickle=False) as archive:
            doc = json.loads(archive["graph_json"].tobytes().decode())
            if doc.get("format") != FORMAT:
                raise LowbitError("not a lowbit graph file", file=where)
            if doc.get("version") != VERSION:
                raise LowbitError(f"graph file version {doc.get('version')} is not {VERSION}",
                                  file=where)
            constants = {}
            for i, name in enumerate(doc["constants"]):
                array = archive[f"const_{i}"]
                array.flags.writeable = False
                constants[name] = array
        graph = graph_from_json(doc, constants)
    except FileNotFoundError:
        raise LowbitError("file not found", file=where) from None
    except LowbitError:
        raise
    except _MALFORMED as err:
        raise LowbitError(f"unreadable lowbit graph file ({type(err).__name__}: {err})",
                          file=where) from None
    try:
        graph.verify()
    except LowbitError as err:
        raise err.located(file=where)
    except _MALFORMED as err:  # a crafted node the op table's inference cannot even read
        raise LowbitError(f"invalid lowbit graph ({type(err).__name__}: {err})",
                          file=where) from None
    return graph
