"""ONNX export of ``int_block_linear`` (``lowbit.compiler.ops.integer_block``), bit-exact.

The model keeps INT4 weights packed: the uint8 initializer is unpacked in the graph exactly as
``packing.unpack_int4`` does (``low = b mod 16``, ``high = b div 16`` on non-negative int32,
interleaved, ``v - 16`` where ``v > 7``). The block partials are one batched product over the
blocks, ``[J, M, B] x [J, B, O] -> [J, M, O]``: ``MatMulInteger`` (int32, exact: each partial
is below 2^22) when the input is 8-bit, int64 ``MatMul`` otherwise. The partials are widened,
multiplied by the block multipliers and summed over the blocks with ``exact_sum`` (onnxruntime
sums integers in float64; a static bound picks the exact path).
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.exporters.onnx_emit import Emitter, ExportRule, Operand, fits, registrar
from lowbit.compiler.exporters.onnx_int_math import exact_sum
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.compiler.packing import NIBBLE

BLOCK_RULES: dict[str, ExportRule] = {}
rule = registrar(BLOCK_RULES)


def _unpacked_codes(em: Emitter, w: Operand, weight_bits: int) -> str:
    """The weight codes as an int8 ``[O, K]`` value (INT4 unpacked in the graph)."""
    if weight_bits == 8:
        return em.use(w)
    packed = em.cast(em.use(w), "int32")
    low, high = em.mod(packed, NIBBLE), em.div(packed, NIBBLE)  # packed >= 0: Div is floor
    last = em.axes([-1])
    pairs = em.node("Concat", [em.node("Unsqueeze", [low, last]),
                               em.node("Unsqueeze", [high, last])], axis=-1)
    signed = em.where(em.greater(pairs, NIBBLE // 2 - 1), em.sub(pairs, NIBBLE), pairs)
    rows, columns = (int(d) for d in w.shape)
    codes = em.node("Reshape", [signed, em.const(np.array([rows, 2 * columns]), "int64")])
    return em.cast(codes, "int8")


@rule("int_block_linear")
def export_int_block_linear(em: Emitter, x: Operand, w: Operand, mult: Operand, *,
                            x_zero_point: int, block_size: int, weight_bits: int) -> str:
    features, rows = int(x.shape[-1]), int(mult.shape[0])
    blocks = features // block_size
    codes = _unpacked_codes(em, w, weight_bits)
    w_blocks = em.node("Transpose", [em.node("Reshape", [codes, em.const(
        np.array([rows, blocks, block_size]), "int64")])], perm=[1, 2, 0])  # [J, B, O]
    x_blocks = em.node("Transpose", [em.node("Reshape", [em.use(x), em.const(
        np.array([-1, blocks, block_size]), "int64")])], perm=[1, 0, 2])  # [J, M, B]
    if x.dtype in ("int8", "uint8") and fits(np.array(x_zero_point), x.dtype):
        zero = em.const(np.array(x_zero_point), x.dtype, "zero_point")
        partials = em.cast(em.node("MatMulInteger", [x_blocks, w_blocks, zero], dtype="int32"),
                           "int64")
    else:
        x_wide = em.sub(em.cast(x_blocks, "int64"), x_zero_point)
        partials = em.node("MatMul", [x_wide, em.cast(w_blocks, "int64")])
    weights = em.const(mult.value.astype(np.int64).T.reshape(blocks, 1, rows), "int64",
                       "block_mult") if mult.value is not None else em.node(
        "Reshape", [em.node("Transpose", [em.int64(mult)], perm=[1, 0]),
                    em.const(np.array([blocks, 1, rows]), "int64")])
    lo, hi = INT_RANGES[x.dtype]
    partial_bound = block_size * max(abs(lo - x_zero_point), abs(hi - x_zero_point)) * 128
    mult_bound = (int(np.abs(mult.value.astype(np.int64)).max(initial=0))
                  if mult.value is not None else 1 << 31)
    total = exact_sum(em, em.mul(partials, weights), [0], False,
                      blocks * partial_bound * mult_bound)
    return em.node("Reshape", [total, em.shape(x.shape[:-1] + (rows,))])
