"""TVM emitter of ``int_block_linear`` (``lowbit.compiler.ops.integer_block``), bit-exact.

INT4 weights stay packed in the module's constants and are unpacked by Relax ops exactly as
``packing.unpack_int4`` does (``floor_mod``/``floor_divide`` by 16, interleave, ``v - 16``
where ``v > 7``). The block partials are one batched int32 ``matmul``
``[J, M, B] x [J, B, O] -> [J, M, O]`` (each partial is below 2^22 in magnitude, so int32
cannot overflow); they are widened to int64, multiplied by the block multipliers and summed
over the blocks, where the range analysis keeps every partial sum below 2^62.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, Operand
from lowbit.compiler.codegen.tvm_int_rules import TvmEmitter, emitter
from lowbit.compiler.dims import product
from lowbit.compiler.packing import NIBBLE

BLOCK_EMITTERS: dict[str, TvmEmitter] = {}


def _unpacked_codes(em: Emitter, w: Operand, weight_bits: int) -> relax.Expr:
    """The weight codes as int32 ``[O, K]`` (INT4 unpacked by Relax ops)."""
    if weight_bits == 8:
        return em.wide(w, 0, "int32")
    packed = em.cast(w.expr, "int32")
    low = em.emit(relax.op.floor_mod(packed, em.const(NIBBLE, "int32")))
    high = em.floor_div(packed, NIBBLE)
    pairs = em.emit(relax.op.concat([em.emit(relax.op.expand_dims(low, -1)),
                                     em.emit(relax.op.expand_dims(high, -1))], axis=-1))
    signed = em.where(em.greater(pairs, NIBBLE // 2 - 1), em.sub(pairs, NIBBLE), pairs)
    rows, columns = (int(d) for d in w.shape)
    return em.emit(relax.op.reshape(signed, [rows, 2 * columns]))


@emitter(BLOCK_EMITTERS, "int_block_linear")
def emit_int_block_linear(em: Emitter, x: Operand, w: Operand, mult: Operand, *,
                          x_zero_point: int, block_size: int, weight_bits: int) -> relax.Expr:
    features, rows = int(x.shape[-1]), int(mult.shape[0])
    blocks = features // block_size
    w_blocks = em.emit(relax.op.permute_dims(em.emit(relax.op.reshape(
        _unpacked_codes(em, w, weight_bits), [rows, blocks, block_size])), [1, 2, 0]))
    tokens = em.dim(product(x.shape[:-1]))
    x_blocks = em.emit(relax.op.permute_dims(em.emit(relax.op.reshape(
        em.wide(x, x_zero_point, "int32"), [tokens, blocks, block_size])), [1, 0, 2]))
    partials = em.emit(relax.op.matmul(x_blocks, w_blocks, out_dtype="int32"))  # [J, M, O]
    weights = (em.const(mult.value.astype(np.int64).T.reshape(blocks, 1, rows), "int64")
               if mult.value is not None else em.emit(relax.op.reshape(
                   relax.op.permute_dims(em.wide(mult), [1, 0]), [blocks, 1, rows])))
    total = em.reduce_sum(em.mul(em.cast(partials, "int64"), weights), [0], keepdims=False)
    return em.emit(relax.op.reshape(total, em.shape(x.shape[:-1] + (rows,))))
