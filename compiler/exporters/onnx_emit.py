"""What an ONNX export rule works with: operands, and an emitter of typed ONNX nodes.

A rule (one per lowbit op, in ``onnx_int_rules.INT_RULES`` and ``onnx_data_rules.DATA_RULES``)
is written in the op table's natural form: ``rule(em, *operands, **attrs)``. Each operand is
an :class:`Operand` (``None`` for an absent optional input); the rule emits ONNX nodes through
the :class:`Emitter` ``em`` and returns the ONNX name of each result (a ``str``, or a tuple for
several outputs). The exporter then gives each result its lowbit name.

Emitter helpers take *args*: a ``str`` is an ONNX value name; a Python number or numpy array
is a constant, made an initializer in the dtype of the helper's first named argument (the
value must fit it: a constant never wraps). The emitter tracks every value's lowbit dtype, so
helpers know their output dtype and ``cast`` to the same dtype is free. Names the emitter
invents contain ``/`` (``<node>/<hint>``); lowbit values keep their own names.

onnxruntime's CPU kernels do not cover every integer dtype. ``ORT_DTYPES`` lists, for the ops
whose coverage has gaps, the dtypes that onnxruntime 1.32 runs (probed, see the test module);
``compute_dtype`` picks the narrowest dtype that both holds the value exactly and has a kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lowbit.compiler.dims import Shape, Sym
from lowbit.compiler.ir import Graph
from lowbit.compiler.types import INT_DTYPES, TensorType

Arg = str | int | float | np.ndarray
ExportRule = Callable[..., str | tuple[str, ...]]

ONNX_ELEM_TYPES: dict[str, int] = {
    "float16": TensorProto.FLOAT16, "float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE,
    "int8": TensorProto.INT8, "uint8": TensorProto.UINT8, "int16": TensorProto.INT16,
    "int32": TensorProto.INT32, "int64": TensorProto.INT64, "bool": TensorProto.BOOL,
}

_NUMERIC = frozenset({"int8", "uint8", "int32", "int64", "float32", "float64"})
ORT_DTYPES: dict[str, frozenset[str]] = {
    "Max": _NUMERIC, "Min": _NUMERIC, "Clip": _NUMERIC, "ReduceMax": _NUMERIC,
    "Where": _NUMERIC,  # of the branches
    "Relu": frozenset({"int8", "int32", "float32", "float64"}),
    "Neg": frozenset({"int8", "int16", "int32", "int64", "float32", "float64"}),
    "MaxPool": frozenset({"int8", "uint8", "float32", "float64"}),
}
"""onnxruntime 1.32 CPU kernels, where some lowbit dtypes lack one (int16 lacks them all)."""

EXACT_WIDENINGS: dict[str, tuple[str, ...]] = {
    "bool": ("uint8", "int32"),
    "int8": ("int16", "int32", "int64", "float32", "float64"),
    "uint8": ("int16", "int32", "int64", "float32", "float64"),
    "int16": ("int32", "int64", "float32", "float64"),
    "int32": ("int64", "float64"),
    "int64": (),
    "float16": ("float32", "float64"),
    "float32": ("float64",),
    "float64": (),
}
"""Dtypes that hold every value of a dtype exactly, narrowest first."""


def compute_dtype(op_type: str, dtype: str) -> str:
    """``dtype`` if onnxruntime runs ``op_type`` on it, else the narrowest exact widening that
    it runs; ValueError when there is none."""
    supported = ORT_DTYPES.get(op_type)
    if supported is None or dtype in supported:
        return dtype
    for wider in EXACT_WIDENINGS[dtype]:
        if wider in supported:
            return wider
    raise ValueError(f"onnxruntime has no {op_type} kernel for {dtype} or a wider exact dtype")


def registrar(table: dict[str, ExportRule]) -> Callable[[str], Callable[[ExportRule], ExportRule]]:
    """A decorator ``@rule("op")`` that enters an export rule into ``table``."""
    def rule(op: str) -> Callable[[ExportRule], ExportRule]:
        def register(fn: ExportRule) -> ExportRule:
            if op in table:
                raise ValueError(f"export rule for {op} registered twice")
            table[op] = fn
            return fn
        return register
    return rule


@dataclass(frozen=True)
class Operand:
    """A lowbit value as a rule sees it: its name, type and, for a graph constant, its array."""

    name: str
    type: TensorType
    value: np.ndarray | None = None

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def shape(self) -> Shape:
        return self.type.shape


def onnx_elem_type(dtype: str) -> int:
    if dtype not in ONNX_ELEM_TYPES:
        raise ValueError(f"dtype {dtype} has no ONNX export")
    return ONNX_ELEM_TYPES[dtype]


def fits(array: np.ndarray, dtype: str) -> bool:
    """Whether every value of ``array`` is representable in the integer ``dtype``."""
    if dtype not in INT_DTYPES or array.size == 0:
        return True
    info = np.iinfo(dtype)
    return bool(array.min() >= info.min and array.max() <= info.max)


class Emitter:
    """Collects the ONNX nodes and initializers of one export, with unique names."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, np.ndarray] = {}
        self.dtypes: dict[str, str] = {name: t.dtype for name, t in graph.types.items()}
        self.scope = "graph"
        self._taken: set[str] = set(graph.types)
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._batch: str | None = None

    # -- names and values -----------------------------------------------------------------
    def fresh(self, hint: str, scope: str | None = None) -> str:
        base = f"{scope or self.scope}/{hint}"
        name, counter = base, 1
        while name in self._taken:
            name, counter = f"{base}_{counter}", counter + 1
        self._taken.add(name)
        return name

    def operand(self, value: str) -> Operand:
        return Operand(value, self.graph.types[value], self.graph.constants.get(value))

    def use(self, operand: Operand) -> str:
        """The ONNX name of ``operand``; a graph constant becomes an initializer on first use."""
        if operand.value is not None and operand.name not in self.initializers:
            self.initializers[operand.name] = operand.value
        return operand.name

    def const(self, value: int | float | np.ndarray, dtype: str, hint: str = "const") -> str:
        """An initializer holding ``value`` in ``dtype`` (equal constants are shared)."""
        source = np.asarray(value)
        if not fits(source, dtype):
            raise ValueError(f"constant {source} does not fit {dtype}")
        array = np.array(source.astype(dtype), order="C")  # keeps 0-d arrays 0-d
        key = (dtype, array.shape, array.tobytes())
        if key not in self._consts:
            name = self.fresh(hint, scope="const")
            self.initializers[name] = array
            self.dtypes[name] = dtype
            self._consts[key] = name
        return self._consts[key]

    def int64(self, operand: Operand, zero_point: int = 0) -> str:
        """``operand - zero_point`` widened to int64; folded when the operand is a constant."""
        if operand.value is not None:
            return self.const(operand.value.astype(np.int64) - zero_point, "int64", "wide")
        return self.sub(self.cast(self.use(operand), "int64"), zero_point)

    # -- nodes ----------------------------------------------------------------------------
    def node(self, op_type: str, inputs: Sequence[str], *, dtype: str | None = None,
             hint: str | None = None, **attrs: object) -> str:
        """Append one single-output node; its dtype defaults to its first input's."""
        out = self.fresh(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out],
                                           name=self.fresh(op_type, scope=f"{self.scope}/node"),
                                           **attrs))
        self.dtypes[out] = dtype or self.dtypes[inputs[0]]
        return out

    def op(self, op_type: str, *args: Arg, dtype: str | None = None, **attrs: object) -> str:
        """A node over args; constants take the dtype of the first named argument."""
        ref = next(self.dtypes[a] for a in args if isinstance(a, str))
        names = [a if isinstance(a, str) else self.const(a, ref) for a in args]
        return self.node(op_type, names, dtype=dtype or ref, **attrs)

    def add(self, a: Arg, b: Arg) -> str:
        return a if _is_zero(b) and isinstance(a, str) else self.op("Add", a, b)

    def sub(self, a: Arg, b: Arg) -> str:
        return a if _is_zero(b) and isinstance(a, str) else self.op("Sub", a, b)

    def mul(self, a: Arg, b: Arg) -> str:
        return a if _is_one(b) and isinstance(a, str) else self.op("Mul", a, b)

    def div(self, a: Arg, b: Arg) -> str:
        """ONNX Div: truncates toward zero on integers."""
        return a if _is_one(b) and isinstance(a, str) else self.op("Div", a, b)

    def mod(self, a: Arg, b: Arg) -> str:
        """Python's ``%`` on integers (the result takes the divisor's sign)."""
        return self.op("Mod", a, b, fmod=0)

    def minimum(self, a: Arg, b: Arg) -> str:
        return self.op("Min", a, b)

    def maximum(self, a: Arg, b: Arg) -> str:
        return self.op("Max", a, b)

    def less(self, a: Arg, b: Arg) -> str:
        return self.op("Less", a, b, dtype="bool")

    def greater(self, a: Arg, b: Arg) -> str:
        return self.op("Greater", a, b, dtype="bool")

    def equal(self, a: Arg, b: Arg) -> str:
        return self.op("Equal", a, b, dtype="bool")

    def where(self, cond: str, a: Arg, b: Arg) -> str:
        ref = next(self.dtypes[v] for v in (a, b) if isinstance(v, str)) if any(
            isinstance(v, str) for v in (a, b)) else "int64"
        names = [v if isinstance(v, str) else self.const(v, ref) for v in (a, b)]
        return self.node("Where", [cond, *names], dtype=ref)

    def gather(self, table: np.ndarray, indices: str, dtype: str = "int64") -> str:
        """``table[indices]`` for a constant table (a lookup of precomputed values)."""
        return self.node("Gather", [self.const(table, dtype, "table"), indices], dtype=dtype)

    def clip(self, x: str, low: Arg | None, high: Arg | None) -> str:
        dtype = self.dtypes[x]
        bounds = ["" if b is None else b if isinstance(b, str) else self.const(b, dtype, "bound")
                  for b in (low, high)]
        while bounds and not bounds[-1]:
            bounds.pop()
        return self.node("Clip", [x, *bounds])

    def cast(self, x: str, dtype: str) -> str:
        if self.dtypes[x] == dtype:
            return x
        return self.node("Cast", [x], dtype=dtype, to=onnx_elem_type(dtype))

    def axes(self, axes: Sequence[int]) -> str:
        return self.const(np.array(list(axes), np.int64), "int64", "axes")

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool) -> str:
        return self.node("ReduceSum", [x, self.axes(axes)], keepdims=int(keepdims))

    def reduce_max(self, x: str, axes: Sequence[int], keepdims: bool) -> str:
        return self.node("ReduceMax", [x], axes=list(axes), keepdims=int(keepdims))

    # -- shapes with the symbolic batch ---------------------------------------------------
    def batch(self) -> str:
        """An int64 ``[1]`` tensor holding the run's batch size ``N``.

        Read from the first graph input with a batch-sized dimension (``Shape`` of that axis
        divided by its coefficient); 1 when no input has one, as in the interpreter."""
        if self._batch is None:
            for name in self.graph.inputs:
                for axis, dim in enumerate(self.graph.types[name].shape):
                    if isinstance(dim, Sym):
                        size = self.node("Shape", [name], dtype="int64", hint="batch_dim",
                                         start=axis, end=axis + 1)
                        self._batch = self.div(size, dim.coeff)
                        return self._batch
            self._batch = self.const(np.array([1], np.int64), "int64", "batch")
        return self._batch

    def shape(self, shape: Shape) -> str:
        """An int64 shape tensor for ``shape``, batch-sized dimensions computed at run time."""
        if all(isinstance(d, int) for d in shape):
            return self.const(np.array(shape, np.int64), "int64", "shape")
        parts = [self.mul(self.batch(), d.coeff) if isinstance(d, Sym)
                 else self.const(np.array([d], np.int64), "int64", "dim") for d in shape]
        return self.node("Concat", parts, dtype="int64", hint="shape", axis=0)

    # -- the model --------------------------------------------------------------------------
    def initializer_protos(self) -> list[onnx.TensorProto]:
        return [numpy_helper.from_array(np.array(a, order="C"), name)
                for name, a in self.initializers.items()]


def _is_zero(value: Arg) -> bool:
    return not isinstance(value, str) and np.ndim(value) == 0 and value == 0


def _is_one(value: Arg) -> bool:
    return not isinstance(value, str) and np.ndim(value) == 0 and value == 1
