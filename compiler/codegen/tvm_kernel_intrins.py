"""TVM tensor intrinsics of the integer GEMM micro-kernel: a register tile of rows by 16-column
blocks, advanced by dot-product steps, per ISA and activation width.

Invariant: every implementation computes exactly what its description says in wrapping int32
arithmetic (so exactly wherever the description's sums stay in int32), with no saturation, for
every activation code and every int8-range weight.

The description (what ``tvm_kernels`` tensorizes) is, for ``rows`` rows, ``16 * blocks``
output columns and a depth of ``4 * steps``:
``C[r, i] += (int32(A[r, k]) + shift) * int32(B[i // 16, k // 4, i % 16, k % 4])``. ``A`` holds
the activation codes; the packed weight slice ``B`` is ``[blocks, steps, 16 columns, 4 depth]``
int8; ``shift`` is 128 for int8 activations (so the factor ``A + 128`` is the unsigned byte
``A ^ 0x80``) and 0 for uint8. The factor is therefore always an unsigned byte ``u`` in
[0, 255].

The implementation is written step-major: at each step every row's accumulators take one
dot product with that step's weight vectors. So one step's weights are live at a time, each
loaded once for all rows, and the ``rows * blocks`` accumulators stay in registers (``C`` is a
tile-local buffer, promoted by LLVM). Written row-major, as one expression per row, LLVM kept
every step's weights live across the rows and spilled them to the stack: the 32x384x1536 GEMM
took 118 us on one core, against onnxruntime's 92 us.

For int16 activations (``STEP_DEPTH`` 2, weights widened to int16 at compile time, ``shift``
0) the step is ``C[i] += int32(A[k]) * int32(B[k // 2, i, k % 2])``; the implementations are
``IMPLEMENTATIONS[(isa, "int16")]``:

- ``vnni``: one ``vpdpwssd``, s16 x s16 pairs summed into int32 (wrapping, never saturating).
- ``avx2``: ``vpmaddwd`` then ``vpaddd``; a pair saturates only at ``2 * (-32768)^2``, which
  needs a weight of -32768, outside the int8 range.

One 8-bit step per ISA (the intrinsic is
``lowbit_dot_<isa>_<dtype>_<rows>x<blocks>x16x<depth>``):

- ``vnni`` (AVX-512 VNNI): one ``vpdpbusd``, u8 x s8 products summed in int32 (no saturation
  in the non-``s`` form).
- ``avx2``: ``vpmaddubsw`` sums two u8 x s8 products into int16 *with saturation*: with
  ``u = 255`` and ``w = 127`` a pair reaches 64770. So ``u`` is split into ``u & 0x7f`` (pairs
  within ``2 * 127 * 128 = 32512``) and ``u & 0x80`` (pairs ``128 * (w0 + w1)`` in
  [-32768, 32512]); neither can saturate, and ``vpmaddwd`` by ones widens each to int32 exactly.
- ``sdot`` (aarch64 dot product): ``sdot`` is s8 x s8, so it takes ``s = u - 128`` (``u ^ 0x80``
  read as int8) and adds ``128 * sum_k B[i, k]`` (a second ``sdot`` with ones, shifted by 7).

``amx`` (Intel AMX) is not a step but whole tiles (``_amx_impl``): 16 rows, up to 4 blocks and a
depth of a multiple of 64, on the uint8 description (its activations are already the unsigned
bytes ``u``); the packed weights' ``[16 columns, 4 depth]`` steps are exactly the pair layout
``tdpbusd`` reads from a weight tile's 64-byte rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

from tvm import s_tir, tirx
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


def _word(A: tirx.Buffer, row: int, step: int, dtype: str, flip: int) -> tirx.Expr:
    """The activation codes of ``row`` at ``step`` (one int32 lane's worth) as one int32, XOR
    ``flip``."""
    depth = STEP_DEPTH[dtype]
    word = T.reinterpret(A.vload([T.int64(row), T.int64(depth * step)], f"{dtype}x{depth}"),
                         dtype="int32")
    return T.bitwise_xor(word, T.int32(flip)) if flip else word


def _llvm(name: str, dtype: str, *args: tirx.Expr) -> tirx.Expr:
    return T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id(name), *args, dtype=dtype)


def _weights(B: tirx.Buffer, block: int, step: int, column: int, lanes: int) -> tirx.Expr:
    return B.vload([T.int64(block), T.int64(step), T.int64(column), T.int64(0)],
                   dtype=f"{B.dtype}x{lanes}")


Vectors = list[tirx.Expr]
StepFn = Callable[[Vectors, tirx.Expr, tirx.Buffer, int, int], Vectors]


@dataclass(frozen=True)
class Isa:
    """One ISA's step for one row: ``step(acc, word, B, step, blocks)`` returns the row's
    accumulator vectors (``lanes`` int32 each, in column order) after one step, from the
    activation word (XOR ``flip(dtype)``) and the packed weights of that step."""

    lanes: int
    flip: Callable[[str], int]
    step: StepFn

    def offsets(self, blocks: int) -> range:
        """The first column of each accumulator vector of a row."""
        return range(0, LANES * blocks, self.lanes)


def _unsigned_flip(dtype: str) -> int:
    return FLIP if SHIFTS[dtype] else 0  # the unsigned byte u of each code


def _vnni(acc: Vectors, word: tirx.Expr, B: tirx.Buffer, step: int, blocks: int) -> Vectors:
    u = T.reinterpret(T.broadcast(word, 16), dtype="int8x64")
    return [_llvm("llvm.x86.avx512.vpdpbusd.512", "int32x16", acc[b], u,
                  _weights(B, b, step, 0, 64)) for b in range(blocks)]


def _avx2(acc: Vectors, word: tirx.Expr, B: tirx.Buffer, step: int, blocks: int) -> Vectors:
    ones = T.broadcast(T.int16(1), 16)
    parts = [T.reinterpret(T.broadcast(T.bitwise_and(word, T.int32(mask)), 8), dtype="int8x32")
             for mask in (LOW_BITS, FLIP)]
    out = []
    for index, vector in enumerate(acc):  # one ymm of 8 columns: block index // 2, half
        w = _weights(B, index // 2, step, 8 * (index % 2), 32)
        for part in parts:
            pairs = _llvm("llvm.x86.avx2.pmadd.ub.sw", "int16x16", part, w)
            vector = vector + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", pairs, ones)
        out.append(vector)
    return out


def _sdot(acc: Vectors, word: tirx.Expr, B: tirx.Buffer, step: int, blocks: int) -> Vectors:
    sdot = "llvm.aarch64.neon.sdot.v4i32.v16i8"
    s = T.reinterpret(T.broadcast(word, 4), dtype="int8x16")
    out = []
    for index, vector in enumerate(acc):  # 4 columns: block index // 4, group 4 * (index % 4)
        w = _weights(B, index // 4, step, 4 * (index % 4), 16)
        column_sums = _llvm(sdot, "int32x4", T.broadcast(T.int32(0), 4),
                            T.broadcast(T.int8(1), 16), w)
        out.append(_llvm(sdot, "int32x4", vector, s, w) + T.shift_left(
            column_sums, T.broadcast(T.int32(7), 4)))
    return out


def _vnni_words(acc: Vectors, word: tirx.Expr, B: tirx.Buffer, step: int,
                blocks: int) -> Vectors:
    x = T.reinterpret(T.broadcast(word, 16), dtype="int16x32")
    return [_llvm("llvm.x86.avx512.vpdpwssd.512", "int32x16", acc[b], x,
                  _weights(B, b, step, 0, 32)) for b in range(blocks)]


def _avx2_words(acc: Vectors, word: tirx.Expr, B: tirx.Buffer, step: int,
                blocks: int) -> Vectors:
    x = T.reinterpret(T.broadcast(word, 8), dtype="int16x16")
    return [vector + _llvm("llvm.x86.avx2.pmadd.wd", "int32x8", x,
                           _weights(B, index // 2, step, 8 * (index % 2), 16))
            for index, vector in enumerate(acc)]


IMPLEMENTATIONS: dict[tuple[str, str], Isa] = {
    ("vnni", "int8"): Isa(16, _unsigned_flip, _vnni),
    ("avx2", "int8"): Isa(8, _unsigned_flip, _avx2),
    ("sdot", "int8"): Isa(4, lambda dtype: 0 if SHIFTS[dtype] else FLIP, _sdot),
    ("vnni", "int16"): Isa(16, lambda dtype: 0, _vnni_words),
    ("avx2", "int16"): Isa(8, lambda dtype: 0, _avx2_words)}
"""(ISA name, weight dtype) to its step."""


def supports(isa: str | None, dtype: str) -> bool:
    """Whether ``isa`` has a step for activation ``dtype`` (``amx``: the 8-bit dtypes, which
    its kernel turns into unsigned bytes)."""
    if isa == "amx":
        return dtype in ("int8", "uint8")
    return (isa, weight_dtype(dtype)) in IMPLEMENTATIONS


def _desc(dtype: str, steps: int, blocks: int, rows: int) -> T.PrimFunc:
    step, shift, weights = STEP_DEPTH[dtype], SHIFTS[dtype], weight_dtype(dtype)
    depth, columns = step * steps, LANES * blocks

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        sa, sc = T.int64(), T.int64()
        A = T.match_buffer(a, (T.int64(rows), T.int64(depth)), dtype,
                           strides=[sa, T.int64(1)], offset_factor=1)
        B = T.match_buffer(b, (T.int64(blocks), T.int64(steps), T.int64(16), T.int64(step)),
                           weights, offset_factor=1)
        C = T.match_buffer(c, (T.int64(rows), T.int64(columns)), "int32",
                           strides=[sc, T.int64(1)], offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:rows, 0:columns], A[0:rows, 0:depth], B[0:blocks, 0:steps, 0:16, 0:step])
            T.writes(C[0:rows, 0:columns])
            for r, i, k in T.grid(T.int64(rows), T.int64(columns), T.int64(depth)):
                with T.sblock("update"):
                    vr, vi, vk = T.axis.remap("SSR", [r, i, k])
                    C[vr, vi] = C[vr, vi] + (T.Cast("int32", A[vr, vk]) + shift) * T.Cast(
                        "int32", B[vi // 16, vk // step, vi % 16, vk % step])
    return desc


def _impl(isa: str, dtype: str, steps: int, blocks: int, rows: int) -> T.PrimFunc:
    """The description's function with its root block's body replaced by the ISA's steps."""
    desc = _desc(dtype, steps, blocks, rows)
    chosen = IMPLEMENTATIONS[(isa, weight_dtype(dtype))]
    A, B, C = desc.params
    offsets, lanes = chosen.offsets(blocks), f"int32x{chosen.lanes}"
    bindings: list[tuple[tirx.Var, tirx.Expr]] = []

    def bind(value: tirx.Expr, name: str) -> tirx.Var:
        var = tirx.Var(name, value.ty)
        bindings.append((var, value))
        return var

    acc = [[bind(C.vload([T.int64(row), T.int64(o)], dtype=lanes), f"c{row}_{o}")
            for o in offsets] for row in range(rows)]
    for index in range(steps):
        for row in range(rows):
            word = bind(_word(A, row, index, dtype, chosen.flip(dtype)), f"a{row}_{index}")
            acc[row] = [bind(value, f"c{row}_{o}_{index}") for o, value in
                        zip(offsets, chosen.step(acc[row], word, B, index, blocks), strict=True)]
    stores = [C.vstore([T.int64(row), T.int64(o)], acc[row][i])
              for row in range(rows) for i, o in enumerate(offsets)]
    # SSA values bound in step-major order; C is read once and written once
    body = tirx.SeqStmt([tirx.Bind(var, value) for var, value in bindings] + stores)
    realize = desc.body
    block = realize.block
    body = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint, body)
    return desc.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, body))


# -- AMX: whole tiles --------------------------------------------------------------------------
AMX_ROWS = 16
"""Rows of an AMX tile (and of the ``amx`` row's register tile)."""
AMX_DEPTH = 64
"""Bytes of an AMX tile row: the depth one ``tdpbusd`` reduces."""
AMX_BLOCKS = 4
"""Accumulator tiles (16-column blocks) at most; tiles 4 and 5 hold activations and weights."""
_AMX_A, _AMX_B = 4, 5
_AMX_CONFIG = (1, 0, 0x0040004000400040, 0x0040004000400040, 0, 0, 0x1010101010101010, 0)
"""``ldtilecfg``'s 64 bytes as eight little-endian words: palette 1; tiles 0-7 of 64 bytes
(``colsb``, bytes 16-31) by 16 rows (bytes 48-55)."""


def _amx_call(name: str, *args: object) -> tirx.Stmt:
    return tirx.Evaluate(T.call_llvm_intrin("void", f"llvm.x86.{name}", *args))


def _amx_impl(steps: int, blocks: int) -> T.PrimFunc:
    """The uint8 description over a 16-row tile, ``blocks`` column blocks and a depth of
    ``4 * steps`` (a multiple of 64), as AMX tiles: the accumulators are loaded into tiles
    0..blocks-1, each 64-deep chunk loads the activations (tile 4, ``u`` bytes, row stride
    ``sa``) and, per block, the weights (tile 5: 16 rows of the packed ``[16 columns, 4]``
    steps, 64 bytes apart, which is ``tdpbusd``'s pair layout) and runs ``tdpbusd`` (u8 x s8
    products summed into int32, wrapping, never saturating); the tiles are stored back. The
    tile configuration is loaded on every call (it is per thread, and tasks move)."""
    desc = _desc("uint8", steps, blocks, AMX_ROWS)
    A, B, C = desc.params
    config = tirx.decl_buffer((8,), "uint64", "tile_config", scope="local")
    c_stride = C.strides[0] * 4  # bytes
    chunk = tirx.Var("chunk", "int64")
    per_chunk = [_amx_call("tileloadd64", T.int8(_AMX_A),
                           T.address_of(A[T.int64(0), chunk * AMX_DEPTH]), A.strides[0])]
    for block in range(blocks):
        per_chunk += [
            _amx_call("tileloadd64", T.int8(_AMX_B),
                      T.address_of(B[T.int64(block), chunk * (AMX_DEPTH // 4), T.int64(0),
                                     T.int64(0)]), T.int64(AMX_DEPTH)),
            _amx_call("tdpbusd", T.int8(block), T.int8(_AMX_A), T.int8(_AMX_B))]
    body = [tirx.AllocBuffer(config)]
    body += [tirx.BufferStore(config, T.uint64(word), [T.int64(i)])
             for i, word in enumerate(_AMX_CONFIG)]
    body.append(_amx_call("ldtilecfg", T.address_of(config[T.int64(0)])))
    body += [_amx_call("tileloadd64", T.int8(block),
                       T.address_of(C[T.int64(0), T.int64(LANES * block)]), c_stride)
             for block in range(blocks)]
    body.append(tirx.For(chunk, T.int64(0), T.int64(4 * steps // AMX_DEPTH),
                         tirx.ForKind.SERIAL, tirx.SeqStmt(per_chunk)))
    body += [_amx_call("tilestored64", T.int8(block),
                       T.address_of(C[T.int64(0), T.int64(LANES * block)]), c_stride)
             for block in range(blocks)]
    realize = desc.body
    block = realize.block
    new = s_tir.SBlock(block.iter_vars, block.reads, block.writes, block.name_hint,
                       tirx.SeqStmt(body))
    return desc.with_body(s_tir.SBlockRealize(realize.iter_values, realize.predicate, new))


@cache
def intrinsic(isa: str, dtype: str, steps: int, blocks: int, rows: int) -> str:
    """The name of the registered intrinsic for ``isa``, activation ``dtype``, ``rows`` rows, a
    chain of ``steps`` steps over ``blocks`` packed 16-column blocks (registered on first
    use). The ``amx`` ISA takes unsigned bytes only (``dtype`` uint8, ``rows`` 16)."""
    name = f"lowbit_dot_{isa}_{dtype}_{rows}x{blocks}x16x{STEP_DEPTH[dtype] * steps}"
    impl = (_amx_impl(steps, blocks) if isa == "amx"
            else _impl(isa, dtype, steps, blocks, rows))
    TensorIntrin.register(name, _desc(dtype, steps, blocks, rows), impl, override=True)
    return name


__all__ = ["AMX_BLOCKS", "AMX_DEPTH", "AMX_ROWS", "DEPTH", "IMPLEMENTATIONS", "LANES", "SHIFTS", "STEP_DEPTH", "intrinsic", "supports",
           "weight_dtype"]
