"""TVM emitter of ``int_log2_matmul`` (``lowbit.compiler.ops.integer_log2``), bit-exact.

The shifts ``u << (F - q // 2)`` are ``left_shift(1, F - q // 2)`` weights (zero where the code
is dead or of the other parity) in two int64 ``matmul``s with the widened ``V``, combined as
``(even << odd_shift) + odd * odd_mult`` and cast to int32, as the kernel does. Every
intermediate stays far below 2^62 (the int32 result bounds both sums).
"""

from __future__ import annotations

from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, Operand
from lowbit.compiler.codegen.tvm_int_math import shift_left
from lowbit.compiler.codegen.tvm_int_rules import TvmEmitter, emitter
from lowbit.compiler.ops.integer_log2 import frac_bits

LOG2_EMITTERS: dict[str, TvmEmitter] = {}


@emitter(LOG2_EMITTERS, "int_log2_matmul")
def emit_int_log2_matmul(em: Emitter, p: Operand, v: Operand, *, v_zero_point: int,
                         zero_code: int, odd_mult: int, odd_shift: int) -> relax.Expr:
    q = em.wide(p)
    live = em.less(q, zero_code)
    half = em.floor_div(q, 2)
    shift = em.where(live, em.sub(em.const(frac_bits(zero_code), "int64"), half), 0)
    weight = em.where(live, em.emit(relax.op.left_shift(em.const(1, "int64"), shift)), 0)
    odd = em.where(em.equal(em.sub(q, em.mul(half, 2)), 1), weight, 0)
    even = em.sub(weight, odd)
    u = em.wide(v, v_zero_point)
    even_sum = em.emit(relax.op.matmul(even, u))
    odd_sum = em.emit(relax.op.matmul(odd, u))
    return em.cast(em.add(shift_left(em, even_sum, odd_shift), em.mul(odd_sum, odd_mult)),
                   "int32")
