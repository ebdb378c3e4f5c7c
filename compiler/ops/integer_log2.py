"""The shift-only attention product of RepQ-ViT's log2 softmax quantizer: ``int_log2_matmul``.

``p`` holds log2(sqrt 2) codes of attention probabilities (``passes.repq_vit_softmax``): a live
code ``q < zero_code`` stands for ``D 2^(-q/2)``, ``zero_code`` for 0. With
``F = (zero_code - 1) // 2`` and ``u = v - v_zero_point``, per output element

    even = sum over k with q even of  u[k] << (F - q // 2)
    odd  = sum over k with q odd  of  u[k] << (F - q // 2)
    acc  = (even << odd_shift) + odd * odd_mult

so ``acc`` is ``sum_k D 2^(-q_k/2) u[k]`` at scale ``D 2^-(F + odd_shift)`` with
``odd_mult / 2^odd_shift ~ 1/sqrt 2``: the product is shifts and adds, plus one constant
multiply per output (RepQ-ViT, section 4.3). Exact int64 arithmetic; the result must fit int32
(an overflow is an error naming the node, as for every integer op).
"""

from __future__ import annotations

import numpy as np

from lowbit.compiler.ops.integer import _require_int, fit
from lowbit.compiler.ops.linalg import infer_matmul
from lowbit.compiler.ops.spec import REQUIRED, OpSpec, register
from lowbit.compiler.types import TensorType

ODD_SHIFT = 8
ODD_MULT = round(2**ODD_SHIFT / np.sqrt(2.0))  # 181: 1/sqrt 2 to 1.1e-4 relative


def frac_bits(zero_code: int) -> int:
    """``F``: the largest ``q // 2`` of a live code, so every shift ``F - q // 2 >= 0``."""
    return (zero_code - 1) // 2


def infer_int_log2_matmul(p: TensorType, v: TensorType, *, v_zero_point: int, zero_code: int,
                          odd_mult: int, odd_shift: int) -> TensorType:
    _require_int(p, v)
    if not 1 <= zero_code <= 63 or not 0 <= odd_shift <= 16:
        raise ValueError(f"zero_code {zero_code} or odd_shift {odd_shift} out of range")
    return infer_matmul(p.with_dtype("int32"), v.with_dtype("int32"))


def eval_int_log2_matmul(p: np.ndarray, v: np.ndarray, *, v_zero_point: int, zero_code: int,
                         odd_mult: int, odd_shift: int) -> np.ndarray:
    q = p.astype(np.int64)
    if q.size and q.min() < 0:
        raise ValueError("log2 codes must be non-negative")
    live = q < zero_code
    shift = np.where(live, frac_bits(zero_code) - q // 2, 0)
    u = v.astype(np.int64) - v_zero_point
    # terms[..., i, k, j] = u[..., k, j] << shift[..., i, k]
    terms = np.left_shift(u[..., None, :, :], shift[..., :, :, None])
    even = np.where((live & (q % 2 == 0))[..., None], terms, 0).sum(axis=-2)
    odd = np.where((live & (q % 2 == 1))[..., None], terms, 0).sum(axis=-2)
    return fit((even << odd_shift) + odd * odd_mult, "int32")


register(OpSpec("int_log2_matmul",
                "shift-only P @ (V - v_zero_point) for log2(sqrt 2) codes P: even codes shift, "
                "odd codes shift and take one odd_mult / 2^odd_shift (1/sqrt 2) multiply",
                ("p", "v"), infer_int_log2_matmul, eval_int_log2_matmul,
                attrs={"v_zero_point": 0, "zero_code": REQUIRED, "odd_mult": ODD_MULT,
                       "odd_shift": ODD_SHIFT}))
