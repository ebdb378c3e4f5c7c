"""torch.export conversion table: one rule per ATen op, onto the lowbit op vocabulary.

Keyed by the op overload's name (``aten.convolution.default``). A rule receives a
``RuleContext`` and returns the lowbit value (or a tuple of values for multi-output ops).
Adding an ATen op is one ``@rule`` function here; an op without a row stops the capture with an
error that names the node and the op.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lowbit.compiler.dims import normalize_axis
from lowbit.compiler.errors import UnsupportedOpError
from lowbit.compiler.importers.torch_context import RuleContext

Rule = Callable[[RuleContext], "str | tuple[str, ...]"]
TORCH_RULES: dict[str, Rule] = {}


def rule(*targets: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for target in targets:
            if target in TORCH_RULES:
                raise ValueError(f"two rules for {target}")
            TORCH_RULES[target] = fn
        return fn
    return register


def _unsupported(ctx: RuleContext, why: str) -> UnsupportedOpError:
    return UnsupportedOpError(why, node=ctx.node.name, op=str(ctx.node.target))


def _pairs(values: Sequence[int], rank: int) -> tuple[int, ...]:
    values = list(values) if isinstance(values, (list, tuple)) else [values]
    return tuple(values * rank if len(values) == 1 else values)


# --- identity-like ops: the value passes through unchanged -------------------------------
@rule("aten.clone.default", "aten.alias.default", "aten.detach.default",
      "aten.contiguous.default", "aten.lift_fresh_copy.default", "aten.dropout.default")
def identity(ctx: RuleContext) -> str:
    return ctx.value(ctx.args[0])


# --- elementwise ---------------------------------------------------------------------------
def _unary(op: str) -> Rule:
    def convert(ctx: RuleContext) -> str:
        return ctx.emit(op, [ctx.value(ctx.args[0])])
    return convert


for _aten, _op in {"relu": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "silu": "silu",
                   "erf": "erf", "exp": "exp", "log": "log", "sqrt": "sqrt", "neg": "neg",
                   "abs": "abs", "reciprocal": "reciprocal"}.items():
    rule(f"aten.{_aten}.default")(_unary(_op))


@rule("aten.rsqrt.default")
def rsqrt(ctx: RuleContext) -> str:
    return ctx.emit("reciprocal", [ctx.emit("sqrt", [ctx.value(ctx.args[0])])])


@rule("aten.gelu.default")
def gelu(ctx: RuleContext) -> str:
    return ctx.emit("gelu", [ctx.value(ctx.args[0])],
                    {"approximate": ctx.arg(1, "approximate", "none")})


@rule("aten.hardtanh.default", "aten.clamp.default", "aten.clamp_min.default",
      "aten.clamp_max.default", "aten.relu6.default")
def clamp(ctx: RuleContext) -> str:
    target = str(ctx.node.target)
    if target.startswith("aten.relu6"):
        low, high = 0.0, 6.0
    elif target.startswith("aten.hardtanh"):
        low, high = ctx.arg(1, "min_val", -1.0), ctx.arg(2, "max_val", 1.0)
    elif target.startswith("aten.clamp_max"):
        low, high = None, ctx.arg(1, "max")
    else:
        low, high = ctx.arg(1, "min"), ctx.arg(2, "max")
    return ctx.emit("clip", [ctx.value(ctx.args[0])], {"min": low, "max": high})


def _binary(op: str) -> Rule:
    def convert(ctx: RuleContext) -> str:
        dtype = ctx.out_type.dtype
        a, b = ctx.value(ctx.args[0], dtype), ctx.value(ctx.args[1], dtype)
        alpha = ctx.arg(2, "alpha", 1) if op in ("add", "sub") else 1
        if alpha != 1:
            b = ctx.emit("mul", [b, ctx.value(alpha, dtype)])
        return ctx.emit(op, [a, b])
    return convert


rule("aten.add.Tensor", "aten.add.Scalar")(_binary("add"))
rule("aten.sub.Tensor", "aten.sub.Scalar")(_binary("sub"))
rule("aten.mul.Tensor", "aten.mul.Scalar")(_binary("mul"))
rule("aten.maximum.default")(_binary("maximum"))
rule("aten.minimum.default")(_binary("minimum"))
rule("aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor")(_binary("pow"))


@rule("aten.div.Tensor", "aten.div.Scalar", "aten.div.Tensor_mode")
def div(ctx: RuleContext) -> str:
    if ctx.node.kwargs.get("rounding_mode") is not None:
        raise _unsupported(ctx, "division with a rounding mode")
    dtype = ctx.out_type.dtype
    return ctx.emit("div", [ctx.value(ctx.args[0], dtype), ctx.value(ctx.args[1], dtype)])


@rule("aten.rsub.Scalar", "aten.rsub.Tensor")
def rsub(ctx: RuleContext) -> str:
    dtype = ctx.out_type.dtype
    return ctx.emit("sub", [ctx.value(ctx.args[1], dtype), ctx.value(ctx.args[0], dtype)])


@rule("aten.where.self")
def where(ctx: RuleContext) -> str:
    dtype = ctx.out_type.dtype
    return ctx.emit("where", [ctx.value(ctx.args[0]), ctx.value(ctx.args[1], dtype),
                              ctx.value(ctx.args[2], dtype)])


@rule("aten._assert_tensor_metadata.default", "aten._assert_scalar.default")
def assertion(ctx: RuleContext) -> str:
    """Export-time checks produce no value; the interpreter checks inputs itself."""
    return ""


@rule("aten._to_copy.default", "aten.to.dtype")
def to_copy(ctx: RuleContext) -> str:
    return ctx.value(ctx.args[0], ctx.out_type.dtype)


# --- contractions --------------------------------------------------------------------------
@rule("aten.linear.default")
def linear(ctx: RuleContext) -> str:
    return ctx.emit("linear", [ctx.value(ctx.args[0]), ctx.value(ctx.args[1]),
                               ctx.value(ctx.arg(2, "bias"))])


@rule("aten.matmul.default", "aten.mm.default", "aten.bmm.default")
def matmul(ctx: RuleContext) -> str:
    a, b = ctx.value(ctx.args[0]), ctx.value(ctx.args[1])
    a_type, b_type = ctx.builder.type_of(a), ctx.builder.type_of(b)
    if a_type.rank == 1:
        a = ctx.emit("reshape", [a], {"shape": (1,) + a_type.shape})
    if b_type.rank == 1:
        b = ctx.emit("reshape", [b], {"shape": b_type.shape + (1,)})
    product = ctx.emit("matmul", [a, b])
    if ctx.builder.type_of(product).shape != ctx.out_shape:
        product = ctx.emit("reshape", [product], {"shape": ctx.out_shape})
    return product


@rule("aten.addmm.default")
def addmm(ctx: RuleContext) -> str:
    product = ctx.emit("matmul", [ctx.value(ctx.args[1]), ctx.value(ctx.args[2])])
    return ctx.emit("add", [product, ctx.value(ctx.args[0])])


@rule("aten.convolution.default", "aten.conv2d.default", "aten.conv1d.default")
def convolution(ctx: RuleContext) -> str:
    if str(ctx.node.target) == "aten.convolution.default" and ctx.args[6]:
        raise _unsupported(ctx, "transposed convolution")
    rank = len(ctx.node.meta["val"].shape) - 2
    stride, padding, dilation = ctx.arg(3, "stride", 1), ctx.arg(4, "padding", 0), \
        ctx.arg(5, "dilation", 1)
    groups = ctx.args[8] if str(ctx.node.target) == "aten.convolution.default" \
        else ctx.arg(6, "groups", 1)
    if isinstance(padding, str):
        raise _unsupported(ctx, f"string padding {padding!r}")
    pads = _pairs(padding, rank)
    return ctx.emit("conv", [ctx.value(ctx.args[0]), ctx.value(ctx.args[1]),
                             ctx.value(ctx.arg(2, "bias"))],
                    {"strides": _pairs(stride, rank), "pads": pads + pads,
                     "dilations": _pairs(dilation, rank), "groups": groups})


# --- normalization, softmax, pooling --------------------------------------------------------
@rule("aten._native_batch_norm_legit_no_training.default")
def batch_norm(ctx: RuleContext) -> tuple[str, str, str]:
    x, weight, bias, mean, var = (ctx.value(a) for a in ctx.args[:5])
    channels = ctx.out_shape[1]
    dtype = ctx.out_type.dtype
    weight = weight or ctx.constant(np.ones(channels, dtype), "weight")
    bias = bias or ctx.constant(np.zeros(channels, dtype), "bias")
    out = ctx.emit("batch_norm", [x, weight, bias, mean, var], {"eps": float(ctx.args[6])})
    return out, "", ""


@rule("aten.layer_norm.default", "aten.native_layer_norm.default")
def layer_norm(ctx: RuleContext) -> str | tuple[str, str, str]:
    normalized = ctx.args[1]
    eps = ctx.arg(4, "eps", 1e-5)
    out = ctx.emit("layer_norm", [ctx.value(ctx.args[0]), ctx.value(ctx.arg(2, "weight")),
                                  ctx.value(ctx.arg(3, "bias"))],
                   {"axis": -len(normalized), "eps": float(eps)})
    return (out, "", "") if "native" in str(ctx.node.target) else out


@rule("aten.softmax.int", "aten._softmax.default")
def softmax(ctx: RuleContext) -> str:
    return ctx.emit("softmax", [ctx.value(ctx.args[0])], {"axis": ctx.args[1]})


@rule("aten.max_pool2d_with_indices.default", "aten.max_pool2d.default",
      "aten.max_pool1d.default")
def max_pool(ctx: RuleContext) -> str | tuple[str, str]:
    rank = len(ctx.out_shape) - 2
    kernel = _pairs(ctx.args[1], rank)
    stride = ctx.arg(2, "stride", None) or kernel
    padding = _pairs(ctx.arg(3, "padding", 0), rank)
    out = ctx.emit("max_pool", [ctx.value(ctx.args[0])],
                   {"kernel": kernel, "strides": _pairs(stride, rank), "pads": padding + padding,
                    "dilations": _pairs(ctx.arg(4, "dilation", 1), rank),
                    "ceil_mode": bool(ctx.arg(5, "ceil_mode", False))})
    return (out, "") if "with_indices" in str(ctx.node.target) else out


@rule("aten.avg_pool2d.default", "aten.avg_pool1d.default")
def avg_pool(ctx: RuleContext) -> str:
    rank = len(ctx.out_shape) - 2
    kernel = _pairs(ctx.args[1], rank)
    stride = ctx.arg(2, "stride", None) or kernel
    padding = _pairs(ctx.arg(3, "padding", 0), rank)
    if ctx.arg(4, "ceil_mode", False):
        raise _unsupported(ctx, "average pooling with ceil_mode")
    if ctx.arg(6, "divisor_override", None) is not None:
        raise _unsupported(ctx, "average pooling with divisor_override")
    return ctx.emit("avg_pool", [ctx.value(ctx.args[0])],
                    {"kernel": kernel, "strides": _pairs(stride, rank), "pads": padding + padding,
                     "count_include_pad": bool(ctx.arg(5, "count_include_pad", True))})


@rule("aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default")
def adaptive_avg_pool(ctx: RuleContext) -> str:
    if tuple(ctx.out_shape[2:]) != (1, 1):
        raise _unsupported(ctx, "adaptive average pooling to a size other than 1x1")
    return ctx.emit("reduce_mean", [ctx.value(ctx.args[0])], {"axes": (2, 3), "keepdims": True})


def _reduction(op: str) -> Rule:
    def convert(ctx: RuleContext) -> str:
        x = ctx.value(ctx.args[0])
        rank = ctx.builder.type_of(x).rank
        dims = ctx.arg(1, "dim", None)
        axes = tuple(range(rank)) if dims in (None, []) else tuple(
            normalize_axis(d, rank) for d in (dims if isinstance(dims, (list, tuple)) else [dims]))
        return ctx.emit(op, [x], {"axes": axes, "keepdims": bool(ctx.arg(2, "keepdim", False))})
    return convert


rule("aten.mean.dim", "aten.mean.default")(_reduction("reduce_mean"))
rule("aten.sum.dim_IntList", "aten.sum.default")(_reduction("reduce_sum"))
rule("aten.amax.default")(_reduction("reduce_max"))


# --- data movement ------------------------------------------------------------------------
def _to_output_shape(op: str) -> Rule:
    """reshape / expand to the shape torch recorded for the node (a no-op if unchanged)."""
    def convert(ctx: RuleContext) -> str:
        x = ctx.value(ctx.args[0])
        if ctx.builder.type_of(x).shape == ctx.out_shape:
            return x
        return ctx.emit(op, [x], {"shape": ctx.out_shape})
    return convert


rule("aten.view.default", "aten.reshape.default", "aten._unsafe_view.default",
     "aten.flatten.using_ints", "aten.squeeze.dim", "aten.squeeze.dims", "aten.squeeze.default",
     "aten.unsqueeze.default", "aten.unflatten.int")(_to_output_shape("reshape"))
rule("aten.expand.default")(_to_output_shape("expand"))


@rule("aten.permute.default")
def permute(ctx: RuleContext) -> str:
    x = ctx.value(ctx.args[0])
    rank = ctx.builder.type_of(x).rank
    return ctx.emit("transpose", [x], {"perm": tuple(normalize_axis(p, rank) for p in ctx.args[1])})


@rule("aten.transpose.int", "aten.t.default")
def transpose(ctx: RuleContext) -> str:
    x = ctx.value(ctx.args[0])
    rank = ctx.builder.type_of(x).rank
    a, b = (ctx.args[1], ctx.args[2]) if len(ctx.args) > 1 else (0, 1)
    perm = list(range(rank))
    a, b = normalize_axis(a, rank), normalize_axis(b, rank)
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.emit("transpose", [x], {"perm": tuple(perm)}) if rank > 1 else x


_INT64_MAX = 2**63 - 1


@rule("aten.slice.Tensor")
def slice_(ctx: RuleContext) -> str:
    x = ctx.value(ctx.args[0])
    dim = ctx.arg(1, "dim", 0)
    start, end, step = ctx.arg(2, "start", None), ctx.arg(3, "end", None), ctx.arg(4, "step", 1)
    start = 0 if start is None else start
    end = _INT64_MAX if end is None else end
    if start == 0 and end >= _INT64_MAX and step == 1:
        return x
    if not all(isinstance(v, int) for v in (start, end, step)):
        raise _unsupported(ctx, "slice bounds that depend on the batch size")
    return ctx.emit("slice", [x], {"axes": (dim,), "starts": (start,), "ends": (end,),
                                   "steps": (step,)})


@rule("aten.select.int")
def select(ctx: RuleContext) -> str:
    x = ctx.value(ctx.args[0])
    dim, index = ctx.args[1], ctx.args[2]
    end = index + 1 if index != -1 else _INT64_MAX
    picked = ctx.emit("slice", [x], {"axes": (dim,), "starts": (index,), "ends": (end,),
                                     "steps": (1,)})
    return ctx.emit("reshape", [picked], {"shape": ctx.out_shape})


@rule("aten.split_with_sizes.default", "aten.split.Tensor")
def split(ctx: RuleContext) -> tuple[str, ...]:
    x = ctx.value(ctx.args[0])
    size = ctx.builder.type_of(x).shape
    dim = normalize_axis(ctx.arg(2, "dim", 0), len(size))
    total = size[dim]
    sizes = ctx.args[1]
    if isinstance(sizes, int):
        sizes = [min(sizes, total - start) for start in range(0, total, sizes)]
    parts, start = [], 0
    for length in sizes:
        parts.append(ctx.emit("slice", [x], {"axes": (dim,), "starts": (start,),
                                             "ends": (start + length,), "steps": (1,)}))
        start += length
    return tuple(parts)


@rule("aten.cat.default")
def cat(ctx: RuleContext) -> str:
    dtype = ctx.out_type.dtype
    parts = [ctx.value(p, dtype) for p in ctx.args[0]]
    rank = ctx.builder.type_of(parts[0]).rank
    return ctx.emit("concat", parts, {"axis": normalize_axis(ctx.arg(1, "dim", 0), rank)})


@rule("aten.embedding.default")
def embedding(ctx: RuleContext) -> str:
    return ctx.emit("gather", [ctx.value(ctx.args[0]), ctx.value(ctx.args[1])], {"axis": 0})


@rule("aten.index_select.default")
def index_select(ctx: RuleContext) -> str:
    return ctx.emit("gather", [ctx.value(ctx.args[0]), ctx.value(ctx.args[2])],
                    {"axis": ctx.args[1]})


# --- attention ------------------------------------------------------------------------------
@rule("aten.scaled_dot_product_attention.default")
def attention(ctx: RuleContext) -> str:
    """softmax(q @ k^T * scale + mask) @ v, written out in lowbit ops."""
    q, k, v = (ctx.value(a) for a in ctx.args[:3])
    mask = ctx.arg(3, "attn_mask", None)
    if ctx.arg(5, "is_causal", False) or ctx.node.kwargs.get("enable_gqa", False):
        raise _unsupported(ctx, "causal or grouped-query attention")
    q_type = ctx.builder.type_of(q)
    scale = ctx.node.kwargs.get("scale") or 1.0 / float(np.sqrt(q_type.shape[-1]))
    rank = q_type.rank
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    scores = ctx.emit("matmul", [q, ctx.emit("transpose", [k], {"perm": perm})])
    scores = ctx.emit("mul", [scores, ctx.value(scale, q_type.dtype)])
    if mask is not None:
        mask_value = ctx.value(mask)
        if ctx.builder.type_of(mask_value).dtype == "bool":
            neg = ctx.value(float(np.finfo(np.float32).min), q_type.dtype)
            mask_value = ctx.emit("where", [mask_value, ctx.value(0.0, q_type.dtype), neg])
        scores = ctx.emit("add", [scores, mask_value])
    probs = ctx.emit("softmax", [scores], {"axis": -1})
    return ctx.emit("matmul", [probs, v])


