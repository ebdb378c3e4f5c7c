"""What an ONNX converter works with: values, the import state and the per-node context.

A converter (one per ONNX op type, in ``onnx_rules.ONNX_RULES``) receives a
:class:`NodeContext`: the ONNX node, its attributes as a dict, its inputs as :class:`Value`
objects and the captured-node id. It calls :meth:`NodeContext.emit` with lowbit ops and hands
its results back with :meth:`NodeContext.set_output`.

A :class:`Value` is either a lowbit graph value (``name``) or a value whose content is known at
import time (``array``): initializers, ``Constant`` nodes and everything computed from them
or from static shapes. ``emit`` on known inputs evaluates the op with the op table's kernel
instead of adding a node, so shape subgraphs and constant-weight arithmetic fold away. A known
value becomes a graph constant only when a real node consumes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.dims import Sym
from lowbit.compiler.errors import LowbitError, UnsupportedOpError
from lowbit.compiler.importers.onnx_fold import fold_symbolic, has_sym, settle
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.types import DTYPES, TensorType

ONNX_DTYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.BOOL: "bool",
}


MAX_KNOWN_ELEMENTS = 2**27
"""Largest value the importer computes itself (512 MiB of float32): a hostile shape such as
``ConstantOfShape([2^20, 2^20, 2^10])`` is refused before anything is allocated."""


def check_known_size(shape: Sequence[Any], what: str) -> None:
    """ValueError when a value of ``shape``, computed at import time, would be too large."""
    count = 1
    for dim in shape:
        count *= int(dim)
    if count > MAX_KNOWN_ELEMENTS:
        raise ValueError(f"{what} of shape {list(shape)} has {count:,} elements, more than the "
                         f"{MAX_KNOWN_ELEMENTS:,} lowbit computes at import time")


def onnx_dtype(elem_type: int) -> str:
    """The lowbit dtype of an ONNX element type; ValueError for those lowbit lacks."""
    if elem_type not in ONNX_DTYPES:
        name = onnx.TensorProto.DataType.Name(elem_type) if elem_type in \
            onnx.TensorProto.DataType.values() else str(elem_type)
        raise ValueError(f"element type {name} is not supported")
    return ONNX_DTYPES[elem_type]


@dataclass(eq=False)
class Value:
    """An ONNX value during import: a lowbit value (``name``) and/or known content (``array``).

    For known values ``type.dtype`` is the nominal dtype (``array`` is an object array while it
    holds a ``Sym``).
    """

    type: TensorType
    name: str | None = None
    array: np.ndarray | None = None
    hint: str = "v"

    @property
    def known(self) -> bool:
        return self.array is not None

    @property
    def shape(self) -> tuple[Any, ...]:
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def rank(self) -> int:
        return self.type.rank


def known_value(array: np.ndarray, hint: str, dtype: str | None = None) -> Value:
    """A value with known content; ``dtype`` is needed for arrays that hold a ``Sym``."""
    nominal = dtype or str(array.dtype)
    if nominal not in DTYPES:
        raise ValueError(f"dtype {nominal} is not supported")
    array = settle(array, nominal)
    return Value(TensorType(nominal, tuple(int(d) for d in array.shape)), array=array, hint=hint)


class ImportState:
    """Everything shared across nodes: the builder, the ONNX value map, the file name."""

    def __init__(self, builder: GraphBuilder, file: str, opset: int, ir_version: int,
                 consumed: set[str], checker: Any) -> None:
        self.builder = builder
        self.file = file
        self.opset = opset
        self.ir_version = ir_version
        self.consumed = consumed  # ONNX value names some node or graph output reads
        self.checker = checker  # onnx.checker's context for per-node schema checks
        self.env: dict[str, Value] = {}
        # known values derived from other known values (a transposed weight...), made once;
        # keyed by (id(source), tag), the source kept alive beside its result
        self.derived: dict[tuple[int, str], tuple[Value, Value]] = {}

    def materialize(self, value: Value) -> str:
        """The lowbit value name of ``value``, adding a graph constant for known content."""
        if value.name is None:
            assert value.array is not None
            if has_sym(value.array):
                raise ValueError(f"value {value.hint!r} depends on the batch size and cannot "
                                 "be a constant tensor")
            value.name = self.builder.add_constant(value.array.astype(value.dtype, copy=False),
                                                   value.hint)
        return value.name


@dataclass
class NodeContext:
    state: ImportState
    node: onnx.NodeProto
    name: str
    attrs: dict[str, Any]
    inputs: list[Value | None]
    origin: int
    outputs: list[Value | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.outputs = [None] * len(self.node.output)

    # -- reading the node -------------------------------------------------------------------

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def opset(self) -> int:
        return self.state.opset

    def input(self, index: int) -> Value | None:
        """Input ``index``, or None where it is absent (empty name or past the end)."""
        return self.inputs[index] if index < len(self.inputs) else None

    def required(self, index: int) -> Value:
        value = self.input(index)
        if value is None:
            raise self.fail(f"input {index} is required")
        return value

    def known(self, index: int, what: str) -> np.ndarray | None:
        """The content of input ``index`` (None if absent); an error if it is not known."""
        value = self.input(index)
        if value is None:
            return None
        if value.array is None:
            raise self.fail(f"{what} (input {index}) must be known at import time (a constant "
                            "or computed from constants and static shapes)", unsupported=True)
        return value.array

    def ints(self, index: int, what: str) -> list[Any] | None:
        """A known integer vector input as Python ints (``Sym`` kept); None if absent."""
        array = self.known(index, what)
        if array is None:
            return None
        if array.dtype.kind not in "iuO":  # ONNX shapes, axes and indices are integers
            raise self.fail(f"{what} (input {index}) must be integers, not {array.dtype}")
        return [x if not isinstance(x, (int, np.integer)) else int(x)
                for x in np.asarray(array).reshape(-1).tolist()]

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def output_used(self, index: int) -> bool:
        return index < len(self.node.output) and self.node.output[index] in self.state.consumed

    def reject_used_outputs(self, first: int, what: str) -> None:
        for index in range(first, len(self.node.output)):
            if self.output_used(index):
                raise self.fail(f"output {index} ({what}) is not supported", unsupported=True)

    def fail(self, message: str, unsupported: bool = False) -> LowbitError:
        kind = UnsupportedOpError if unsupported else LowbitError
        return kind(message, file=self.state.file, node=self.name, op=self.op_type)

    # -- producing values -------------------------------------------------------------------

    def hint(self, out: int | None, op: str) -> str:
        if out is not None and out < len(self.node.output) and self.node.output[out]:
            return self.node.output[out]
        return f"{self.name}.{op}"

    def const(self, array: Any, dtype: str, hint: str = "const") -> Value:
        """A helper constant (e.g. a scale factor) with the given dtype."""
        return known_value(np.asarray(array, dtype=dtype), f"{self.name}.{hint}")

    def emit(self, op: str, inputs: Sequence[Value | None], attrs: dict[str, Any] | None = None,
             out: int | None = None) -> Value:
        """Apply lowbit ``op``: fold it when every input is known, else add a graph node.

        ``out`` names the ONNX output this value becomes (its name is the hint).
        """
        spec = OP_TABLE[op]
        attrs = dict(attrs or {})
        hint = self.hint(out, op)
        present = [v for v in inputs if v is not None]
        if present and all(v.known for v in present) and not _mentions_sym(attrs):
            full = spec.with_defaults(attrs)
            (out_type,) = spec.infer_types([v.type if v else None for v in inputs], full)
            check_known_size(out_type.shape, f"folded {op}")
            arrays = [v.array if v else None for v in inputs]

            def run() -> Any:
                return spec.run(arrays, full, 1)[0]

            if any(a is not None and a.dtype == object for a in arrays):
                result = fold_symbolic(op, arrays, full, run)
            else:
                with np.errstate(all="ignore"):
                    result = run()
            value = known_value(np.asarray(result) if not isinstance(result, np.ndarray)
                                else result, hint, out_type.dtype)
            if value.shape != tuple(out_type.shape):
                raise ValueError(f"folded {op} gave shape {value.shape}, expected {out_type}")
            return value
        names = [self.state.materialize(v) if v is not None else "" for v in inputs]
        while names and names[-1] == "":
            names.pop()
        result_name = self.state.builder.add(op, names, self.origin, attrs, hint)
        return Value(self.state.builder.type_of(result_name), name=result_name, hint=hint)

    def set_output(self, index: int, value: Value) -> None:
        self.outputs[index] = value


def _mentions_sym(value: Any) -> bool:
    """Whether an attribute value holds a batch dimension (the op then cannot fold)."""
    if isinstance(value, Sym):
        return True
    if isinstance(value, dict):
        return any(_mentions_sym(v) for v in value.values())
    if isinstance(value, (tuple, list)):
        return any(_mentions_sym(v) for v in value)
    return False


__all__ = ["MAX_KNOWN_ELEMENTS", "ImportState", "NodeContext", "ONNX_DTYPES", "Value",
           "check_known_size", "known_value", "onnx_dtype"]
