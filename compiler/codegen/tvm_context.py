"""What a TVM emitter works with: operands, and a builder of typed Relax bindings.

An emitter (one per lowbit op, in ``tvm_int_rules.INT_EMITTERS`` and
``tvm_data_rules.DATA_EMITTERS``) is written in the op table's natural form:
``emit(em, *operands, **attrs)``. Each operand is an :class:`Operand` (``None`` for an absent
optional input) carrying the Relax expression of the value and, for a graph constant, its
array, so that an emitter can fold work on weights at compile time. The emitter binds Relax
ops through ``em`` and returns the Relax expression of each result (a tuple for several).

Helper arguments: a ``relax.Expr`` is used as is; a Python number or numpy array is a
constant in the dtype of the helper's first expression argument (it must fit that dtype: a
constant never wraps). ``relax.const`` is always given its dtype explicitly, since without one
an int64 array silently becomes int32 and a float64 one float32.

The batch size is one symbolic ``int64`` variable ``N``; a dimension ``Sym(k)`` is ``k * N``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tvm import relax, tirx

from lowbit.compiler.dims import BATCH, Dim, Shape, Sym
from lowbit.compiler.ir import Graph
from lowbit.compiler.types import INT_DTYPES, TensorType

Arg = relax.Expr | int | float | np.ndarray


@dataclass(frozen=True)
class Operand:
    """A lowbit value as an emitter sees it: its Relax expression, type and constant array."""

    expr: relax.Expr
    type: TensorType
    value: np.ndarray | None = None

    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def shape(self) -> Shape:
        return self.type.shape


def dtype_of(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def fits(array: np.ndarray, dtype: str) -> bool:
    """Whether every value of ``array`` is representable in ``dtype`` (always, for floats)."""
    if dtype not in INT_DTYPES or array.size == 0:
        return True
    info = np.iinfo(dtype)
    return bool(array.min() >= info.min and array.max() <= info.max)


class Emitter:
    """Binds the Relax expressions of one graph inside an open ``BlockBuilder`` dataflow block."""

    def __init__(self, graph: Graph, builder: relax.BlockBuilder, batch: tirx.Var) -> None:
        self.graph = graph
        self.bb = builder
        self.batch = batch
        self.values: dict[str, relax.Expr] = {}
        self._consts: dict[tuple[str, tuple[int, ...], bytes], relax.Expr] = {}
        self.hint = ""
        """The lowbit node being emitted: the name of bindings made without a hint."""
        self.origins: dict[str, str] = {}
        """The node (``hint``) that made each binding, by variable name."""

    # -- values -------------------------------------------------------------------------------
    def operand(self, name: str) -> Operand:
        value = self.graph.constants.get(name)
        if name not in self.values and value is not None:
            self.values[name] = self.const(value, str(value.dtype))
        return Operand(self.values[name], self.graph.types[name], value)

    def const(self, value: int | float | np.ndarray, dtype: str) -> relax.Expr:
        """A constant holding ``value`` in ``dtype``, always with the dtype spelled out."""
        source = np.asarray(value)
        if not fits(source, dtype):
            raise ValueError(f"constant {source} does not fit {dtype}")
        array = source.astype(dtype, order="C")  # keeps rank 0 (ascontiguousarray would not)
        key = (dtype, array.shape, array.tobytes())
        if key not in self._consts:
            self._consts[key] = relax.const(array, dtype)
        return self._consts[key]

    def emit(self, expr: relax.Expr, hint: str = "") -> relax.Var:
        var = self.bb.emit(expr, name_hint=hint or self.hint)
        self.origins[var.name] = self.hint
        return var

    def arg(self, value: Arg, like: relax.Expr | str) -> relax.Expr:
        """``value`` as an expression; a number becomes a constant in ``like``'s dtype."""
        if isinstance(value, relax.Expr):
            return value
        return self.const(value, like if isinstance(like, str) else dtype_of(like))

    # -- shapes with the symbolic batch -------------------------------------------------------
    def dim(self, dim: Dim) -> tirx.PrimExpr | int:
        return self.batch * dim.coeff if isinstance(dim, Sym) else int(dim)

    def shape(self, shape: Shape) -> list[tirx.PrimExpr | int]:
        return [self.dim(d) for d in shape]

    # -- elementwise helpers ------------------------------------------------------------------
    def _binary(self, op, a: Arg, b: Arg) -> relax.Var:  # noqa: ANN001 - a relax.op function
        like = a if isinstance(a, relax.Expr) else b
        return self.emit(op(self.arg(a, like), self.arg(b, like)))

    def add(self, a: Arg, b: Arg) -> relax.Expr:
        return a if _is_scalar(b, 0) else self._binary(relax.op.add, a, b)

    def sub(self, a: Arg, b: Arg) -> relax.Expr:
        return a if _is_scalar(b, 0) else self._binary(relax.op.subtract, a, b)

    def mul(self, a: Arg, b: Arg) -> relax.Expr:
        return a if _is_scalar(b, 1) else self._binary(relax.op.multiply, a, b)

    def floor_div(self, a: Arg, b: Arg) -> relax.Expr:
        """Floor division (Python's ``//``) on integers."""
        return a if _is_scalar(b, 1) else self._binary(relax.op.floor_divide, a, b)

    def trunc_div(self, a: Arg, b: Arg) -> relax.Expr:
        """Integer division truncating toward zero (C, ONNX and TVM's ``divide``)."""
        return a if _is_scalar(b, 1) else self._binary(relax.op.divide, a, b)

    def right_shift(self, a: Arg, b: Arg) -> relax.Expr:
        """Arithmetic right shift on signed integers (floor division by ``2^b``)."""
        return a if _is_scalar(b, 0) else self._binary(relax.op.right_shift, a, b)

    def minimum(self, a: Arg, b: Arg) -> relax.Var:
        return self._binary(relax.op.minimum, a, b)

    def maximum(self, a: Arg, b: Arg) -> relax.Var:
        return self._binary(relax.op.maximum, a, b)

    def less(self, a: Arg, b: Arg) -> relax.Var:
        return self._binary(relax.op.less, a, b)

    def greater(self, a: Arg, b: Arg) -> relax.Var:
        return self._binary(relax.op.greater, a, b)

    def equal(self, a: Arg, b: Arg) -> relax.Var:
        return self._binary(relax.op.equal, a, b)

    def where(self, cond: relax.Expr, a: Arg, b: Arg, dtype: str | None = None) -> relax.Var:
        """``cond ? a : b``; constants take the tensor branch's dtype, or ``dtype``."""
        like = dtype or (a if isinstance(a, relax.Expr) else b)
        if not isinstance(like, (relax.Expr, str)):
            raise ValueError("where needs a tensor branch or a dtype")
        return self.emit(relax.op.where(cond, self.arg(a, like), self.arg(b, like)))

    def cast(self, x: relax.Expr, dtype: str) -> relax.Expr:
        return x if dtype_of(x) == dtype else self.emit(relax.op.astype(x, dtype))

    def clip(self, x: relax.Expr, low: int | float | None, high: int | float | None
             ) -> relax.Expr:
        """Clamp to ``[low, high]`` (``None`` leaves a side open), bounds in ``x``'s dtype."""
        dtype = dtype_of(x)
        if low is None and high is None:
            return x
        if dtype in INT_DTYPES:
            info = np.iinfo(dtype)
            low = int(info.min) if low is None else int(low)
            high = int(info.max) if high is None else int(high)
            if (low, high) == (int(info.min), int(info.max)):
                return x
            bounds = [tirx.IntImm(dtype, low), tirx.IntImm(dtype, high)]
        else:
            low = -np.inf if low is None else float(np.asarray(low).astype(dtype))
            high = np.inf if high is None else float(np.asarray(high).astype(dtype))
            bounds = [tirx.FloatImm(dtype, low), tirx.FloatImm(dtype, high)]
        return self.emit(relax.op.clip(x, relax.prim_value(bounds[0]),
                                       relax.prim_value(bounds[1])))

    # -- reductions -----------------------------------------------------------------------------
    def reduce_sum(self, x: relax.Expr, axes: Sequence[int], keepdims: bool) -> relax.Var:
        return self.emit(relax.op.sum(x, list(axes), keepdims))

    def reduce_max(self, x: relax.Expr, axes: Sequence[int], keepdims: bool) -> relax.Var:
        return self.emit(relax.op.max(x, list(axes), keepdims))

    # -- widening -------------------------------------------------------------------------------
    def wide(self, operand: Operand, zero_point: int = 0, dtype: str = "int64") -> relax.Expr:
        """``operand - zero_point`` in ``dtype`` (int64 unless a caller proved less suffices);
        folded when the operand is a constant."""
        if operand.value is not None:
            return self.const(operand.value.astype(np.int64) - zero_point, dtype)
        return self.sub(self.cast(operand.expr, dtype), zero_point)


def batch_var() -> tirx.Var:
    return tirx.Var(BATCH, "int64")


def tensor_type(em_or_batch: Emitter | tirx.Var, ttype: TensorType) -> relax.TensorType:
    batch = em_or_batch.batch if isinstance(em_or_batch, Emitter) else em_or_batch
    dims = [batch * d.coeff if isinstance(d, Sym) else int(d) for d in ttype.shape]
    return relax.TensorType(dims, ttype.dtype)


def _is_scalar(value: Arg, target: int) -> bool:
    return not isinstance(value, relax.Expr) and np.ndim(value) == 0 and value == target


__all__ = ["Arg", "Emitter", "Operand", "batch_var", "dtype_of", "fits", "tensor_type"]
