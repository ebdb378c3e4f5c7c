"""INT4 storage: two signed 4-bit codes per byte, the constant form of block-quantized weights.

Layout (little nibble first, like GGML/AWQ ``uint8`` packing): codes ``c[..., 2i]`` and
``c[..., 2i + 1]`` along the last axis share byte ``i``; the even code is the low nibble, the
odd code the high nibble, each in 4-bit two's complement (``-8..7`` is ``0x8..0x7``). A packed
array is ``uint8`` with the last axis halved; the last axis of the codes must be even.

Invariant: ``unpack_int4(pack_int4(c)) == c`` for every int array with values in ``[-8, 7]``
(``pack_int4`` refuses anything else). Exporters and emitters unpack with the same arithmetic
(``low = b mod 16``, ``high = b div 16``, ``v - 16`` where ``v >= 8``), written in their ops.
"""

from __future__ import annotations

import numpy as np

INT4_MIN, INT4_MAX = -8, 7
NIBBLE = 16


def pack_int4(codes: np.ndarray) -> np.ndarray:
    """Signed 4-bit ``codes`` (any int dtype, last axis even) as ``uint8`` bytes."""
    wide = np.asarray(codes).astype(np.int64)
    if wide.shape[-1] % 2:
        raise ValueError(f"cannot pack an odd last axis ({wide.shape[-1]}) two per byte")
    if wide.size and (wide.min() < INT4_MIN or wide.max() > INT4_MAX):
        raise ValueError(f"codes in [{wide.min()}, {wide.max()}] do not fit 4 bits")
    nibbles = wide % NIBBLE  # two's complement nibble, in [0, 16)
    return (nibbles[..., 0::2] + NIBBLE * nibbles[..., 1::2]).astype(np.uint8)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """The int8 codes of ``pack_int4`` output: the last axis doubles."""
    if packed.dtype != np.uint8:
        raise ValueError(f"packed INT4 is uint8, not {packed.dtype}")
    wide = packed.astype(np.int64)
    nibbles = np.stack([wide % NIBBLE, wide // NIBBLE], axis=-1)
    signed = np.where(nibbles >= NIBBLE // 2, nibbles - NIBBLE, nibbles)
    return signed.reshape(packed.shape[:-1] + (2 * packed.shape[-1],)).astype(np.int8)
