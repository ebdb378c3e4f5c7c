"""TVM emitters for the float-table ops that lowered programs apply to integer tensors.

Data movement (``reshape transpose slice concat gather expand``), ``equal``, ``where``,
``cast``, ``clip``, ``max_pool``, ``reduce_max``, ``relu`` and ``maximum``/``minimum`` map one
to one onto Relax ops. Integer ``add sub mul neg`` wrap in numpy; TVM's signed arithmetic must
not overflow, so they run in the unsigned type of the same width (``tvm_int_math.wrapping``).
Slices are resolved at compile time (every sliced axis is static): a forward slice becomes a
``strided_slice`` with in-range bounds, a backward one a ``take`` of the picked indices.
Target shapes with a batch-sized dimension use the symbolic batch ``N``.
"""

from __future__ import annotations

import math

import numpy as np
from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, Operand
from lowbit.compiler.codegen.tvm_int_math import wrapping
from lowbit.compiler.codegen.tvm_int_rules import TvmEmitter, emitter
from lowbit.compiler.dims import Shape, Sym, normalize_axis
from lowbit.compiler.ops.window import output_spatial
from lowbit.compiler.types import INT_DTYPES

DATA_EMITTERS: dict[str, TvmEmitter] = {}


@emitter(DATA_EMITTERS, "reshape")
def emit_reshape(em: Emitter, x: Operand, *, shape: Shape) -> relax.Expr:
    if tuple(x.shape) == tuple(shape):
        return x.expr
    return em.emit(relax.op.reshape(x.expr, em.shape(shape)))


@emitter(DATA_EMITTERS, "transpose")
def emit_transpose(em: Emitter, x: Operand, *, perm: tuple[int, ...]) -> relax.Expr:
    return em.emit(relax.op.permute_dims(x.expr, list(perm)))


@emitter(DATA_EMITTERS, "slice")
def emit_slice(em: Emitter, x: Operand, *, axes: tuple[int, ...], starts: tuple[int, ...],
               ends: tuple[int, ...], steps: tuple[int, ...]) -> relax.Expr:
    out = x.expr
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        at = normalize_axis(axis, x.type.rank)
        size = x.shape[at]
        if isinstance(size, Sym):
            continue  # shape inference only lets the whole batch axis through
        picked = range(*slice(start, end, step).indices(size))
        if picked == range(size):
            continue
        if step > 0 and len(picked):
            last = picked[-1] + 1
            out = em.emit(relax.op.strided_slice(out, [at], [picked.start], [last], [step],
                                                 assume_inbound=True))
        else:  # backward (or empty): pick the indices themselves
            indices = em.const(np.array(list(picked), np.int64), "int64")
            out = em.emit(relax.op.take(out, indices, axis=at))
    return out


@emitter(DATA_EMITTERS, "concat")
def emit_concat(em: Emitter, *parts: Operand | None, axis: int) -> relax.Expr:
    return em.emit(relax.op.concat([p.expr for p in parts if p is not None], axis=axis))


@emitter(DATA_EMITTERS, "gather")
def emit_gather(em: Emitter, data: Operand, indices: Operand, *, axis: int) -> relax.Expr:
    # "wrap" maps the negative indices numpy accepts, [-size, 0), onto [0, size) and keeps
    # any other index inside the table (the interpreter raises for those).
    return em.emit(relax.op.take(data.expr, indices.expr, axis=axis, mode="wrap"))


@emitter(DATA_EMITTERS, "expand")
def emit_expand(em: Emitter, x: Operand, *, shape: Shape) -> relax.Expr:
    if tuple(x.shape) == tuple(shape):
        return x.expr
    return em.emit(relax.op.broadcast_to(x.expr, em.shape(shape)))


_MAX_POOLS = {1: (relax.op.nn.max_pool1d, "NCW"), 2: (relax.op.nn.max_pool2d, "NCHW"),
              3: (relax.op.nn.max_pool3d, "NCDHW")}


def _floor_mode_pads(spatial: Shape, kernel: tuple[int, ...], strides: tuple[int, ...],
                     pads: tuple[int, ...], dilations: tuple[int, ...]) -> list[int]:
    """Pads giving, in floor mode, the windows lowbit's ``ceil_mode`` gives (its last window
    must start inside the input or its begin padding, as in torch); TVM's own ceil mode does
    not make that exception."""
    if not all(isinstance(d, int) for d in spatial):
        raise ValueError("ceil_mode pooling needs static spatial sizes")
    rank = len(kernel)
    out = output_spatial(spatial, kernel, strides, pads, dilations, ceil_mode=True)
    ends = [max(0, (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
                - spatial[i] - pads[i]) for i in range(rank)]
    return list(pads[:rank]) + ends


@emitter(DATA_EMITTERS, "max_pool")
def emit_max_pool(em: Emitter, x: Operand, *, kernel: tuple[int, ...],
                  strides: tuple[int, ...], pads: tuple[int, ...],
                  dilations: tuple[int, ...], ceil_mode: bool) -> relax.Expr:
    # TVM pads max pooling with the dtype's lowest value, as eval_max_pool does.
    rank = len(kernel)
    if rank not in _MAX_POOLS:
        raise ValueError(f"{rank}-d max pooling has no Relax op")
    if ceil_mode:
        pads = tuple(_floor_mode_pads(x.shape[2:], kernel, strides, pads, dilations))
    pool, layout = _MAX_POOLS[rank]
    return em.emit(pool(x.expr, pool_size=list(kernel), strides=list(strides),
                        padding=list(pads), dilation=list(dilations), ceil_mode=False,
                        layout=layout))


def _int_bound(value: float, dtype: str) -> int:
    """A clip bound for an integer tensor: ``eval_clip`` truncates it and moves it into the
    dtype's range."""
    info = np.iinfo(dtype)
    if math.isinf(value):
        return int(info.min) if value < 0 else int(info.max)
    return min(max(math.trunc(value), int(info.min)), int(info.max))


@emitter(DATA_EMITTERS, "clip")
def emit_clip(em: Emitter, x: Operand, *, min: float | None, max: float | None) -> relax.Expr:
    if x.dtype in INT_DTYPES:
        low = None if min is None else _int_bound(min, x.dtype)
        high = None if max is None else _int_bound(max, x.dtype)
        return em.clip(x.expr, low, high)
    return em.clip(x.expr, min, max)


@emitter(DATA_EMITTERS, "where")
def emit_where(em: Emitter, cond: Operand, a: Operand, b: Operand) -> relax.Expr:
    return em.where(cond.expr, a.expr, b.expr)


@emitter(DATA_EMITTERS, "equal")
def emit_equal(em: Emitter, a: Operand, b: Operand) -> relax.Expr:
    return em.equal(a.expr, b.expr)


def _arithmetic(op):  # noqa: ANN001, ANN202 - a relax.op binary function
    def emit(em: Emitter, a: Operand, b: Operand) -> relax.Expr:
        if a.dtype in INT_DTYPES:
            return wrapping(em, op, a.expr, b.expr)
        return em.emit(op(a.expr, b.expr))
    emit.__name__ = f"emit_{op.__name__}"
    return emit


def _selection(op):  # noqa: ANN001, ANN202 - a relax.op binary function
    def emit(em: Emitter, a: Operand, b: Operand) -> relax.Expr:
        return em.emit(op(a.expr, b.expr))
    emit.__name__ = f"emit_{op.__name__}"
    return emit


# Integer add, sub and mul wrap like numpy (the lowering's mask arithmetic, 1 - mask, is a
# sub on int64); maximum and minimum select.
for _name, _op in {"add": relax.op.add, "sub": relax.op.subtract, "mul": relax.op.multiply}.items():
    emitter(DATA_EMITTERS, _name)(_arithmetic(_op))
for _name, _op in {"maximum": relax.op.maximum, "minimum": relax.op.minimum}.items():
    emitter(DATA_EMITTERS, _name)(_selection(_op))


@emitter(DATA_EMITTERS, "neg")
def emit_neg(em: Emitter, x: Operand) -> relax.Expr:
    # Integer negation wraps (-(-128) is -128 in int8), in numpy as in unsigned arithmetic:
    # 0 - x (TVM's negative is -1 * x, which it refuses to build for unsigned types).
    if x.dtype in INT_DTYPES:
        return wrapping(em, relax.op.subtract, em.const(0, x.dtype), x.expr)
    return em.emit(relax.op.negative(x.expr))


@emitter(DATA_EMITTERS, "cast")
def emit_cast(em: Emitter, x: Operand, *, to: str) -> relax.Expr:
    if to == "int4" or x.dtype == "int4":
        raise ValueError("int4 has no TVM emitter")
    return em.cast(x.expr, to)


@emitter(DATA_EMITTERS, "relu")
def emit_relu(em: Emitter, x: Operand) -> relax.Expr:
    if x.dtype in INT_DTYPES:
        return em.maximum(x.expr, 0)
    return em.emit(relax.op.nn.relu(x.expr))


@emitter(DATA_EMITTERS, "reduce_max")
def emit_reduce_max(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool
                    ) -> relax.Expr:
    return em.reduce_max(x.expr, axes, keepdims)
