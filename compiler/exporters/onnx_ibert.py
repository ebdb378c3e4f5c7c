"""The I-BERT kernels of ``lowbit.kernels`` as ONNX subgraphs, step by step.

Each function takes the int64 input codes and the kernel's plan (the same cached plan the
interpreter uses, so the integer constants agree) and repeats the ``apply_*`` function line by
line; comments quote the numpy line each group of nodes reproduces. Floor divisions are plain
``Div`` where the kernel's bounds make both operands non-negative (or both non-positive);
shifts of possibly negative values go through ``onnx_int_math.floor_shift``. Preconditions are
the kernels'; the interpreter checks them and raises, the exported model does not check.
"""

from __future__ import annotations

from lowbit.compiler.exporters.onnx_emit import Emitter
from lowbit.compiler.exporters.onnx_int_math import (POW2, bit_length, exact_sum, floor_shift,
                                                     floor_shift_nonneg, isqrt, rounding_shift,
                                                     shift_left)
from lowbit.kernels import ExpPlan, GeluPlan, LayerNormPlan, SoftmaxPlan
from lowbit.kernels.i_layernorm import FACTOR_SHIFT
from lowbit.kernels.i_softmax import FACTOR_BITS, SUM_BITS


def i_exp(em: Emitter, plan: ExpPlan, q: str) -> str:
    """``kernels.i_exp.apply_exp`` for int64 ``q <= 0``."""
    qf = shift_left(em, em.maximum(q, plan.q_min), plan.in_shift)  # max(q, q_min) << t
    z = em.div(qf, plan.x0)                     # qf // x0: both <= 0, the quotient is >= 0
    r = em.sub(qf, em.mul(z, plan.x0))          # r = qf - z * x0
    poly = em.add(em.mul(r, em.add(r, plan.b_int)), plan.c_int)  # r * (r + b_int) + c_int
    scaled = shift_left(em, poly, plan.out_shift)                # poly << k, >= 0
    return em.div(scaled, em.gather(POW2, z))   # ... >> z, z in [0, 30]


def i_softmax(em: Emitter, plan: SoftmaxPlan, q: str, axis: int, row: int | None) -> str:
    """``kernels.i_softmax.apply_softmax`` along ``axis``; ``row``: its length if static."""
    d = em.sub(q, em.reduce_max(q, [axis], keepdims=True))      # q - q.max(axis)
    e16 = floor_shift_nonneg(em, i_exp(em, plan.exp, d), plan.sum_shift)
    total = exact_sum(em, e16, [axis], keepdims=True,
                      bound=None if row is None else row << SUM_BITS)
    factor = em.div(1 << FACTOR_BITS, total)    # (1 << 32) // e16.sum(axis)
    out = floor_shift_nonneg(em, em.mul(e16, factor), FACTOR_BITS - plan.out_bits)
    return em.minimum(out, (1 << plan.out_bits) - 1)


def i_gelu(em: Emitter, plan: GeluPlan, q: str) -> str:
    """``kernels.i_gelu.apply_gelu``."""
    clipped = em.add(em.minimum(em.op("Abs", q), -plan.b_int), plan.b_int)
    erf = em.add(em.mul(clipped, clipped), plan.c_int)        # clipped^2 + c_int
    erf = em.where(em.less(q, 0), em.op("Neg", erf), erf)     # np.where(q < 0, -erf, erf)
    return em.mul(q, em.sub(plan.one_int, floor_shift(em, erf, plan.erf_shift)))


def i_layernorm(em: Emitter, plan: LayerNormPlan, q: str) -> str:
    """``kernels.i_layernorm.apply_layernorm`` over the last axis."""
    c, f, offset = plan.channels, plan.mean_frac_bits, 1 << plan.input_bits
    total = exact_sum(em, q, [-1], keepdims=True, bound=c * offset)
    # mean = (((total + c * offset) << (f + 1)) + c) // (2 * c) - (offset << f); numerator >= 0
    numerator = em.add(shift_left(em, em.add(total, c * offset), f + 1), c)
    mean = em.sub(em.div(numerator, 2 * c), offset << f)
    y = em.sub(shift_left(em, q, f), mean)
    y_bound = 1 << (plan.input_bits + 1 + f)   # |y| < 2^(input_bits + 1 + f)
    squares = exact_sum(em, em.mul(y, y), [-1], keepdims=True, bound=c * y_bound * y_bound)
    var = em.maximum(em.add(squares, plan.eps_int), 1)
    shift = em.div(em.sub(62, bit_length(em, var)), 2)         # (62 - bits(var)) >> 1, >= 0
    root = isqrt(em, em.mul(var, em.gather(POW2, em.mul(shift, 2))))  # isqrt(var << 2 shift)
    factor = em.div(plan.sqrt_c, root)
    amount = em.sub(FACTOR_SHIFT - plan.out_frac_bits, shift)  # 55 - shift - k, >= 0
    return rounding_shift(em, em.mul(y, factor), amount)
