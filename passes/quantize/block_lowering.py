"""Integer lowering of a linear layer with block-quantized weights (``LoweringOptions.block_size``).

A ``linear`` (or ``x @ B`` with a constant 2-D ``B``, i.e. weight ``B.T``) becomes
``int_block_linear`` (int32 block partials, summed in int64 with one dyadic
multiplier per (output channel, block) and a common shift per channel) followed by one
``requantize`` with multiplier 1, that shift, and the bias as its offset
(``round(b / s_out * 2^shift)``), so the bias is added at the output's resolution. Weights are
INT4 packed two per byte when the layer has 4 weight bits, int8 otherwise. ReLU/clip fuse
into the clamp as for every product. Exact in real arithmetic up to the rounding of the
weights (per block), of the multipliers and of the result.

Declines (returns False, the caller lowers per channel, the reason goes to the stats): weights
computed at run time (a product of two activations), and input features that are not a
multiple of the block size.
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.ir import Node
from lowbit.compiler.packing import pack_int4
from lowbit.passes.quantize.block_quant import block_multipliers, quantize_blocks
from lowbit.passes.quantize.lowering import LoweringContext
from lowbit.passes.quantize.lowering_rules import _clamp_bounds, _fusable_activation


def _weight_matrix(ctx: LoweringContext, node: Node) -> np.ndarray | None:
    """The constant weight as ``[out, in]``: a linear's own, or ``B.T`` of ``x @ B``."""
    weight = ctx.constant(node.inputs[1])
    if node.op == "matmul" and weight is not None:
        return weight.T if weight.ndim == 2 and not ctx.is_constant(node.inputs[0]) else None
    return weight


def lower_block_linear(ctx: LoweringContext, node: Node) -> bool:
    """Lower a ``linear`` (or a ``matmul`` by a constant matrix); False when declined."""
    block_size = ctx.options.block_size
    weight = _weight_matrix(ctx, node)
    features = int(ctx.source.types[node.inputs[0]].shape[-1])
    reason = ("weights computed at run time" if weight is None else
              f"{features} input features are not a multiple of {block_size}"
              if features % block_size else None)
    if reason is not None:
        ctx.stats.setdefault("block_declined", {})[node.name] = reason
        return False
    special = ctx.per_consumer.get((node.inputs[0], node.name))
    if special is not None:  # SmoothQuant-migrated codes: the columns absorb the scales
        x, xq = special.codes, special.qparams
        weight = weight.astype(np.float64) * special.column_scale
    else:
        x, xq = ctx.value(node.inputs[0])
    bits = ctx.weight_bits(node)
    codes, scales = quantize_blocks(weight, block_size, bits)
    stored = pack_int4(codes) if bits == 4 else codes

    activation = _fusable_activation(ctx, node)
    target = activation.outputs[0] if activation else node.outputs[0]
    out = ctx.qparams_for(target)
    qmin, qmax = _clamp_bounds(out, activation)
    origin = node.origin | (activation.origin if activation else frozenset())
    mult, shift = block_multipliers(xq.scale * scales / out.scale)
    acc = ctx.emit("int_block_linear",
                   [x, ctx.add_constant(stored, f"{node.name}.weight_q{bits}"),
                    ctx.add_constant(mult, f"{node.name}.block_mult")], node.origin,
                   {"x_zero_point": xq.zero_point, "block_size": block_size,
                    "weight_bits": bits}, f"{node.name}.acc")
    bias_name = node.inputs[2] if len(node.inputs) > 2 else ""
    bias = ctx.constant(bias_name) if bias_name else np.zeros(len(shift))
    offset = np.rint(bias.astype(np.float64) / out.scale * 2.0**shift).astype(np.int64)
    inputs = [acc, ctx.add_constant(np.ones(1, np.int64), f"{node.name}.one"),
              ctx.add_constant(shift, f"{node.name}.shift"),
              ctx.add_constant(offset, f"{node.name}.offset")]
    codes_out = ctx.emit("requantize", inputs, origin,
                         {"zero_point": out.zero_point, "dtype": out.dtype, "qmin": qmin,
                          "qmax": qmax}, f"{node.name}.rq")
    ctx.bind(target, codes_out, out)
    if activation is not None:
        ctx.done.add(activation.name)
        ctx.stats.setdefault("fused_activations", []).append(activation.name)
    ctx.stats.setdefault("block_linears", []).append(node.name)
    return True
