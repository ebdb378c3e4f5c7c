"""Lowering table: one rule per float op, emitting the integer ops that implement it.

A rule reads its inputs' integer codes and quantization parameters from the context, emits
integer nodes carrying the float node's origin, and binds the float output to the new codes.
Real arithmetic lives in small named helpers; formulas follow HAWQ-V3 (conv/linear/add
requantization) and I-BERT (GELU, softmax, LayerNorm).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lowbit.compiler.errors import LowbitError, UnsupportedOpError
from lowbit.compiler.ir import Node
from lowbit.compiler.ops import OP_TABLE
from lowbit.compiler.ops.integer import INT_RANGES, gelu_plan
from lowbit.passes.quantize.lowering import (PRODUCT_CONSUMERS, ConsumerCodes, LoweringContext,
                                             dyadic_or_zero)
from lowbit.passes.quantize.qparams import (QParams, activation_qparams,
                                            quantize_weight_per_channel, quantize_tensor)
from lowbit.passes.scale_folding import MIGRATED_KEY
from lowbit.passes.smooth_quant import smoothing_scales

Rule = Callable[[LoweringContext, Node], None]
LOWERING_RULES: dict[str, Rule] = {}
ADD_MULT_BITS = 30
SOFTMAX_WIDE_BITS = 16
"""Probability bits of ``int_softmax`` before rounding to narrower product-input codes."""


def rule(*ops: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for op in ops:
            LOWERING_RULES[op] = fn
        return fn
    return register


def _clamp_bounds(out: QParams, activation: Node | None) -> tuple[int, int]:
    """ReLU / ReLU6 / clip after a product fuse into the requantization's clamp."""
    if activation is None:
        return out.qmin, out.qmax
    if activation.op == "relu":
        return max(out.qmin, out.zero_point), out.qmax
    low, high = activation.attrs.get("min"), activation.attrs.get("max")
    qmin = out.qmin if low is None else out.code_of(low, "ceil")
    qmax = out.qmax if high is None else out.code_of(high, "floor")
    return qmin, qmax


def _fusable_activation(ctx: LoweringContext, node: Node) -> Node | None:
    user = ctx.sole_consumer(node.outputs[0])
    return user if user is not None and user.op in ("relu", "clip") else None


def _finish_product(ctx: LoweringContext, node: Node, acc: str, acc_scale: np.ndarray | float,
                    channel_shape: tuple[int, ...] | None) -> None:
    activation = _fusable_activation(ctx, node)
    target = activation.outputs[0] if activation else node.outputs[0]
    out = ctx.qparams_for(target)
    qmin, qmax = _clamp_bounds(out, activation)
    origin = node.origin | (activation.origin if activation else frozenset())
    ratio = np.asarray(acc_scale, np.float64) / out.scale
    codes = ctx.requantize(acc, ratio, out, origin, f"{node.name}.rq", qmin, qmax,
                           channel_shape if np.ndim(acc_scale) else None)
    ctx.bind(target, codes, out)
    if activation is not None:
        ctx.done.add(activation.name)
        ctx.stats.setdefault("fused_activations", []).append(activation.name)


def _quantized_bias(ctx: LoweringContext, node: Node, acc_scale: np.ndarray) -> str:
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    if not bias_name:
        return ""
    bias = np.rint(ctx.constant(bias_name).astype(np.float64) / acc_scale)
    if np.abs(bias).max(initial=0) >= 2**31:
        raise LowbitError("bias does not fit int32 at scale s_in * s_w")
    return ctx.add_constant(bias.astype(np.int32), f"{node.name}.bias_q")


def _weight_codes(ctx: LoweringContext, node: Node, column_scale: np.ndarray | None = None
                  ) -> tuple[str, np.ndarray]:
    weight = ctx.constant(node.inputs[1])
    if weight is None:
        raise UnsupportedOpError("weights computed at run time are not supported")
    if column_scale is not None:
        weight = weight.astype(np.float64) * column_scale
    codes, scales = quantize_weight_per_channel(weight, ctx.weight_bits(node))
    return ctx.add_constant(codes, f"{node.name}.weight_q"), scales


@rule("conv", "linear")
def lower_conv_or_linear(ctx: LoweringContext, node: Node) -> None:
    from lowbit.passes.quantize.block_lowering import lower_block_linear  # imports this module
    if node.op == "linear" and ctx.options.block_size and lower_block_linear(ctx, node):
        return
    special = ctx.per_consumer.get((node.inputs[0], node.name))
    if special is not None:
        x, xq = special.codes, special.qparams
        weight, w_scales = _weight_codes(ctx, node, special.column_scale)
    else:
        x, xq = ctx.value(node.inputs[0])
        weight, w_scales = _weight_codes(ctx, node)
    acc_scale = xq.scale * w_scales
    bias = _quantized_bias(ctx, node, acc_scale)
    if node.op == "conv":
        acc = ctx.emit("int_conv", [x, weight, bias], node.origin,
                       {"x_zero_point": xq.zero_point, **node.attrs}, f"{node.name}.acc")
        rank = ctx.source.types[node.outputs[0]].rank
        channels = (-1,) + (1,) * (rank - 2)
    else:
        acc = ctx.emit("int_linear", [x, weight, bias], node.origin,
                       {"x_zero_point": xq.zero_point}, f"{node.name}.acc")
        channels = (-1,)
    _finish_product(ctx, node, acc, acc_scale, channels)


@rule("matmul")
def lower_matmul(ctx: LoweringContext, node: Node) -> None:
    from lowbit.passes.quantize.block_lowering import lower_block_linear  # imports this module
    if ctx.options.block_size and ctx.is_constant(node.inputs[1]) and lower_block_linear(ctx,
                                                                                         node):
        return
    (a, aq), (b, bq) = ctx.value(node.inputs[0]), ctx.value(node.inputs[1])
    acc = ctx.emit("int_matmul", [a, b], node.origin,
                   {"a_zero_point": aq.zero_point, "b_zero_point": bq.zero_point},
                   f"{node.name}.acc")
    _finish_product(ctx, node, acc, aq.scale * bq.scale, None)


def add_multipliers(a_ratio: float, b_ratio: float) -> tuple[int, int, int]:
    """Integer multipliers with a common shift: ``ratio ~ mult / 2^shift``, |mult| < 2^30."""
    largest = max(abs(a_ratio), abs(b_ratio), 2.0**-60)
    shift = min(62, max(0, ADD_MULT_BITS - math.ceil(math.log2(largest)) - 1))
    return round(a_ratio * 2**shift), round(b_ratio * 2**shift), shift


@rule("add", "sub")
def lower_add(ctx: LoweringContext, node: Node) -> None:
    if _lower_exact_arithmetic(ctx, node) or _lower_mask_add(ctx, node):
        return
    (a, aq), (b, bq) = ctx.value(node.inputs[0]), ctx.value(node.inputs[1])
    out = ctx.qparams_for(node.outputs[0])
    activation = _fusable_activation(ctx, node)
    target = activation.outputs[0] if activation else node.outputs[0]
    if activation:
        out = ctx.qparams_for(target)
    sign = -1.0 if node.op == "sub" else 1.0
    a_mult, b_mult, shift = add_multipliers(aq.scale / out.scale, sign * bq.scale / out.scale)
    qmin, qmax = _clamp_bounds(out, activation)
    codes = ctx.emit("int_add", [a, b], node.origin | (activation.origin if activation else
                                                        frozenset()),
                     {"a_zero_point": aq.zero_point, "b_zero_point": bq.zero_point,
                      "a_mult": a_mult, "b_mult": b_mult, "shift": shift,
                      "zero_point": out.zero_point, "dtype": out.dtype, "qmin": qmin,
                      "qmax": qmax}, node.name)
    ctx.bind(target, codes, out)
    if activation is not None:
        ctx.done.add(activation.name)


def _lower_exact_arithmetic(ctx: LoweringContext, node: Node) -> bool:
    """Arithmetic on values computed from integer inputs alone (masks, counts) and integer
    constants stays exact: the plain op on the int64 codes, no rounding anywhere."""
    operands = []
    for name in node.inputs:
        if ctx.is_constant(name):
            value = ctx.constant(name)
            if value.size != 1 or not float(value.reshape(())).is_integer():
                return False
            operands.append((ctx.add_constant(value.astype(np.int64), f"{node.name}.int"),
                             QParams(1.0, 0, "int64", exact=True)))
        else:
            operands.append(ctx.value(name))
    if not all(q.exact and q.scale == 1.0 and q.dtype == "int64" for _, q in operands):
        return False
    result = ctx.emit(node.op, [codes for codes, _ in operands], node.origin, None, node.name)
    ctx.bind(node.outputs[0], result, QParams(1.0, 0, "int64", exact=True))
    return True


def _lower_mask_add(ctx: LoweringContext, node: Node) -> bool:
    """``scores + mask`` where the mask is computed from integer inputs only (0 or a large
    negative number): select ``scores`` or the lowest code instead of adding, so the mask's
    range does not swamp the scores' quantization (attention padding masks)."""
    for mask_index in (0, 1):
        name = node.inputs[mask_index]
        if ctx.is_constant(name) or not ctx.value(name)[1].exact or node.op != "add":
            continue
        mask_codes, mask_q = ctx.value(name)
        lo, _ = ctx.range_of(name)
        if lo > -1e3:
            continue
        scores, scores_q = ctx.value(node.inputs[1 - mask_index])
        out = ctx.qparams_for(node.outputs[0])
        scores_lo, scores_hi = ctx.range_of(node.inputs[1 - mask_index])
        out = activation_qparams(scores_lo, scores_hi, out.dtype, out.zero_point == 0,
                                 out.bits)
        ratio = scores_q.scale / out.scale
        a_mult, _, shift = add_multipliers(ratio, 0.0)
        rescaled = ctx.emit("int_add", [scores, scores],
                            node.origin, {"a_zero_point": scores_q.zero_point,
                                          "b_zero_point": scores_q.zero_point, "a_mult": a_mult,
                                          "b_mult": 0, "shift": shift,
                                          "zero_point": out.zero_point, "dtype": out.dtype,
                                          "qmin": out.qmin, "qmax": out.qmax},
                            f"{node.name}.scores")
        zero = ctx.add_constant(np.array(mask_q.zero_point, mask_q.dtype), f"{node.name}.zero")
        keep = ctx.emit("equal", [mask_codes, zero], node.origin, None, f"{node.name}.keep")
        lowest = ctx.add_constant(np.array(out.qmin, out.dtype), f"{node.name}.lowest")
        ctx.bind(node.outputs[0], ctx.emit("where", [keep, rescaled, lowest], node.origin,
                                           None, node.name), out)
        ctx.stats.setdefault("mask_adds", []).append(node.name)
        return True
    return False


@rule("mul", "div")
def lower_mul_or_div(ctx: LoweringContext, node: Node) -> None:
    a_name, b_name = node.inputs
    if ctx.is_constant(b_name) and ctx.constant(b_name).size == 1:
        _scale_by_constant(ctx, node, float(ctx.constant(b_name).reshape(())))
        return
    if node.op == "mul" and ctx.is_constant(a_name) and ctx.constant(a_name).size == 1:
        _scale_by_constant(ctx, node, float(ctx.constant(a_name).reshape(())), operand=1)
        return
    (a, aq), (b, bq) = ctx.value(node.inputs[0]), ctx.value(node.inputs[1])
    if node.op == "mul":
        if _code_span(aq) * _code_span(bq) > INT_RANGES["int32"][1] and not bq.exact:
            b, bq = _narrowed(ctx, node, b, bq)
        acc = ctx.emit("int_mul", [a, b], node.origin,
                       {"a_zero_point": aq.zero_point, "b_zero_point": bq.zero_point},
                       f"{node.name}.acc")
        _finish_product(ctx, node, acc, aq.scale * bq.scale, None)
        return
    if aq.zero_point or bq.zero_point:
        raise LowbitError("integer division needs zero points 0 (symmetric operands)")
    shift = 16
    quotient = ctx.emit("int_div", [a, b], node.origin, {"shift": shift}, f"{node.name}.div")
    _finish_product(ctx, node, quotient, aq.scale / bq.scale / 2**shift, None)


def _code_span(q: QParams) -> int:
    """The largest ``|code - zero_point|`` of ``q``'s dtype."""
    low, high = INT_RANGES[q.dtype]
    return max(high - q.zero_point, q.zero_point - low)


def _narrowed(ctx: LoweringContext, node: Node, codes: str, q: QParams) -> tuple[str, QParams]:
    """``codes`` again in int8: two 16-bit operands of ``int_mul`` can make a product past
    int32 (65535^2 with one-sided ranges such as sigmoid * sigmoid; found by
    tests/test_fuzz_compiler.py), 16 x 8 bits cannot."""
    out = activation_qparams(*ctx.range_of(node.inputs[1]), "int8", q.zero_point == 0)
    ratio = np.atleast_1d(np.float64(q.scale / out.scale))
    mult, _ = dyadic_or_zero(ratio)  # the multiplier ctx.requantize uses: subtract the zero point
    narrow = ctx.requantize(codes, ratio, out, node.origin, f"{node.name}.b8",
                            offset=-q.zero_point * mult)
    return narrow, out


def _scale_by_constant(ctx: LoweringContext, node: Node, factor: float, operand: int = 0) -> None:
    """``x * c`` or ``x / c``: the codes stay, the scale absorbs ``c`` (no integer op)."""
    factor = 1.0 / factor if node.op == "div" else factor
    codes, qparams = ctx.value(node.inputs[operand])
    if factor > 0:
        ctx.bind(node.outputs[0], codes, qparams.rescaled(factor))
        return
    if factor < 0 and qparams.exact:
        negated = ctx.emit("neg", [codes], node.origin, None, node.name)
        ctx.bind(node.outputs[0], negated, QParams(-factor * qparams.scale, 0, qparams.dtype,
                                                   exact=True))
        return
    raise LowbitError(f"multiplying codes by {factor} needs a sign-aware rescale")


@rule("relu", "clip")
def lower_clamp(ctx: LoweringContext, node: Node) -> None:
    codes, qparams = ctx.value(node.inputs[0])
    qmin, qmax = _clamp_bounds(qparams, node)
    ctx.bind(node.outputs[0], ctx.emit("clip", [codes], node.origin,
                                       {"min": qmin, "max": qmax}, node.name), qparams)


@rule("softmax")
def lower_softmax(ctx: LoweringContext, node: Node) -> None:
    from lowbit.passes.quantize.lowering_log2 import lower_log2_attention  # imports this module
    if lower_log2_attention(ctx, node):  # RepQ-ViT log2 codes and shift-only A @ V
        return
    codes, qparams = ctx.value(node.inputs[0])
    bits = ctx.options.activation_bits
    readers = {u.op for u in ctx.users.get(node.outputs[0], [])}
    if not readers & PRODUCT_CONSUMERS:
        out = ctx.emit("int_softmax", [codes], node.origin,
                       {"axis": node.attrs.get("axis", -1), "scale": qparams.scale,
                        "out_bits": 8}, node.name)
        ctx.bind(node.outputs[0], out, QParams(2.0**-8, 0, "uint8"))
        return
    # probabilities read by A @ V: uniform codes k / (2^b - 1), rounded to nearest from 16-bit
    # probabilities (flooring straight to b bits biases every probability down: MiniLM W8A8
    # cosine 0.99714 floored, 0.99791 rounded)
    probs = ctx.emit("int_softmax", [codes], node.origin,
                     {"axis": node.attrs.get("axis", -1), "scale": qparams.scale,
                      "out_bits": SOFTMAX_WIDE_BITS}, f"{node.name}.p{SOFTMAX_WIDE_BITS}")
    out_q = QParams(1.0 / ((1 << bits) - 1), 0, "uint8", bits=bits)
    ctx.bind(node.outputs[0], ctx.requantize(probs, 2.0**-SOFTMAX_WIDE_BITS / out_q.scale,
                                             out_q, node.origin, node.name), out_q)


@rule("gelu")
def lower_gelu(ctx: LoweringContext, node: Node) -> None:
    codes, qparams = ctx.value(node.inputs[0])
    values = ctx.emit("int_gelu", [codes], node.origin,
                      {"zero_point": qparams.zero_point, "scale": qparams.scale},
                      f"{node.name}.gelu")
    _finish_product(ctx, node, values, gelu_plan(qparams.scale).out_scale, None)


@rule("layer_norm")
def lower_layer_norm(ctx: LoweringContext, node: Node) -> None:
    """I-BERT normalization, then one requantization per group of consumers.

    The linear layers reading the output get their own codes with per-channel scales
    ``s`` (SmoothQuant's migration, chosen from calibration) folded into the requantization's
    gamma and beta and into their weight columns, so outlier channels cost no resolution;
    other consumers (the residual add) get plain per-tensor codes. Exact in real arithmetic.
    """
    codes, qparams = ctx.value(node.inputs[0])
    rank = ctx.source.types[node.inputs[0]].rank
    if node.attrs.get("axis", -1) not in (-1, rank - 1):
        raise UnsupportedOpError("integer LayerNorm over more than the last axis")
    normalized = ctx.emit("int_layernorm", [codes], node.origin,
                          {"zero_point": qparams.zero_point, "scale": qparams.scale,
                           "eps": float(node.attrs.get("eps", 1e-5))}, f"{node.name}.norm")
    channels = int(ctx.source.types[node.inputs[0]].shape[-1])
    gamma = _affine(ctx, node, 1, np.ones(channels))
    beta = _affine(ctx, node, 2, np.zeros(channels))
    out_name = node.outputs[0]
    users = ctx.users.get(out_name, [])
    linears = [u for u in users if u.op == "linear" and ctx.is_constant(u.inputs[1])]
    scales = _migration_scales(ctx, out_name, linears)
    if scales is not None:
        absmax = float((ctx.channel_absmax[out_name] / scales).max())
        bits = ctx.options.activation_bits
        smooth_q = activation_qparams(-absmax, absmax, "int8", symmetric=True,
                                      bits=bits if bits < 8 else None)
        smooth = _affine_requantize(ctx, node, normalized, gamma / scales, beta / scales,
                                    smooth_q, "smooth")
        for layer in linears:
            ctx.per_consumer[(out_name, layer.name)] = ConsumerCodes(smooth, smooth_q, scales)
        users = [u for u in users if u not in linears]
        ctx.stats.setdefault("migrated_layer_norms", {})[node.name] = {
            "act_absmax_before": float(ctx.channel_absmax[out_name].max()),
            "act_absmax_after": absmax}
    if users or out_name in ctx.source.outputs:
        out = ctx.qparams_for(out_name, users)
        ctx.bind(out_name, _affine_requantize(ctx, node, normalized, gamma, beta, out, ""), out)


def _migration_scales(ctx: LoweringContext, value: str, linears: list[Node]
                      ) -> np.ndarray | None:
    alpha = ctx.options.migration_alpha
    if (alpha is None or not linears or value not in ctx.channel_absmax
            or value in ctx.source.metadata.get(MIGRATED_KEY, ())):  # a float pass did it
        return None
    weight_absmax = np.max([np.abs(ctx.constant(u.inputs[1])).max(axis=0) for u in linears],
                           axis=0)
    return smoothing_scales(ctx.channel_absmax[value], weight_absmax, alpha)


def _affine_requantize(ctx: LoweringContext, node: Node, normalized: str, gamma: np.ndarray,
                       beta: np.ndarray, out: QParams, tag: str) -> str:
    mult, offset, shift = layernorm_affine(gamma, beta, out)
    hint = f"{node.name}.{tag}" if tag else node.name
    inputs = [normalized, ctx.add_constant(mult, f"{hint}.gamma_q"),
              ctx.add_constant(np.array(shift, np.int64), f"{hint}.shift"),
              ctx.add_constant(offset, f"{hint}.beta_q")]
    return ctx.emit("requantize", inputs, node.origin,
                    {"zero_point": out.zero_point, "dtype": out.dtype, "qmin": out.qmin,
                     "qmax": out.qmax}, hint)


NORM_FRACTION_BITS = 24


def layernorm_affine(gamma: np.ndarray, beta: np.ndarray, out: QParams
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """``out = (y * 2^-24 * gamma + beta) / s_out`` as ``(y * mult + offset) >> shift``."""
    largest = max(float(np.abs(gamma).max()) / out.scale, 2.0**-30)
    shift = NORM_FRACTION_BITS + 30 - math.ceil(math.log2(largest))
    shift = min(62, max(NORM_FRACTION_BITS, shift))
    mult = np.rint(gamma / out.scale * 2.0 ** (shift - NORM_FRACTION_BITS)).astype(np.int64)
    offset = np.rint(beta / out.scale * 2.0**shift)
    if np.abs(offset).max(initial=0) >= 2**61:
        raise LowbitError("LayerNorm bias too large for the requantization offset")
    return mult, offset.astype(np.int64), shift


def _affine(ctx: LoweringContext, node: Node, index: int, default: np.ndarray) -> np.ndarray:
    name = node.inputs[index] if len(node.inputs) > index else ""
    if not name:
        return default
    if not ctx.is_constant(name):
        raise UnsupportedOpError("LayerNorm affine parameters computed at run time")
    return ctx.constant(name).astype(np.float64)


@rule("reduce_mean", "reduce_sum")
def lower_reduce(ctx: LoweringContext, node: Node) -> None:
    codes, qparams = ctx.value(node.inputs[0])
    shape = ctx.source.types[node.inputs[0]].shape
    axes = node.attrs["axes"]
    count = 1
    if node.op == "reduce_mean":
        count = math.prod(int(shape[a]) for a in axes)
    total = ctx.emit("int_sum", [codes], node.origin,
                     {"axes": axes, "keepdims": node.attrs.get("keepdims", False),
                      "zero_point": qparams.zero_point}, f"{node.name}.sum")
    if qparams.exact:
        ctx.bind(node.outputs[0], total, QParams(qparams.scale / count, 0, "int32",
                                                 exact=count == 1))
        return
    _finish_product(ctx, node, total, qparams.scale / count, None)


@rule("max_pool", "reduce_max", "reshape", "transpose", "slice", "expand")
def lower_data_movement(ctx: LoweringContext, node: Node) -> None:
    """Ops that only select or move codes: same op on the codes, same scale."""
    codes, qparams = ctx.value(node.inputs[0])
    ctx.bind(node.outputs[0], ctx.emit(node.op, [codes], node.origin, node.attrs, node.name),
             qparams)


@rule("gather")
def lower_gather(ctx: LoweringContext, node: Node) -> None:
    table_name, index_name = node.inputs
    indices, _ = ctx.value(index_name)
    if ctx.is_constant(table_name):
        out = ctx.qparams_for(node.outputs[0])
        table = ctx.add_constant(quantize_tensor(ctx.constant(table_name), out),
                                 f"{node.name}.table_q")
    else:
        table, out = ctx.value(table_name)
    ctx.bind(node.outputs[0], ctx.emit("gather", [table, indices], node.origin, node.attrs,
                                       node.name), out)


@rule("concat")
def lower_concat(ctx: LoweringContext, node: Node) -> None:
    out = ctx.qparams_for(node.outputs[0])
    parts = []
    for index in range(len(node.inputs)):
        codes, qparams = ctx.value(node.inputs[index])
        if qparams != out:
            codes = ctx.requantize(codes, qparams.scale / out.scale, out, node.origin,
                                   f"{node.name}.part{index}")
            if qparams.zero_point:
                raise UnsupportedOpError("concat of affine-quantized parts")
        parts.append(codes)
    ctx.bind(node.outputs[0], ctx.emit("concat", parts, node.origin, node.attrs, node.name), out)


@rule("cast")
def lower_cast(ctx: LoweringContext, node: Node) -> None:
    codes, qparams = ctx.value(node.inputs[0])
    if not qparams.exact:
        raise UnsupportedOpError("cast of a quantized value")
    ctx.bind(node.outputs[0], codes, qparams)


@rule("sqrt")
def lower_sqrt(ctx: LoweringContext, node: Node) -> None:
    codes, qparams = ctx.value(node.inputs[0])
    if qparams.zero_point:
        raise LowbitError("integer square root needs zero point 0")
    root = ctx.emit("int_sqrt", [codes], node.origin, None, f"{node.name}.sqrt")
    _finish_product(ctx, node, root, math.sqrt(qparams.scale), None)


@rule("pow")
def lower_pow(ctx: LoweringContext, node: Node) -> None:
    exponent = ctx.constant(node.inputs[1])
    if exponent is None or exponent.size != 1 or float(exponent.reshape(())) != 2.0:
        raise UnsupportedOpError("only x ** 2 has an integer lowering")
    codes, qparams = ctx.value(node.inputs[0])
    square = ctx.emit("int_mul", [codes, codes], node.origin,
                      {"a_zero_point": qparams.zero_point, "b_zero_point": qparams.zero_point},
                      f"{node.name}.square")
    _finish_product(ctx, node, square, qparams.scale**2, None)


LOOKUP_OPS = ("sigmoid", "tanh", "silu", "erf", "exp", "log", "abs", "neg", "reciprocal")


@rule(*LOOKUP_OPS)
def lower_by_lookup_table(ctx: LoweringContext, node: Node) -> None:
    """Any elementwise function of 8- or 16-bit codes is a table indexed by the code: the table
    is computed at compile time with the float kernel, the program only gathers from it."""
    codes, qparams = ctx.value(node.inputs[0])
    if qparams.dtype not in ("int8", "uint8", "int16") or qparams.exact:
        raise UnsupportedOpError(f"table lookup needs 8- or 16-bit codes, not {qparams.dtype}")
    out = ctx.qparams_for(node.outputs[0])
    domain = np.arange(qparams.qmin, qparams.qmax + 1, dtype=np.int64)
    real = ((domain - qparams.zero_point) * qparams.scale).astype(np.float32)
    with np.errstate(all="ignore"):
        values = OP_TABLE[node.op].run([real], node.attrs, 1)[0].astype(np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=out.qmax * out.scale,
                           neginf=out.qmin * out.scale)
    table = ctx.add_constant(quantize_tensor(values, out), f"{node.name}.table")
    wide = ctx.emit("cast", [codes], node.origin, {"to": "int64"}, f"{node.name}.wide")
    offset = ctx.add_constant(np.array(-qparams.qmin, np.int64), f"{node.name}.offset")
    index = ctx.emit("add", [wide, offset], node.origin, None, f"{node.name}.index")
    ctx.bind(node.outputs[0], ctx.emit("gather", [table, index], node.origin, {"axis": 0},
                                       node.name), out)
    ctx.stats.setdefault("lookup_tables", []).append(node.name)


@rule("avg_pool")
def lower_avg_pool(ctx: LoweringContext, node: Node) -> None:
    """Window sums as a depthwise integer convolution with a ones kernel, then one dyadic
    requantization by ``s_in / (k * s_out)``; the padding is the real zero."""
    codes, qparams = ctx.value(node.inputs[0])
    kernel = tuple(node.attrs["kernel"])
    if any(node.attrs["pads"]) and not node.attrs.get("count_include_pad", True):
        raise UnsupportedOpError("average pooling that excludes padding from the count")
    channels = int(ctx.source.types[node.inputs[0]].shape[1])
    ones = ctx.add_constant(np.ones((channels, 1) + kernel, np.int8), f"{node.name}.ones")
    sums = ctx.emit("int_conv", [codes, ones], node.origin,
                    {"x_zero_point": qparams.zero_point, "strides": node.attrs["strides"],
                     "pads": node.attrs["pads"], "dilations": (1,) * len(kernel),
                     "groups": channels}, f"{node.name}.sum")
    _finish_product(ctx, node, sums, qparams.scale / math.prod(kernel), None)
