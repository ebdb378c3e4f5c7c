"""TVM tensor intrinsics of the integer GEMM micro-kernel: a chain of 16-column dot-product
steps per ISA and activation width.

Invariant: every implementation computes exactly what its description says in wrapping int32
arithmetic (so exactly wherever the description's sums stay in int32), with no saturation, for
every activation code and every int8-range weight.

The description (what ``tvm_kernels`` tensorizes) is, for 16 output columns and a depth of
``4 * steps``: ``C[i] += (int32(A[k]) + shift) * int32(B[k // 4, i, k % 4])``. ``A`` holds the
activation codes; the packed weight slice ``B`` is ``[steps, 16 columns, 4 depth]`` int8;
``shift`` is 128 for int8 activations (so the factor ``A + 128`` is the unsigned byte
``A ^ 0x80``) and 0 for uint8. The factor is therefore always an unsigned byte ``u`` in
[0, 255]. The implementation loads ``C`` once, chains the ``steps`` dot products as one
expression (the accumulator never goes through memory in between) and stores it once.

For int16 activations (``STEP_DEPTH`` 2, weights widened to int16 at compile time, ``shift``
0) the step is ``C[i] += int32(A[k]) * int32(B[k // 2, i, k % 2])``; the implementations are
``IMPLEMENTATIONS[(isa, "int16")]``:

- ``vnni``: one ``vpdpwssd``, s16 x s16 pairs summed into int32 (wrapping, never saturating).
- ``avx2``: ``vpmaddwd`` then ``vpaddd``; a pair saturates only at ``2 * (-32768)^2``, which
  needs a weight of -32768, outside the int8 range.

One 8-bit step per ISA (the intrinsic is ``lowbit_dot_<isa>_<dtype>_<blocks>x16x<depth>``):

- ``vnni`` (AVX-512 VNNI): one ``vpdpbusd``, u8 x s8 products summed in int32 (no saturation
  in the non-``s`` form).
- ``avx2``: ``vpmaddubsw`` sums two u8 x s8 products into int16 *with saturation*: with
  ``u = 255`` and ``w = 127`` a pair reaches 64770. So ``u`` is split into ``u & 0x7f`` (pairs
  within ``2 * 127 * 128 = 32512``) and ``u & 0x80`` (pairs ``128 * (w0 + w1)`` in
  [-32768, 32512]); neither can saturate, and ``vpmaddwd`` by ones widens each to int32 exactly.
- ``sdot`` (aarch64 dot product): ``sdot`` is s8 x s8, so it takes ``s = u - 128`` (``u ^ 0x80``
  read as int8) and adds ``128 * sum_k B[i, k]`` (a second ``sdot`` with ones, shifted by 7).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

LANES = 16
"""Output columns of one step (the packed weight tile's column axis)."""
STEP_DEPTH = {"int8": 4, "uint8": 4, "int16": 2}
"""Activation dtype to the reduction depth of one step (the packed weight tile's last axis):
one int32 lane's worth of activation codes."""
DEPTH = STEP_DEPTH["int8"]
"""The step depth of 8-bit activations."""
SHIFTS = {"int8": 128, "uint8": 0, "int16": 0}
"""Activation dtype to the constant added to its codes: 8-bit ones become an unsigned byte."""
FLIP = -2139062144
"""``0x80808080`` as an int32: XOR flips the sign bit of each of four bytes."""
LOW_BITS = 0x7F7F7F7F


def weight_dtype(dtype: str) -> str:
    """The packed weight's dtype for activation ``dtype``: int16 beside int16 codes."""
    return "int16" if dtype == "int16" else "int8"


def _bytes(A: tirx.Buffer, step: int, dtype: str, flip: int) -> tirx.Expr:
    """The activation codes of ``step`` (one int32 lane's worth) as one int32, XOR ``flip``."""
    depth = STEP_DEPTH[dtype]
    word = T.reinterpret(A.vload([T.int64(depth * step)], f"{dtype}x{depth}"), dtype="int32")
    return T.bitwise_xor(word, T.int32(flip)) if flip else word


def _llvm(name: str, dtype: str, *args: tirx.Expr) -> tirx.Expr:
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)


def _weights(B: tirx.Buffer, block: int, step: int, column: int, lanes: int) -> tirx.Expr:
    return B.vload([T.int64(block), T.int64(step), T.int64(column), T.int64(0)],
                   dtype=f"{B.dtype}x{lanes}")


def _vnni(A: tirx.Buffer, B: tirx.Buffer, C: tirx.Buffer, steps: int, blocks: int,
          dtype: str) -> list[tirx.Expr]:
    flip = FLIP if SHIFTS[dtype] else 0  # the unsigned byte u of each code
    acc = [C.vload([T.int64(LANES * b)], dtype="int32x16") for b in range(blocks)]
    for step in range(steps):
        u = T.reinterpret(T.broadcast(_bytes(A, step, dtype, flip), 16), dtype="int8x64")
        acc = [_llvm("llvm.x86.avx512.vpdpbusd.512", "int32x16", acc[b], u,
                     _weights(B, b, step, 0, 64)) for b in range(blocks)]
    return acc


def _avx2(A: tirx.Buffer, B: tirx.Buffer, C: tirx.Buffer, steps: int, blocks: int,
          dtype: str) -> list[tirx.Expr]:
    flip = FLIP if SHIFTS[dtype] else 0
    ones = T.broadcast(T.int16(1), 16)
    halves = [(b, half) for b in range(blocks) for half in (0, 8)]  # one ymm of 8 columns
    acc = [C.vload([T.int64(LANES * b + half)], dtype="int32x8") for b, half in halves]
    for step in range(steps):
        u = _bytes(A, step, dtype, flip)
        parts = [T.reinterpret(T.broadcast(T.bitwise_and(u, T.int32(mask)), 8), dtype="int8x32")
                 for mask in (LOW_BITS, FLIP)]
        for index, (b, half) in enumerate(halves):
            w = _weights(B, b, step, half, 32)
            for part in parts:
                pairs = _llvm("llvm.x86.avx2.pmadd.ub.sw", "int16x16", part, w)
                acc[index] = acc[index] + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", pairs,
                                                ones)
    return acc


def _sdot(A: tirx.Buffer, B: tirx.Buffer, C: tirx.Buffer, steps: int, blocks: int,
          dtype: str) -> list[tirx.Expr]:
    flip = 0 if SHIFTS[dtype] else FLIP  # s = u - 128: an int8 code already is, uint8 flips
    sdot = "llvm.aarch64.neon.sdot.v4i32.v16i8"
    quads = [(b, group) for b in range(blocks) for group in (0, 4, 8, 12)]  # 4 columns each
    acc = [C.vload([T.int64(LANES * b + group)], dtype="int32x4") for b, group in quads]
    for step in range(steps):
        s = T.reinterpret(T.broadcast(_bytes(A, step, dtype, flip), 4), dtype="int8x16")
        for index, (b, group) in enumerate(quads):
            w = _weights(B, b, step, group, 16)
            column_sums = _llvm(sdot, "int32x4", T.broadcast(T.int32(0), 4),
                                T.broadcast(T.int8(1), 16), w)
            acc[index] = _llvm(sdot, "int32x4", acc[index], s, w) + T.shift_left(
                column_sums, T.broadcast(T.int32(7), 4))
    return acc


def _vnni_words(A: tirx.Buffer, B: tirx.Buffer, C: tirx.Buffer, steps: int, blocks: int,
                dtype: str) -> list[tirx.Expr]:
    acc = [C.vload([T.int64(LANES * b)], dtype="int32x16") for b in range(blocks)]
    for step in range(steps):
        x = T.reinterpret(T.broadcast(_bytes(A, step, dtype, 0), 16), dtype="int16x32")
        acc = [_llvm("llvm.x86.avx512.vpdpwssd.512", "int32x16", acc[b], x,
                     _weights(B, b, step, 0, 32)) for b in range(blocks)]
    return acc


def _avx2_words(A: tirx.Buffer, B: tirx.Buffer, C: tirx.Buffer, steps: int, blocks: int,
                dtype: str) -> list[tirx.Expr]:
    halves = [(b, half) for b in range(blocks) for half in (0, 8)]  # one ymm of 8 columns
    acc = [C.vload([T.int64(LANES * b + half)], dtype="int32x8") for b, half in halves]
    for step in range(steps):
        x = T.reinterpret(T.broadcast(_bytes(A, step, dtype, 0), 8), dtype="int16x16")
        for index, (b, half) in enumerate(halves):
            acc[index] = acc[index] + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", x,
                                            _weights(B, b, step, half, 16))
    return acc


Chain = Callable[[tirx.Buffer, tirx.Buffer, tirx.Buffer, int, int, str], list[tirx.Expr]]
IMPLEMENTATIONS: dict[tuple[str, str], Chain] = {
    ("vnni", "int8"): _vnni, ("avx2", "int8"): _avx2, ("sdot", "int8"): _sdot,
    ("vnni", "int16"): _vnni_words, ("avx2", "int16"): _avx2_words}
"""(ISA name, weight dtype) to its chain: the accumulated vectors of ``C``, in column order."""


def supports(isa: str | None, dtype: str) -> bool:
    """Whether ``isa`` has a chain for activation ``dtype``."""
    return (isa, weight_dtype(dtype)) in IMPLEMENTATIONS


def _concat(vectors: list[tirx.Expr], lanes: int) -> tirx.Expr:
    """One int32 vector of ``lanes`` from the chain's vectors (a no-op for a single one)."""
    if len(vectors) == 1:
        return vectors[0]
    return tirx.Shuffle(vectors, [tirx.IntImm("int32", i) for i in range(lanes)])


def _desc(dtype: str, steps: int, blocks: int) -> T.PrimFunc:
    step = STEP_DEPTH[dtype]
    shift, depth, columns, weights = SHIFTS[dtype], step * steps, LANES * blocks, weight_dtype(
        dtype)

    @T.prim_func(s_tir=True)
    def desc(A: T.Buffer((T.int64(depth),), dtype, offset_factor=1),
             B: T.Buffer((T.int64(blocks), T.int64(steps), T.int64(16), T.int64(step)), weights,
                         offset_factor=1),
             C: T.Buffer((T.int64(columns),), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:columns], A[0:depth], B[0:blocks, 0:steps, 0:16, 0:step])
            T.writes(C[0:columns])
            for i, k in T.grid(T.int64(columns), T.int64(depth)):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + (T.Cast("int32", A[vk]) + shift) * T.Cast(
                        "int32", B[vi // 16, vk // step, vi % 16, vk % step])
    return desc


def _impl(isa: str, dtype: str, steps: int, blocks: int) -> T.PrimFunc:
    step, weights = STEP_DEPTH[dtype], weight_dtype(dtype)
    chain, depth, columns = IMPLEMENTATIONS[(isa, weights)], step * steps, LANES * blocks

    @T.prim_func(s_tir=True)
    def impl(A: T.Buffer((T.int64(depth),), dtype, offset_factor=1),
             B: T.Buffer((T.int64(blocks), T.int64(steps), T.int64(16), T.int64(step)), weights,
                         offset_factor=1),
             C: T.Buffer((T.int64(columns),), "int32", offset_factor=1)) -> None:
        with T.sblock("root"):
            T.reads(C[0:columns], A[0:depth], B[0:blocks, 0:steps, 0:16, 0:step])
            T.writes(C[0:columns])
            C[T.ramp(T.int64(0), T.int64(1), columns)] = _concat(
                chain(A, B, C, steps, blocks, dtype), columns)
    return impl


@cache
def intrinsic(isa: str, dtype: str, steps: int, blocks: int) -> str:
    """The name of the registered intrinsic for ``isa``, activation ``dtype``, a chain of
    ``steps`` steps over ``blocks`` packed 16-column blocks (registered on first use)."""
    name = f"lowbit_dot_{isa}_{dtype}_{blocks}x16x{STEP_DEPTH[dtype] * steps}"
    TensorIntrin.register(name, _desc(dtype, steps, blocks), _impl(isa, dtype, steps, blocks),
                          override=True)
    return name


__all__ = ["DEPTH", "IMPLEMENTATIONS", "LANES", "SHIFTS", "STEP_DEPTH", "intrinsic", "supports",
           "weight_dtype"]
