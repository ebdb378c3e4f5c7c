"""Lowering of an annotated attention softmax (``passes.repq_vit_softmax``) and its ``A @ V``.

The softmax is I-BERT's ``int_softmax`` with 16-bit output codes ``p`` (scale ``2^-16``). The
log2(sqrt 2) code ``q = round(-2 log2(p 2^-16 / D))`` is a table lookup on ``p`` (``cast`` +
``gather``): ``q`` counts the rounding boundaries ``D 2^(-(j + 1/2) / 2)``, ``j < zero_code``,
at or above ``p 2^-16``, so ``zero_code`` (read as 0) is reached below the last live level.
The following matmul becomes ``int_log2_matmul`` (shifts; accumulator scale
``D s_v 2^-(F + odd_shift)``) and the usual requantization. Declines (the caller lowers the
plain ``int_softmax``) when the softmax is not annotated or ``V`` has no integer form yet.
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.ir import Node
from lowbit.compiler.ops.integer_log2 import ODD_MULT, ODD_SHIFT, frac_bits
from lowbit.passes.quantize.lowering import LoweringContext
from lowbit.passes.repq_vit_softmax import LOG2_SOFTMAX_KEY, zero_code

PROB_BITS = 16


def log2_code_table(delta: float, bits: int) -> np.ndarray:
    """``table[p]``: the log2(sqrt 2) code of the probability ``p / 2^16``."""
    probs = np.arange(1 << PROB_BITS, dtype=np.float64) / 2.0**PROB_BITS
    boundaries = delta * 2.0 ** (-(np.arange(zero_code(bits)) + 0.5) / 2.0)
    return (probs[:, None] <= boundaries[None, :]).sum(axis=1).astype(np.uint8)


def lower_log2_attention(ctx: LoweringContext, node: Node) -> bool:
    """Lower ``node`` (a softmax) and its ``A @ V`` reader; False when it declines."""
    from lowbit.passes.quantize.lowering_rules import _finish_product  # imports this module

    annotation = ctx.source.metadata.get(LOG2_SOFTMAX_KEY, {}).get(node.name)
    matmul = ctx.sole_consumer(node.outputs[0])
    if (annotation is None or matmul is None or matmul.op != "matmul"
            or matmul.inputs[0] != node.outputs[0] or matmul.inputs[1] not in ctx.bound):
        return False
    bits, delta = int(annotation["bits"]), float(annotation["delta"])
    codes, qparams = ctx.value(node.inputs[0])
    probs = ctx.emit("int_softmax", [codes], node.origin,
                     {"axis": node.attrs.get("axis", -1), "scale": qparams.scale,
                      "out_bits": PROB_BITS}, f"{node.name}.p16")
    index = ctx.emit("cast", [probs], node.origin, {"to": "int64"}, f"{node.name}.index")
    table = ctx.add_constant(log2_code_table(delta, bits), f"{node.name}.log2_table")
    log_codes = ctx.emit("gather", [table, index], node.origin, {"axis": 0}, f"{node.name}.log2")
    v, vq = ctx.value(matmul.inputs[1])
    acc = ctx.emit("int_log2_matmul", [log_codes, v], matmul.origin,
                   {"v_zero_point": vq.zero_point, "zero_code": zero_code(bits),
                    "odd_mult": ODD_MULT, "odd_shift": ODD_SHIFT}, f"{matmul.name}.acc")
    scale = delta * vq.scale * 2.0 ** -(frac_bits(zero_code(bits)) + ODD_SHIFT)
    _finish_product(ctx, matmul, acc, scale, None)
    ctx.done.add(matmul.name)
    ctx.stats.setdefault("log2_softmax", []).append(node.name)
    return True
