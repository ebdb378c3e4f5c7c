"""The graph IR, its op table, the builder importers use, and (de)serialization."""

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.dims import Sym
from lowbit.compiler.errors import GraphError, InputError, LowbitError, UnsupportedOpError
from lowbit.compiler.ir import CapturedNode, Graph, Node
from lowbit.compiler.ops import OP_TABLE, OpSpec
from lowbit.compiler.printer import format_graph
from lowbit.compiler.serialize import load_graph, save_graph
from lowbit.compiler.types import TensorType

__all__ = [
    "CapturedNode", "Graph", "GraphBuilder", "GraphError", "InputError", "LowbitError", "Node",
    "OP_TABLE", "OpSpec", "Sym", "TensorType", "UnsupportedOpError", "format_graph",
    "load_graph", "save_graph",
]
