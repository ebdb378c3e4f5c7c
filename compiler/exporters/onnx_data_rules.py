"""Export rules for the float-table ops that lowered programs apply to integer tensors.

Data movement (``reshape transpose slice concat gather expand``), ``equal``, ``cast`` and the
elementwise ``add sub mul maximum minimum`` map one to one. Ops whose onnxruntime kernels miss
a dtype (int16 above all: no ``Max``, ``Min``, ``Clip``, ``Where``, ``ReduceMax``, ``MaxPool``
or ``Relu``) run in the narrowest dtype that holds the values exactly and has a kernel (``onnx_emit.compute_dtype``), then cast back; selection,
clamping and (wrapping) negation commute with such a widening, so the result is the same.
Target shapes with a batch-sized dimension are computed at run time, or use ``-1`` in a
reshape (a lowbit shape has at most one such dimension, since products of two are refused).
"""

from __future__ import annotations

import math

import numpy as np

from lowbit.compiler.dims import Shape, Sym
from lowbit.compiler.exporters.onnx_emit import (Emitter, ExportRule, Operand, compute_dtype,
                                                 onnx_elem_type, registrar)
from lowbit.compiler.ops.window import output_spatial
from lowbit.compiler.types import INT_DTYPES

DATA_RULES: dict[str, ExportRule] = {}
rule = registrar(DATA_RULES)


def _widened(em: Emitter, op_type: str, x: str, dtype: str, *inputs: str,
             **attrs: object) -> str:
    """``op_type`` on ``x`` (then ``inputs``) in a dtype with a kernel, cast back to ``dtype``."""
    work = compute_dtype(op_type, dtype)
    out = em.node(op_type, [em.cast(x, work), *inputs], **attrs)
    return em.cast(out, dtype)


@rule("reshape")
def export_reshape(em: Emitter, x: Operand, *, shape: Shape) -> str:
    shape = tuple(shape)
    if tuple(x.shape) == shape:
        return em.use(x)
    syms = [d for d in shape if isinstance(d, Sym)]
    if len(syms) == 1 and 0 not in shape:  # the one batch-sized dimension is implied
        target = em.const(np.array([-1 if isinstance(d, Sym) else d for d in shape]), "int64",
                          "shape")
        return em.node("Reshape", [em.use(x), target])
    return em.node("Reshape", [em.use(x), em.shape(shape)], allowzero=1)


@rule("transpose")
def export_transpose(em: Emitter, x: Operand, *, perm: tuple[int, ...]) -> str:
    return em.node("Transpose", [em.use(x)], perm=list(perm))


@rule("slice")
def export_slice(em: Emitter, x: Operand, *, axes: tuple[int, ...], starts: tuple[int, ...],
                 ends: tuple[int, ...], steps: tuple[int, ...]) -> str:
    # ONNX Slice clamps starts and ends as Python slicing does, for either sign of step.
    def ints(values: tuple[int, ...], hint: str) -> str:
        return em.const(np.array(values, np.int64), "int64", hint)

    return em.node("Slice", [em.use(x), ints(starts, "starts"), ints(ends, "ends"),
                             ints(axes, "axes"), ints(steps, "steps")])


@rule("concat")
def export_concat(em: Emitter, *parts: Operand | None, axis: int) -> str:
    return em.node("Concat", [em.use(p) for p in parts if p is not None], axis=axis)


@rule("gather")
def export_gather(em: Emitter, data: Operand, indices: Operand, *, axis: int) -> str:
    return em.node("Gather", [em.use(data), em.use(indices)], axis=axis)


@rule("expand")
def export_expand(em: Emitter, x: Operand, *, shape: Shape) -> str:
    # Where x already has the batch-sized dimension, 1 in the target keeps it (broadcasting).
    offset = len(shape) - x.type.rank
    target = tuple(1 if isinstance(d, Sym) and i >= offset and x.shape[i - offset] == d else d
                   for i, d in enumerate(shape))
    return em.node("Expand", [em.use(x), em.shape(target)])


def _floor_mode_pads(spatial: Shape, kernel: tuple[int, ...], strides: tuple[int, ...],
                     pads: tuple[int, ...], dilations: tuple[int, ...]) -> list[int]:
    """Pads giving, without ``ceil_mode``, the windows ``ceil_mode`` gives: the end pads make
    ``floor`` reach lowbit's output size (ONNX's opset-17 shape inference and runtimes
    disagree on the last window in ceil mode; floor mode is unambiguous)."""
    rank = len(kernel)
    if not all(isinstance(d, int) for d in spatial):
        raise ValueError("ceil_mode pooling needs static spatial sizes")
    out = output_spatial(spatial, kernel, strides, pads, dilations, ceil_mode=True)
    ends = [max(0, (out[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
                - spatial[i] - pads[i]) for i in range(rank)]
    return list(pads[:rank]) + ends


@rule("max_pool")
def export_max_pool(em: Emitter, x: Operand, *, kernel: tuple[int, ...],
                    strides: tuple[int, ...], pads: tuple[int, ...],
                    dilations: tuple[int, ...], ceil_mode: bool) -> str:
    # ONNX MaxPool never lets padding win, as eval_max_pool pads with the dtype's minimum.
    if ceil_mode:
        pads = tuple(_floor_mode_pads(x.shape[2:], kernel, strides, pads, dilations))
    return _widened(em, "MaxPool", em.use(x), x.dtype, kernel_shape=list(kernel),
                    strides=list(strides), pads=list(pads), dilations=list(dilations))


def _int_bound(value: float, dtype: str) -> int:
    """A clip bound for an integer tensor: ``trunc(clip(x, lo, hi))`` (the reference clips,
    then casts) equals ``clip(x, trunc(lo), trunc(hi))``, trunc being monotone; bounds
    outside the dtype are moved to its edge, which changes nothing."""
    info = np.iinfo(dtype)
    if math.isinf(value):
        return int(info.min) if value < 0 else int(info.max)
    return min(max(math.trunc(value), int(info.min)), int(info.max))


@rule("clip")
def export_clip(em: Emitter, x: Operand, *, min: float | None, max: float | None) -> str:
    if min is None and max is None:
        return em.use(x)
    if x.dtype in INT_DTYPES:
        bounds = [None if b is None else _int_bound(b, x.dtype) for b in (min, max)]
    else:
        bounds = [None if b is None else np.array(b).astype(x.dtype) for b in (min, max)]
    work = compute_dtype("Clip", x.dtype)
    return em.cast(em.clip(em.cast(em.use(x), work), *bounds), x.dtype)


@rule("where")
def export_where(em: Emitter, cond: Operand, a: Operand, b: Operand) -> str:
    dtype = a.dtype
    work = compute_dtype("Where", dtype)
    out = em.node("Where", [em.use(cond), em.cast(em.use(a), work), em.cast(em.use(b), work)],
                  dtype=work)
    return em.cast(out, dtype)


def _binary(op_type: str) -> ExportRule:
    def export(em: Emitter, a: Operand, b: Operand) -> str:
        work = compute_dtype(op_type, a.dtype)
        out = em.node(op_type, [em.cast(em.use(a), work), em.cast(em.use(b), work)])
        return em.cast(out, a.dtype)
    export.__name__ = f"export_{op_type.lower()}"
    return export


# Integer add, sub and mul wrap in numpy and in onnxruntime alike (and so after a widening);
# max and min select. Lowered programs use them on masks (1 - attention_mask).
for _op, _op_type in {"add": "Add", "sub": "Sub", "mul": "Mul", "maximum": "Max",
                      "minimum": "Min"}.items():
    rule(_op)(_binary(_op_type))


@rule("equal")
def export_equal(em: Emitter, a: Operand, b: Operand) -> str:
    return em.node("Equal", [em.use(a), em.use(b)], dtype="bool")


@rule("neg")
def export_neg(em: Emitter, x: Operand) -> str:
    # Integer negation wraps (-(-128) is -128 in int8), in numpy and in ONNX Neg and Sub.
    if x.dtype == "uint8":
        return em.sub(0, em.use(x))
    return _widened(em, "Neg", em.use(x), x.dtype)


@rule("cast")
def export_cast(em: Emitter, x: Operand, *, to: str) -> str:
    onnx_elem_type(to)  # rejects dtypes ONNX export lacks (int4)
    return em.cast(em.use(x), to)


@rule("relu")
def export_relu(em: Emitter, x: Operand) -> str:
    if x.dtype in INT_DTYPES:  # max(x, 0); Relu itself lacks uint8, int16 and int64 kernels
        work = compute_dtype("Max", x.dtype)
        return em.cast(em.maximum(em.cast(em.use(x), work), 0), x.dtype)
    return _widened(em, "Relu", em.use(x), x.dtype)


@rule("reduce_max")
def export_reduce_max(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool
                      ) -> str:
    return _widened(em, "ReduceMax", em.use(x), x.dtype, axes=list(axes),
                    keepdims=int(keepdims))
