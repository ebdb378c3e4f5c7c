"""The ONNX conversion table: one converter per ONNX op type.

``ONNX_RULES[op_type](ctx)`` reads the node through its :class:`NodeContext` and emits lowbit
ops with ``ctx.emit`` (which folds them when every input is known at import time). Ops that only
compute shapes (``Shape``, ``Equal``, ``Range``...) accept known inputs only. Adding an ONNX op
means adding one entry here; the importer has no per-op branches.

Conventions: attribute tuples hold Python ints; a converter hands each ONNX output back with
``ctx.set_output``; ``out=i`` on the last ``emit`` names the lowbit value after ONNX output ``i``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lowbit.compiler.dims import Dim, Sym, broadcast, divide, normalize_axis, product
from lowbit.compiler.importers.onnx_context import (NodeContext, Value, check_known_size,
                                                    known_value, onnx_dtype)
from lowbit.compiler.importers.onnx_fold import elementwise, sym_equal, sym_less
from lowbit.compiler.ops.window import output_spatial
from lowbit.compiler.types import FLOAT_DTYPES

Converter = Callable[[NodeContext], None]

ONNX_RULES: dict[str, Converter] = {}


def rule(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for one or more ONNX op types."""
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            if op_type in ONNX_RULES:
                raise ValueError(f"ONNX op {op_type} registered twice")
            ONNX_RULES[op_type] = fn
        return fn
    return register


# -- helpers ------------------------------------------------------------------------------------

def _ints(values: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _reshape_to(ctx: NodeContext, x: Value, shape: Sequence[Dim], out: int | None = None
                ) -> Value:
    """``x`` reshaped to a resolved shape; ``x`` itself when the shape does not change."""
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return ctx.emit("reshape", [x], {"shape": shape}, out=out)


def resolve_reshape(in_shape: Sequence[Dim], target: Sequence[Any], allowzero: bool
                    ) -> tuple[Dim, ...]:
    """An ONNX Reshape target with ``0`` (copy) and ``-1`` (infer) resolved."""
    out: list[Dim] = []
    infer_at: int | None = None
    for i, d in enumerate(target):
        if isinstance(d, Sym):
            out.append(d)
        elif d == -1:
            if infer_at is not None:
                raise ValueError(f"reshape target {list(target)} has more than one -1")
            infer_at = i
            out.append(1)
        elif d == 0 and not allowzero:
            if i >= len(in_shape):
                raise ValueError(f"reshape target {list(target)} copies axis {i} of a rank "
                                 f"{len(in_shape)} input")
            out.append(in_shape[i])
        elif d < 0:
            raise ValueError(f"reshape target {list(target)} has a negative size")
        else:
            out.append(int(d))
    if infer_at is not None:
        out[infer_at] = divide(product(tuple(in_shape)), product(tuple(out)))
    return tuple(out)


def _window_pads(ctx: NodeContext, spatial: Sequence[Dim], kernel: Sequence[int],
                 strides: Sequence[int], dilations: Sequence[int]) -> tuple[int, ...]:
    """Pads in ONNX order (begins, then ends), resolving ``auto_pad``."""
    rank = len(kernel)
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        return _ints(ctx.attr("pads", [0] * 2 * rank))
    if auto_pad == "VALID":
        return (0,) * 2 * rank
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise ctx.fail(f"auto_pad {auto_pad!r} is not supported", unsupported=True)
    begins, ends = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
        if not isinstance(size, int):
            raise ctx.fail(f"auto_pad {auto_pad} needs static spatial sizes")
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        small = total // 2
        begin = small if auto_pad == "SAME_UPPER" else total - small
        begins.append(begin)
        ends.append(total - begin)
    return tuple(begins + ends)


def _window(ctx: NodeContext, x: Value, kernel: Sequence[int]
            ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    rank = len(kernel)
    strides = _ints(ctx.attr("strides", [1] * rank))
    dilations = _ints(ctx.attr("dilations", [1] * rank))
    pads = _window_pads(ctx, x.shape[2:], kernel, strides, dilations)
    return strides, pads, dilations


def _derived(ctx: NodeContext, source: Value, tag: str, make: Callable[[np.ndarray], np.ndarray],
             name: str | None = None) -> Value:
    """A known value computed from known ``source`` (e.g. a transposed weight), made once per
    ``tag`` (which must identify ``make``); its constant is called ``<source>.<name or tag>``."""
    key = (id(source), tag)
    cache = ctx.state.derived
    if key not in cache:
        assert source.array is not None
        cache[key] = (source, known_value(np.ascontiguousarray(make(source.array)),
                                          f"{source.hint}.{name or tag}", source.dtype))
    return cache[key][1]


# -- elementwise ------------------------------------------------------------------------------

def _unary(op: str) -> Converter:
    def convert(ctx: NodeContext) -> None:
        ctx.set_output(0, ctx.emit(op, [ctx.required(0)], out=0))
    return convert


for _onnx_op, _op in {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf",
                      "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Neg": "neg", "Abs": "abs",
                      "Reciprocal": "reciprocal"}.items():
    rule(_onnx_op)(_unary(_op))


def _binary(op: str) -> Converter:
    def convert(ctx: NodeContext) -> None:
        ctx.set_output(0, ctx.emit(op, [ctx.required(0), ctx.required(1)], out=0))
    return convert


for _onnx_op, _op in {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}.items():
    rule(_onnx_op)(_binary(_op))


@rule("Pow")
def convert_pow(ctx: NodeContext) -> None:
    base, exponent = ctx.required(0), ctx.required(1)
    if exponent.dtype != base.dtype:  # ONNX allows e.g. a float base with an int exponent
        exponent = ctx.emit("cast", [exponent], {"to": base.dtype})
    ctx.set_output(0, ctx.emit("pow", [base, exponent], out=0))


def _variadic(op: str, mean: bool = False) -> Converter:
    """Max/Min/Sum/Mean over any number of inputs: a chain of binary ops."""
    def convert(ctx: NodeContext) -> None:
        values = [v for v in ctx.inputs if v is not None]
        if not values:
            raise ctx.fail("needs at least one input")
        result = values[0]
        for i, value in enumerate(values[1:], start=2):
            final = i == len(values) and not mean
            result = ctx.emit(op, [result, value], out=0 if final else None)
        if mean and len(values) > 1:
            count = ctx.const(len(values), result.dtype, "count")
            result = ctx.emit("div", [result, count], out=0)
        ctx.set_output(0, result)
    return convert


rule("Max")(_variadic("maximum"))
rule("Min")(_variadic("minimum"))
rule("Sum")(_variadic("add"))
rule("Mean")(_variadic("add", mean=True))


@rule("Where")
def convert_where(ctx: NodeContext) -> None:
    cond, a, b = ctx.required(0), ctx.required(1), ctx.required(2)
    ctx.set_output(0, ctx.emit("where", [cond, a, b], out=0))


@rule("Cast", "CastLike")
def convert_cast(ctx: NodeContext) -> None:
    x = ctx.required(0)
    to = ctx.required(1).dtype if ctx.op_type == "CastLike" else onnx_dtype(ctx.attr("to"))
    ctx.set_output(0, x if to == x.dtype else ctx.emit("cast", [x], {"to": to}, out=0))


@rule("Clip")
def convert_clip(ctx: NodeContext) -> None:
    x = ctx.required(0)
    bounds = {}
    for index, key in ((1, "min"), (2, "max")):
        array = ctx.known(index, f"Clip {key}")
        bounds[key] = None if array is None else float(np.asarray(array).reshape(-1)[0])
    if bounds["min"] is None and bounds["max"] is None:
        ctx.set_output(0, x)
        return
    ctx.set_output(0, ctx.emit("clip", [x], bounds, out=0))


@rule("Gelu")
def convert_gelu(ctx: NodeContext) -> None:
    approximate = ctx.attr("approximate", "none")
    ctx.set_output(0, ctx.emit("gelu", [ctx.required(0)], {"approximate": approximate}, out=0))


def _hard_sigmoid(ctx: NodeContext, x: Value, alpha: float, beta: float,
                  out: int | None) -> Value:
    scaled = ctx.emit("mul", [x, ctx.const(alpha, x.dtype, "alpha")])
    shifted = ctx.emit("add", [scaled, ctx.const(beta, x.dtype, "beta")])
    return ctx.emit("clip", [shifted], {"min": 0.0, "max": 1.0}, out=out)


@rule("HardSigmoid")
def convert_hard_sigmoid(ctx: NodeContext) -> None:
    alpha, beta = float(ctx.attr("alpha", 0.2)), float(ctx.attr("beta", 0.5))
    ctx.set_output(0, _hard_sigmoid(ctx, ctx.required(0), alpha, beta, out=0))


@rule("HardSwish")
def convert_hard_swish(ctx: NodeContext) -> None:
    x = ctx.required(0)
    gate = _hard_sigmoid(ctx, x, 1.0 / 6.0, 0.5, out=None)
    ctx.set_output(0, ctx.emit("mul", [x, gate], out=0))


@rule("LeakyRelu")
def convert_leaky_relu(ctx: NodeContext) -> None:
    x, alpha = ctx.required(0), float(ctx.attr("alpha", 0.01))
    if not 0.0 <= alpha <= 1.0:
        raise ctx.fail(f"alpha {alpha} outside [0, 1] is not supported", unsupported=True)
    scaled = ctx.emit("mul", [x, ctx.const(alpha, x.dtype, "alpha")])
    ctx.set_output(0, ctx.emit("maximum", [x, scaled], out=0))


# -- normalization and softmax ----------------------------------------------------------------

@rule("Softmax", "LogSoftmax")
def convert_softmax(ctx: NodeContext) -> None:
    log = ctx.op_type == "LogSoftmax"
    y = ctx.emit("softmax", [ctx.required(0)], {"axis": int(ctx.attr("axis", -1))},
                 out=None if log else 0)
    ctx.set_output(0, ctx.emit("log", [y], out=0) if log else y)


@rule("BatchNormalization")
def convert_batch_norm(ctx: NodeContext) -> None:
    if ctx.attr("training_mode", 0):
        raise ctx.fail("training_mode=1 is not supported (inference only)", unsupported=True)
    ctx.reject_used_outputs(1, "running statistics")
    inputs = [ctx.required(i) for i in range(5)]
    eps = float(ctx.attr("epsilon", 1e-5))
    ctx.set_output(0, ctx.emit("batch_norm", inputs, {"eps": eps}, out=0))


@rule("LayerNormalization")
def convert_layer_norm(ctx: NodeContext) -> None:
    x, scale, bias = ctx.required(0), ctx.required(1), ctx.input(2)
    ctx.reject_used_outputs(1, "Mean/InvStdDev")
    axis = int(ctx.attr("axis", -1))
    normalized = x.shape[normalize_axis(axis, x.rank):]
    if any(isinstance(d, Sym) for d in normalized):
        raise ctx.fail(f"normalizing over the batch axis (axis {axis}) is not supported",
                       unsupported=True)

    def full(value: Value | None) -> Value | None:
        """Scale and bias may broadcast in ONNX; lowbit wants the normalized shape."""
        if value is None or value.shape == normalized or not value.known:
            return value
        return _derived(ctx, value, "full", lambda a: np.broadcast_to(a, normalized))

    attrs = {"axis": axis, "eps": float(ctx.attr("epsilon", 1e-5))}
    ctx.set_output(0, ctx.emit("layer_norm", [x, full(scale), full(bias)], attrs, out=0))


# -- contractions -------------------------------------------------------------------------------

@rule("Conv")
def convert_conv(ctx: NodeContext) -> None:
    x, w, b = ctx.required(0), ctx.required(1), ctx.input(2)
    kernel = _ints(ctx.attr("kernel_shape", w.shape[2:]))
    if kernel != tuple(w.shape[2:]):
        raise ctx.fail(f"kernel_shape {kernel} does not match weight shape {w.shape}")
    strides, pads, dilations = _window(ctx, x, kernel)
    attrs = {"strides": strides, "pads": pads, "dilations": dilations,
             "groups": int(ctx.attr("group", 1))}
    ctx.set_output(0, ctx.emit("conv", [x, w, b], attrs, out=0))


@rule("MatMul")
def convert_matmul(ctx: NodeContext) -> None:
    """``x @ W`` with a constant 2-D ``W`` becomes ``linear`` (weight ``W.T``); vectors are
    expanded to matrices and squeezed back, as ONNX/numpy do."""
    a, b = ctx.required(0), ctx.required(1)
    if a.rank == 0 or b.rank == 0:
        raise ctx.fail("MatMul operands must have rank >= 1")
    squeeze_rows, squeeze_cols = a.rank == 1, b.rank == 1
    final = None if squeeze_rows or squeeze_cols else 0
    lhs = _reshape_to(ctx, a, (1,) + a.shape) if squeeze_rows else a
    if b.known and b.rank == 2 and not a.known and b.dtype in FLOAT_DTYPES:
        weight = _derived(ctx, b, "T", lambda w: w.T)
        y = ctx.emit("linear", [lhs, weight], out=final)
    else:
        rhs = _reshape_to(ctx, b, b.shape + (1,)) if squeeze_cols else b
        y = ctx.emit("matmul", [lhs, rhs], out=final)
    if squeeze_rows or squeeze_cols:
        shape = list(y.shape)
        if squeeze_cols:
            shape.pop(-1)
        if squeeze_rows:
            shape.pop(-1 if squeeze_cols else -2)
        y = _reshape_to(ctx, y, shape, out=0)
    ctx.set_output(0, y)


@rule("Gemm")
def convert_gemm(ctx: NodeContext) -> None:
    """``alpha * A' @ B' + beta * C``; a constant ``B`` (and row-vector ``C``) gives ``linear``."""
    a, b, c = ctx.required(0), ctx.required(1), ctx.input(2)
    alpha, beta = float(ctx.attr("alpha", 1.0)), float(ctx.attr("beta", 1.0))
    trans_b = bool(ctx.attr("transB", 0))
    if ctx.attr("transA", 0):
        a = ctx.emit("transpose", [a], {"perm": (1, 0)})
    out_features = b.shape[0] if trans_b else b.shape[1]
    if b.known and not a.known and b.dtype in FLOAT_DTYPES:
        weight = b if trans_b and alpha == 1.0 else _derived(
            ctx, b, f"weight(transB={trans_b}, alpha={alpha!r})",
            lambda w: (w if trans_b else w.T) * np.asarray(alpha, dtype=w.dtype), "weight")
        bias: Value | None = None
        if c is not None and c.known and (c.rank < 2 or c.shape[0] == 1):
            bias = c if beta == 1.0 and c.shape == (out_features,) else _derived(
                ctx, c, f"bias(beta={beta!r}, n={out_features})",
                lambda v: np.broadcast_to(v.reshape(v.shape[-1:]) * np.asarray(beta, v.dtype),
                                          (out_features,)), "bias")
            c = None
        y = ctx.emit("linear", [a, weight, bias], out=0 if c is None else None)
    else:
        if trans_b:
            b = ctx.emit("transpose", [b], {"perm": (1, 0)})
        y = ctx.emit("matmul", [a, b], out=0 if c is None and alpha == 1.0 else None)
        if alpha != 1.0:
            y = ctx.emit("mul", [y, ctx.const(alpha, y.dtype, "alpha")],
                         out=0 if c is None else None)
    if c is not None:
        if beta != 1.0:
            c = ctx.emit("mul", [c, ctx.const(beta, c.dtype, "beta")])
        y = ctx.emit("add", [y, c], out=0)
    ctx.set_output(0, y)


# -- pooling and reductions ----------------------------------------------------------------

@rule("MaxPool")
def convert_max_pool(ctx: NodeContext) -> None:
    x = ctx.required(0)
    ctx.reject_used_outputs(1, "Indices")
    kernel = _ints(ctx.attr("kernel_shape"))
    strides, pads, dilations = _window(ctx, x, kernel)
    attrs = {"kernel": kernel, "strides": strides, "pads": pads, "dilations": dilations,
             "ceil_mode": bool(ctx.attr("ceil_mode", 0))}
    ctx.set_output(0, ctx.emit("max_pool", [x], attrs, out=0))


@rule("AveragePool")
def convert_avg_pool(ctx: NodeContext) -> None:
    x = ctx.required(0)
    kernel = _ints(ctx.attr("kernel_shape"))
    strides, pads, dilations = _window(ctx, x, kernel)
    if any(d != 1 for d in dilations):
        raise ctx.fail(f"dilations {dilations} are not supported", unsupported=True)
    if ctx.attr("ceil_mode", 0):
        spatial = x.shape[2:]
        if not all(isinstance(s, int) for s in spatial) or (
                output_spatial(spatial, kernel, strides, pads, dilations, True)
                != output_spatial(spatial, kernel, strides, pads, dilations, False)):
            raise ctx.fail("ceil_mode=1 with a partial last window is not supported",
                           unsupported=True)
    attrs = {"kernel": kernel, "strides": strides, "pads": pads,
             "count_include_pad": bool(ctx.attr("count_include_pad", 0))}
    ctx.set_output(0, ctx.emit("avg_pool", [x], attrs, out=0))


def _global_pool(op: str) -> Converter:
    def convert(ctx: NodeContext) -> None:
        x = ctx.required(0)
        attrs = {"axes": tuple(range(2, x.rank)), "keepdims": True}
        ctx.set_output(0, ctx.emit(op, [x], attrs, out=0))
    return convert


rule("GlobalAveragePool")(_global_pool("reduce_mean"))
rule("GlobalMaxPool")(_global_pool("reduce_max"))


def _reduce_axes(ctx: NodeContext, x: Value, axes_input_since: int) -> tuple[int, ...] | None:
    """Normalized reduction axes; None for a no-op (empty axes, noop_with_empty_axes=1)."""
    if ctx.opset >= axes_input_since:
        axes = ctx.ints(1, "axes")
    else:
        axes = ctx.attr("axes")
    if not axes:
        if ctx.attr("noop_with_empty_axes", 0):
            return None
        return tuple(range(x.rank))
    if any(isinstance(a, Sym) for a in axes):
        raise ctx.fail("axes must be integers")
    return tuple(sorted(normalize_axis(int(a), x.rank) for a in axes))


def _reduce(op: str, axes_input_since: int, negate: bool = False) -> Converter:
    def convert(ctx: NodeContext) -> None:
        x = ctx.required(0)
        axes = _reduce_axes(ctx, x, axes_input_since)
        if axes is None:
            ctx.set_output(0, x)
            return
        attrs = {"axes": axes, "keepdims": bool(ctx.attr("keepdims", 1))}
        if negate:  # min(x) = -max(-x)
            y = ctx.emit(op, [ctx.emit("neg", [x])], attrs)
            ctx.set_output(0, ctx.emit("neg", [y], out=0))
        else:
            ctx.set_output(0, ctx.emit(op, [x], attrs, out=0))
    return convert


rule("ReduceMean")(_reduce("reduce_mean", 18))
rule("ReduceSum")(_reduce("reduce_sum", 13))
rule("ReduceMax")(_reduce("reduce_max", 18))
rule("ReduceMin")(_reduce("reduce_max", 18, negate=True))


# -- data movement ------------------------------------------------------------------------------

@rule("Reshape")
def convert_reshape(ctx: NodeContext) -> None:
    x = ctx.required(0)
    target = ctx.ints(1, "Reshape target shape")
    assert target is not None
    shape = resolve_reshape(x.shape, target, bool(ctx.attr("allowzero", 0)))
    ctx.set_output(0, _reshape_to(ctx, x, shape, out=0))


@rule("Flatten")
def convert_flatten(ctx: NodeContext) -> None:
    x = ctx.required(0)
    axis = int(ctx.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    if not 0 <= axis <= x.rank:
        raise ctx.fail(f"axis {ctx.attr('axis')} out of range for rank {x.rank}")
    shape = (product(x.shape[:axis]), product(x.shape[axis:]))
    ctx.set_output(0, _reshape_to(ctx, x, shape, out=0))


@rule("Squeeze")
def convert_squeeze(ctx: NodeContext) -> None:
    x = ctx.required(0)
    axes = ctx.ints(1, "Squeeze axes")
    if axes is None:
        drop = {i for i, d in enumerate(x.shape) if d == 1}
    else:
        drop = {normalize_axis(int(a), x.rank) for a in axes}
        bad = [i for i in drop if x.shape[i] != 1]
        if bad:
            raise ctx.fail(f"cannot squeeze axes {bad} of shape {list(x.shape)}: size is not 1")
    shape = tuple(d for i, d in enumerate(x.shape) if i not in drop)
    ctx.set_output(0, _reshape_to(ctx, x, shape, out=0))


@rule("Unsqueeze")
def convert_unsqueeze(ctx: NodeContext) -> None:
    x = ctx.required(0)
    axes = ctx.ints(1, "Unsqueeze axes")
    assert axes is not None
    rank = x.rank + len(axes)
    insert = {normalize_axis(int(a), rank) for a in axes}
    if len(insert) != len(axes):
        raise ctx.fail(f"repeated axes {axes}")
    rest = iter(x.shape)
    shape = tuple(1 if i in insert else next(rest) for i in range(rank))
    ctx.set_output(0, _reshape_to(ctx, x, shape, out=0))


@rule("Transpose")
def convert_transpose(ctx: NodeContext) -> None:
    x = ctx.required(0)
    perm = _ints(ctx.attr("perm", range(x.rank - 1, -1, -1)))
    if perm == tuple(range(x.rank)):
        ctx.set_output(0, x)
        return
    ctx.set_output(0, ctx.emit("transpose", [x], {"perm": perm}, out=0))


def _clamp(index: Any, dim: Dim) -> int:
    if isinstance(index, Sym):
        if index != dim:
            raise ValueError(f"slice bound {index} on an axis of size {dim}")
        return 2**63 - 1
    index = int(index)
    if isinstance(dim, int):
        return max(-dim - 1, min(index, dim))
    return index


@rule("Slice")
def convert_slice(ctx: NodeContext) -> None:
    x = ctx.required(0)
    starts, ends = ctx.ints(1, "Slice starts"), ctx.ints(2, "Slice ends")
    assert starts is not None and ends is not None
    axes = ctx.ints(3, "Slice axes") or list(range(len(starts)))
    steps = ctx.ints(4, "Slice steps") or [1] * len(starts)
    axes = [normalize_axis(int(a), x.rank) for a in axes]
    attrs = {"axes": tuple(axes),
             "starts": tuple(_clamp(s, x.shape[a]) for s, a in zip(starts, axes, strict=True)),
             "ends": tuple(_clamp(e, x.shape[a]) for e, a in zip(ends, axes, strict=True)),
             "steps": _ints(steps)}
    ctx.set_output(0, ctx.emit("slice", [x], attrs, out=0))


@rule("Split")
def convert_split(ctx: NodeContext) -> None:
    x = ctx.required(0)
    axis = normalize_axis(int(ctx.attr("axis", 0)), x.rank)
    dim = x.shape[axis]
    sizes = ctx.ints(1, "Split sizes")
    if sizes is None:
        if not isinstance(dim, int):
            raise ctx.fail("cannot split the batch axis")
        parts = int(ctx.attr("num_outputs", len(ctx.node.output)))
        chunk = -(-dim // parts)
        sizes = [max(0, min(chunk, dim - i * chunk)) for i in range(parts)]
    if len(sizes) != len(ctx.node.output):
        raise ctx.fail(f"{len(sizes)} split sizes for {len(ctx.node.output)} outputs")
    start = 0
    for index, size in enumerate(sizes):
        end = start + int(size)
        if ctx.output_used(index):
            attrs = {"axes": (axis,), "starts": (start,), "ends": (end,), "steps": (1,)}
            ctx.set_output(index, ctx.emit("slice", [x], attrs, out=index))
        start = end


@rule("Concat")
def convert_concat(ctx: NodeContext) -> None:
    parts = [v for v in ctx.inputs if v is not None]
    if len(parts) == 1:
        ctx.set_output(0, parts[0])
        return
    ctx.set_output(0, ctx.emit("concat", parts, {"axis": int(ctx.attr("axis"))}, out=0))


@rule("Gather")
def convert_gather(ctx: NodeContext) -> None:
    data, indices = ctx.required(0), ctx.required(1)
    attrs = {"axis": int(ctx.attr("axis", 0))}
    ctx.set_output(0, ctx.emit("gather", [data, indices], attrs, out=0))


@rule("Expand")
def convert_expand(ctx: NodeContext) -> None:
    x = ctx.required(0)
    target = ctx.ints(1, "Expand shape")
    assert target is not None
    shape = broadcast(x.shape, tuple(target))  # ONNX Expand broadcasts both ways
    if shape == x.shape:
        ctx.set_output(0, x)
        return
    ctx.set_output(0, ctx.emit("expand", [x], {"shape": shape}, out=0))


@rule("Tile")
def convert_tile(ctx: NodeContext) -> None:
    x = ctx.required(0)
    repeats = ctx.ints(1, "Tile repeats")
    assert repeats is not None
    if len(repeats) != x.rank or any(isinstance(r, Sym) or r < 1 for r in repeats):
        raise ctx.fail(f"repeats {repeats} must be {x.rank} positive integers")
    axes = [axis for axis, r in enumerate(repeats) if r > 1]
    y = x
    for axis in axes:
        y = ctx.emit("concat", [y] * repeats[axis], {"axis": axis},
                     out=0 if axis == axes[-1] else None)
    ctx.set_output(0, y)


@rule("Identity")
def convert_identity(ctx: NodeContext) -> None:
    ctx.set_output(0, ctx.required(0))


@rule("Dropout")
def convert_dropout(ctx: NodeContext) -> None:
    training = ctx.known(2, "Dropout training_mode")
    if training is not None and bool(np.asarray(training).reshape(-1)[0]):
        raise ctx.fail("training_mode=true is not supported (inference only)", unsupported=True)
    ctx.reject_used_outputs(1, "mask")
    ctx.set_output(0, ctx.required(0))


# -- known values: constants and shape computations ---------------------------------------

@rule("Constant")
def convert_constant(ctx: NodeContext) -> None:
    attrs = ctx.attrs
    if "value" in attrs:
        dtype = onnx_dtype(attrs["value"].data_type)  # first: to_array fails on unknown types
        array = numpy_helper.to_array(attrs["value"])
    elif "value_float" in attrs or "value_floats" in attrs:
        array = np.asarray(attrs.get("value_float", attrs.get("value_floats")), np.float32)
        dtype = "float32"
    elif "value_int" in attrs or "value_ints" in attrs:
        array = np.asarray(attrs.get("value_int", attrs.get("value_ints")), np.int64)
        dtype = "int64"
    else:
        raise ctx.fail(f"Constant with attribute(s) {sorted(attrs)} is not supported",
                       unsupported=True)
    ctx.set_output(0, known_value(array, ctx.hint(0, "const"), dtype))


def _dims_array(dims: Sequence[Dim]) -> np.ndarray:
    if any(isinstance(d, Sym) for d in dims):
        return np.array(list(dims), dtype=object)
    return np.array(list(dims), dtype=np.int64)


@rule("Shape")
def convert_shape(ctx: NodeContext) -> None:
    x = ctx.required(0)
    start, end = ctx.attr("start", 0), ctx.attr("end")
    dims = x.shape[start:end]
    ctx.set_output(0, known_value(_dims_array(dims), ctx.hint(0, "shape"), "int64"))


@rule("Size")
def convert_size(ctx: NodeContext) -> None:
    total = product(ctx.required(0).shape)
    array = np.array(total, dtype=object) if isinstance(total, Sym) else np.array(total, np.int64)
    ctx.set_output(0, known_value(array, ctx.hint(0, "size"), "int64"))


@rule("ConstantOfShape")
def convert_constant_of_shape(ctx: NodeContext) -> None:
    dims = ctx.ints(0, "ConstantOfShape shape")
    assert dims is not None
    tensor = ctx.attr("value")
    dtype = onnx_dtype(tensor.data_type) if tensor is not None else "float32"  # before to_array
    fill = (numpy_helper.to_array(tensor).reshape(-1) if tensor is not None
            else np.zeros(1, np.float32))
    if not any(isinstance(d, Sym) for d in dims):
        check_known_size(dims, "ConstantOfShape")
        ctx.set_output(0, known_value(np.full(dims, fill[0], fill.dtype), ctx.hint(0, "fill"),
                                      dtype))
        return
    scalar = ctx.const(fill[0], dtype, "fill")
    ctx.set_output(0, ctx.emit("expand", [scalar], {"shape": tuple(dims)}, out=0))


@rule("Range")
def convert_range(ctx: NodeContext) -> None:
    start, limit, delta = (ctx.known(i, name) for i, name in
                           enumerate(("Range start", "Range limit", "Range delta")))
    values = [np.asarray(v).reshape(()) for v in (start, limit, delta)]  # type: ignore[arg-type]
    if any(v.dtype == object for v in values):
        raise ctx.fail("Range bounds that depend on the batch size are not supported",
                       unsupported=True)
    dtype = ctx.required(0).dtype
    if values[2].item() == 0:
        raise ctx.fail("Range delta is 0")
    count = math.ceil((values[1].item() - values[0].item()) / values[2].item())
    check_known_size((max(count, 0),), "Range")
    array = np.arange(values[0].item(), values[1].item(), values[2].item()).astype(dtype)
    ctx.set_output(0, known_value(array, ctx.hint(0, "range"), dtype))


def _compare(fn: Callable[[Any, Any], bool]) -> Converter:
    """Comparisons: evaluated at import time only (lowbit has no boolean ops)."""
    def convert(ctx: NodeContext) -> None:
        a, b = ctx.known(0, "left operand"), ctx.known(1, "right operand")
        result = elementwise(fn, [a, b]).astype(bool)  # type: ignore[list-item]
        ctx.set_output(0, known_value(result, ctx.hint(0, "cmp"), "bool"))
    return convert


rule("Equal")(_compare(sym_equal))
rule("Less")(_compare(sym_less))
rule("Greater")(_compare(lambda a, b: sym_less(b, a)))
rule("LessOrEqual")(_compare(lambda a, b: not sym_less(b, a)))
rule("GreaterOrEqual")(_compare(lambda a, b: not sym_less(a, b)))


def _logical(fn: Callable[..., np.ndarray]) -> Converter:
    def convert(ctx: NodeContext) -> None:
        arrays = [ctx.known(i, f"operand {i}") for i in range(len(ctx.inputs))]
        result = fn(*arrays)
        ctx.set_output(0, known_value(np.asarray(result, bool), ctx.hint(0, "logic"), "bool"))
    return convert


rule("Not")(_logical(np.logical_not))
rule("And")(_logical(np.logical_and))
rule("Or")(_logical(np.logical_or))
rule("Xor")(_logical(np.logical_xor))


# -- any other op, on known inputs ----------------------------------------------------------

_NONDETERMINISTIC = frozenset({"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike",
                               "RandomUniform", "RandomUniformLike"})


def foldable_without_rule(ctx: NodeContext) -> bool:
    """Whether an op without a rule can still be evaluated now: every input known, no ``Sym``."""
    present = [v for v in ctx.inputs if v is not None]
    return (bool(present) and ctx.op_type not in _NONDETERMINISTIC
            and all(v.array is not None and v.array.dtype != object for v in present))


def fold_with_onnxruntime(ctx: NodeContext) -> None:
    """Evaluate a rule-less op on known inputs with onnxruntime (buffers gathered with
    GatherElements, masks built with Trilu...): the results are known, nothing reaches the
    graph. (onnx.reference is not used: its GatherElements fails past 64 rows.)"""
    import onnxruntime

    feeds = {name: value.array for name, value in zip(ctx.node.input, ctx.inputs)
             if value is not None}
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype),
                                            a.shape) for name, a in feeds.items()]
    produced = [name for name in ctx.node.output if name]
    graph = helper.make_graph([ctx.node], "fold", inputs,
                              [helper.make_value_info(name, onnx.TypeProto()) for name in produced])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ctx.opset)],
                              ir_version=ctx.state.ir_version)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = onnxruntime.InferenceSession(model.SerializeToString(), options,
                                               providers=["CPUExecutionProvider"])
        results = dict(zip(produced, session.run(produced, feeds)))
    except Exception as err:  # noqa: BLE001  (onnxruntime raises its own exception types)
        raise ctx.fail(f"ONNX op {ctx.op_type} is not supported, and evaluating it at import "
                       f"time failed: {type(err).__name__}: {_one_line(err)}",
                       unsupported=True) from None
    for index, name in enumerate(ctx.node.output):
        if name:
            ctx.set_output(index, known_value(np.asarray(results[name]), ctx.hint(index, "fold")))


def _one_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


__all__ = ["ONNX_RULES", "Converter", "fold_with_onnxruntime", "foldable_without_rule",
           "resolve_reshape", "rule"]
