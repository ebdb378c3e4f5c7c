"""ONNX export of ``int_log2_matmul`` (``lowbit.compiler.ops.integer_log2``), bit-exact.

The shifts ``u << (F - q // 2)`` become products with powers of two looked up in
``onnx_int_math.POW2`` (ONNX has no signed shift); the even and odd codes give two int64
weight matrices (zero where the code is dead or of the other parity), each multiplied with the
widened ``V`` by int64 ``MatMul`` (exact in onnxruntime, see ``onnx_int_math``), then combined
as ``(even << odd_shift) + odd * odd_mult`` and cast to int32, as the kernel does.
"""

from __future__ import annotations

from lowbit.compiler.exporters.onnx_emit import Emitter, ExportRule, Operand, registrar
from lowbit.compiler.exporters.onnx_int_math import POW2, shift_left
from lowbit.compiler.ops.integer_log2 import frac_bits

LOG2_RULES: dict[str, ExportRule] = {}
rule = registrar(LOG2_RULES)


@rule("int_log2_matmul")
def export_int_log2_matmul(em: Emitter, p: Operand, v: Operand, *, v_zero_point: int,
                           zero_code: int, odd_mult: int, odd_shift: int) -> str:
    q = em.int64(p)
    live = em.less(q, zero_code)
    half = em.div(q, 2)                                  # q >= 0: Div is q // 2
    shift = em.where(live, em.sub(frac_bits(zero_code), half), 0)  # F - q // 2, 0 if dead
    weight = em.where(live, em.gather(POW2, shift), 0)   # 2^(F - q // 2), 0 if dead
    odd = em.where(em.equal(em.sub(q, em.mul(half, 2)), 1), weight, 0)
    even = em.sub(weight, odd)
    u = em.int64(v, v_zero_point)
    even_sum = em.node("MatMul", [even, u])
    odd_sum = em.node("MatMul", [odd, u])
    return em.cast(em.add(shift_left(em, even_sum, odd_shift), em.mul(odd_sum, odd_mult)),
                   "int32")
