"""The I-BERT kernels of ``lowbit.kernels`` as Relax ops, step by step.

Each function takes the int64 input codes and the kernel's plan (the same cached plan the
interpreter uses, so the integer constants agree) and repeats the ``apply_*`` function line by
line; comments quote the numpy line each group of bindings reproduces. Divisions are
``floor_divide`` (Python's ``//``) and right shifts are arithmetic, exactly as in numpy.
Preconditions are the kernels'; the interpreter checks them and raises, the compiled module
does not check.
"""

from __future__ import annotations

from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter
from lowbit.compiler.codegen.tvm_int_math import bit_length, isqrt, rounding_shift, shift_left
from lowbit.kernels import ExpPlan, GeluPlan, LayerNormPlan, SoftmaxPlan
from lowbit.kernels.i_layernorm import FACTOR_SHIFT
from lowbit.kernels.i_softmax import FACTOR_BITS


def i_exp(em: Emitter, plan: ExpPlan, q: relax.Expr) -> relax.Expr:
    """``kernels.i_exp.apply_exp`` for int64 ``q <= 0``."""
    qf = shift_left(em, em.maximum(q, plan.q_min), plan.in_shift)  # max(q, q_min) << t
    z = em.floor_div(qf, plan.x0)                                 # qf // x0, in [0, 30]
    r = em.sub(qf, em.mul(z, plan.x0))                            # r = qf - z * x0
    poly = em.add(em.mul(r, em.add(r, plan.b_int)), plan.c_int)   # r * (r + b_int) + c_int
    return em.right_shift(shift_left(em, poly, plan.out_shift), z)  # (poly << k) >> z


def i_softmax(em: Emitter, plan: SoftmaxPlan, q: relax.Expr, axis: int) -> relax.Expr:
    """``kernels.i_softmax.apply_softmax`` along ``axis``."""
    d = em.sub(q, em.reduce_max(q, [axis], keepdims=True))        # q - q.max(axis)
    e16 = em.right_shift(i_exp(em, plan.exp, d), plan.sum_shift)  # i-exp(d) >> sum_shift
    total = em.reduce_sum(e16, [axis], keepdims=True)
    factor = em.floor_div(em.const(1 << FACTOR_BITS, "int64"), total)  # 2^32 // sum(e16)
    out = em.right_shift(em.mul(e16, factor), FACTOR_BITS - plan.out_bits)
    return em.minimum(out, (1 << plan.out_bits) - 1)


def i_gelu(em: Emitter, plan: GeluPlan, q: relax.Expr) -> relax.Expr:
    """``kernels.i_gelu.apply_gelu``."""
    magnitude = em.emit(relax.op.abs(q))
    clipped = em.add(em.minimum(magnitude, -plan.b_int), plan.b_int)  # min(|q|, -b) + b
    erf = em.add(em.mul(clipped, clipped), plan.c_int)                # clipped^2 + c_int
    erf = em.where(em.less(q, 0), em.emit(relax.op.negative(erf)), erf)  # sign of q
    return em.mul(q, em.sub(em.const(plan.one_int, "int64"),
                            em.right_shift(erf, plan.erf_shift)))  # q * (one - (erf >> n))


def i_layernorm(em: Emitter, plan: LayerNormPlan, q: relax.Expr) -> relax.Expr:
    """``kernels.i_layernorm.apply_layernorm`` over the last axis."""
    c, f, offset = plan.channels, plan.mean_frac_bits, 1 << plan.input_bits
    total = em.reduce_sum(q, [-1], keepdims=True)
    # mean = (((total + c * offset) << (f + 1)) + c) // (2 * c) - (offset << f)
    numerator = em.add(shift_left(em, em.add(total, c * offset), f + 1), c)
    mean = em.sub(em.floor_div(numerator, 2 * c), offset << f)
    y = em.sub(shift_left(em, q, f), mean)                       # (q << f) - mean
    squares = em.reduce_sum(em.mul(y, y), [-1], keepdims=True)
    var = em.maximum(em.add(squares, plan.eps_int), 1)           # max(sum(y^2) + eps, 1)
    shift = em.right_shift(em.sub(em.const(62, "int64"), bit_length(em, var)), 1)
    scaled = em.emit(relax.op.left_shift(var, em.mul(shift, 2)))  # var << 2 shift
    factor = em.floor_div(em.const(plan.sqrt_c, "int64"), isqrt(em, scaled))
    amount = em.sub(em.const(FACTOR_SHIFT - plan.out_frac_bits, "int64"), shift)
    return rounding_shift(em, em.mul(y, factor), amount)         # 55 - shift - k >= 0
