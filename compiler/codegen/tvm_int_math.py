"""Exact int64 building blocks as Relax ops: shifts, clamps, bit length, square root, wrapping.

Each function mirrors a numpy expression of ``lowbit.kernels`` and binds Relax ops that give
the same integers. What TVM offers and how it is used:

- ``right_shift`` on signed integers is the arithmetic shift (floor), as numpy's ``>>``;
  ``divide`` truncates toward zero and ``floor_divide`` floors, as C and Python do.
- TVM's LLVM code generator marks 32- and 64-bit signed ``+ - *`` as non-wrapping
  (``add nsw``), so an intermediate that overflows is undefined there, unlike numpy where it
  wraps. Kernels keep every intermediate below ``2^62`` by construction; where the op's own
  semantics wrap (``add``/``sub``/``mul``/``neg`` on integers) the arithmetic runs in the
  unsigned type of the same width, which wraps by definition, and is reinterpreted back
  (``wrapping``).
- Shifts by run-time amounts stay below 64 (the kernels' bounds), where LLVM defines them.
- A recurrence whose steps read the previous value several times is materialized step by
  step (``materialize``), so that fusion does not re-expand it exponentially.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from tvm import relax

from lowbit.compiler.codegen.tvm_context import Emitter, dtype_of
from lowbit.kernels.dyadic import MAX_SHIFT
from lowbit.kernels.i_sqrt import NEWTON_STEPS

Shift = int | np.ndarray | relax.Expr
"""A shift amount: a constant (Python int or int array, broadcasting) or an int64 expression."""

POW2 = np.array([1 << i for i in range(MAX_SHIFT + 1)], np.int64)
"""``2^i`` for ``0 <= i <= 62``."""
UNSIGNED = {"int8": "uint8", "int16": "uint16", "int32": "uint32", "int64": "uint64"}


def shift_left(em: Emitter, x: relax.Expr, k: int) -> relax.Expr:
    """``x << k`` for a constant ``k >= 0`` as ``x * 2^k`` (never negative-shifts a value)."""
    return em.mul(x, 1 << k)


def rounding_shift(em: Emitter, x: relax.Expr, c: Shift) -> relax.Expr:
    """``(x + 2^(c-1)) >> c`` (``x`` where ``c == 0``): ``kernels.dyadic.rounding_shift``."""
    if isinstance(c, relax.Expr):
        half = em.right_shift(em.emit(relax.op.left_shift(em.arg(1, c), c)), 1)
        return em.right_shift(em.add(x, half), c)
    c = _checked(c)
    if not c.any():
        return x
    if c.ndim and np.all(c == c.flat[0]):  # one shift for every channel: a scalar constant
        c = c.reshape(-1)[:1].reshape(())
    half = np.left_shift(np.int64(1), c) >> 1
    return em.right_shift(em.add(x, half), c)


def clamp_cast(em: Emitter, x: relax.Expr, qmin: int, qmax: int, dtype: str) -> relax.Expr:
    """``clip(x, qmin, qmax).astype(dtype)`` for int64 ``x``."""
    return em.cast(em.clip(x, qmin, qmax), dtype)


def bit_length(em: Emitter, n: relax.Expr) -> relax.Expr:
    """``kernels.i_sqrt.bit_length``: ``int.bit_length`` for int64 ``0 <= n < 2^63``, counted as
    ``#{i in [0, 62] : n >= 2^i}`` (one reduction instead of the kernel's six dependent steps;
    both equal ``int.bit_length``)."""
    exceeds = em.emit(relax.op.greater_equal(em.emit(relax.op.expand_dims(n, -1)),
                                             em.const(POW2, "int64")))
    return em.reduce_sum(em.cast(exceeds, "int64"), [-1], keepdims=False)


def isqrt(em: Emitter, n: relax.Expr) -> relax.Expr:
    """``kernels.i_sqrt.isqrt``: ``floor(sqrt(n))`` for int64 ``0 <= n < 2^62``, Newton unrolled;
    each iterate is materialized (``materialize``) since the next step reads it three times."""
    exponent = em.right_shift(em.add(bit_length(em, n), 1), 1)
    x = em.emit(relax.op.left_shift(em.arg(1, n), exponent))  # 1 << ((bits(n) + 1) >> 1)
    for _ in range(NEWTON_STEPS):
        x = materialize(em, x)
        x = em.minimum(x, em.right_shift(em.add(x, em.floor_div(n, em.maximum(x, 1))), 1))
    return x


def materialize(em: Emitter, x: relax.Expr) -> relax.Expr:
    """``x`` itself, computed into its own buffer: a sum over a unit axis, which TVM's operator
    fusion and its GPU schedules never inline into consumers.

    Without it, a value that the next step reads several times is re-expanded at each use
    once fusion inlines elementwise producers: a recurrence like Newton's method grows like
    ``3^steps``, and TVM's simplifier (which also substitutes ``let`` bindings) and dlight's
    analyses spend minutes on the result."""
    return em.reduce_sum(em.emit(relax.op.expand_dims(x, -1)), [-1], keepdims=False)


def wrapping(em: Emitter, op: Callable[..., relax.Expr], *xs: relax.Expr) -> relax.Expr:
    """``op`` on integers of one dtype, wrapping modulo ``2^bits`` as numpy does: computed in
    the unsigned type of the same width (where wrapping is defined) and reinterpreted."""
    dtype = dtype_of(xs[0])
    work = UNSIGNED.get(dtype, dtype)
    out = em.emit(op(*(em.cast(x, work) for x in xs)))
    return em.cast(out, dtype)


def _checked(c: int | np.ndarray) -> np.ndarray:
    c = np.asarray(c, np.int64)
    if c.size and (c.min() < 0 or c.max() > MAX_SHIFT):
        raise ValueError(f"shift must lie in [0, {MAX_SHIFT}]")
    return c
