"""2-d integer convolutions (``int_conv``) on the tensorized int8 GEMM: channels-last im2col
and GEMM, no transpose.

Invariant: the rewritten module computes the same int32 values as the ``relax.nn.conv2d`` it
replaces, for every input. Padding is the real zero, the code ``zp`` (``tvm_int_rules`` pads
``x - zp`` with 0); im2col writes ``zp`` there, so that ``u - c`` is 0 in the GEMM. The depth
``KH * KW * C`` is padded to a multiple of 4 with zero weights (the code written there is
irrelevant; im2col writes ``zp``).

``conv2d(astype(x) [- zp], W)`` with ``groups == 1``, NHWC/HWIO layouts (``tvm_layout`` puts
the CPU pipeline's convolutions there), a constant ``W``, an 8-bit ``x`` and static channels
and image size becomes ``cols = im2col(x)`` (a PrimFunc, ``[N * OH * OW, Kp]``), the GEMM of
``tvm_kernels`` with ``W`` (``[KH, KW, C, O]``) reshaped to ``[Kp, O]``, and a reshape of its result to
``[N, OH, OW, O]``. A 1x1 convolution with stride 1, no padding and a depth that needs none is
a reshape of ``x`` itself, with no copy. im2col is a scheduled kernel: per image, a
``zp``-padded copy, then the gather of contiguous channel runs, with no bounds test and no
division left (in parallel from ``MIN_ELEMENTS`` elements a call, ``tvm_parallel_gate``).
Grouped (depthwise) convolutions keep TVM's lowering, scheduled by ``tvm_schedule_cpu``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tvm import relax, te, tirx
from tvm.relax.dpl import DFPattern, rewrite_call
from tvm.s_tir import Schedule

from lowbit.compiler.codegen.tvm_kernel_intrins import DEPTH
from lowbit.compiler.codegen.tvm_kernel_patterns import ConstantProduct
from lowbit.compiler.codegen.tvm_kernels_batched import KERNEL_ATTR, OPAQUE
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_ELEMENTS, elements, gated

GemmCall = Callable[[relax.Expr, str, np.ndarray, int, tirx.Expr], relax.Expr | None]
"""(activation ``[M, K]``, its dtype, ``[K, N]`` int32 weight values, zero point, M) -> the
GEMM's ``[M, N]`` int32 result, or None where the GEMM declines."""


def _i64(value: int) -> tirx.IntImm:
    return tirx.IntImm("int64", value)


@dataclass(frozen=True)
class ConvShape:
    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilation: tuple[int, int]
    padding: tuple[int, int, int, int]
    """top, left, bottom, right (Relax's order)."""

    def out_size(self) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        top, left, bottom, right = self.padding
        return ((self.height + top + bottom - dh * (kh - 1) - 1) // sh + 1,
                (self.width + left + right - dw * (kw - 1) - 1) // sw + 1)

    def depth(self) -> int:
        return self.channels * self.kernel[0] * self.kernel[1]

    def padded_depth(self) -> int:
        return -(-self.depth() // DEPTH) * DEPTH


def im2col_prim_func(shape: ConvShape, dtype: str, zero_point: int) -> tirx.PrimFunc:
    """``cols[(n, oh, ow), (kh, kw, c)] = x[n, ih, iw, c]``, or ``zero_point`` outside the image
    and in the depth padding; the batch ``n`` is symbolic. Scheduled (``schedule_im2col``)."""
    batch = tirx.Var("n", "int64")
    x = te.placeholder((batch, _i64(shape.height), _i64(shape.width), _i64(shape.channels)),
                       dtype, name="x")
    out_h, out_w = shape.out_size()
    (kh, kw), (sh, sw), (dh, dw) = shape.kernel, shape.strides, shape.dilation
    top, left, bottom, right = shape.padding
    channels, depth = shape.channels, shape.depth()
    zero = tirx.const(zero_point, dtype)

    def pad(n: tirx.Expr, h: tirx.Expr, w: tirx.Expr, c: tirx.Expr) -> tirx.Expr:
        inside = tirx.all(h >= top, h < top + shape.height, w >= left, w < left + shape.width)
        return tirx.if_then_else(inside, x[n, tirx.max(tirx.min(h - top, shape.height - 1), 0),
                                           tirx.max(tirx.min(w - left, shape.width - 1), 0), c],
                                 zero)

    padded = te.compute((batch, _i64(shape.height + top + bottom),
                         _i64(shape.width + left + right), _i64(channels)), pad, name="pad")

    def gather(row: tirx.Expr, col: tirx.Expr) -> tirx.Expr:
        n, oh, ow = row // (out_h * out_w), row // out_w % out_h, row % out_w
        # the row of the kernel, kept in range in the depth padding (whose value is unused)
        i = tirx.min(col // (kw * channels), kh - 1)
        j, c = col // channels % kw, col % channels
        value = padded[n, oh * sh + i * dh, ow * sw + j * dw, c]
        return value if depth == shape.padded_depth() else tirx.if_then_else(col < depth, value,
                                                                             zero)

    cols = te.compute((batch * out_h * out_w, _i64(shape.padded_depth())), gather, name="im2col")
    func = te.create_prim_func([x, cols])
    return gated(lambda parallel: schedule_im2col(func, shape, parallel), elements(func),
                 MIN_ELEMENTS)


def schedule_im2col(func: tirx.PrimFunc, shape: ConvShape, parallel: bool) -> tirx.PrimFunc:
    """One image per task (a parallel one when ``parallel``): its padded copy, then the rows of
    its pixels, with the row (and, without depth padding, the column) index split into its
    coordinates so that no division is left in the loop; a run of channels is one vector copy
    where its length allows."""
    sch = Schedule(func)
    block = sch.get_sblock("im2col")
    row, col = sch.get_loops(block)
    out_h, out_w = shape.out_size()
    image, oh, ow = sch.split(row, [None, out_h, out_w])
    if shape.depth() == shape.padded_depth():
        sch.split(col, [shape.kernel[0] * shape.kernel[1], shape.channels])
    inner = sch.get_loops(block)[-1]
    if shape.depth() == shape.padded_depth() and shape.channels % DEPTH == 0:
        sch.vectorize(inner)
    else:
        sch.unroll(inner)
    if parallel:
        sch.parallel(image)
    sch.compute_at(sch.get_sblock("pad"), image)
    return sch.mod["main"].without_attr("global_symbol").with_attr(
        KERNEL_ATTR, "im2col").with_attr("op_pattern", OPAQUE)


def _conv_shape(call: relax.Call, x: relax.Expr, weight: np.ndarray) -> ConvShape | None:
    attrs = call.attrs
    if (attrs.groups != 1 or attrs.data_layout != "NHWC" or attrs.kernel_layout != "HWIO"
            or attrs.out_layout != "NHWC" or weight.ndim != 4):
        return None
    dims = list(x.ty.shape.values)
    if len(dims) != 4 or not all(isinstance(d, tirx.IntImm) for d in dims[1:]):
        return None
    return ConvShape(int(dims[3]), int(dims[1]), int(dims[2]), tuple(weight.shape[:2]),
                     tuple(int(s) for s in attrs.strides), tuple(int(d) for d in attrs.dilation),
                     tuple(int(p) for p in attrs.padding))


def _is_pointwise(shape: ConvShape) -> bool:
    """A 1x1 convolution whose im2col would be the image itself."""
    return (shape.kernel == (1, 1) and shape.strides == (1, 1) and not any(shape.padding)
            and shape.depth() == shape.padded_depth())


def rewrite_convs(builder: relax.BlockBuilder, gemm: GemmCall) -> None:
    """Rewrites every matched convolution of the builder's Relax functions in place."""
    im2cols: dict[tuple, relax.GlobalVar] = {}
    for shifted in (True, False):
        pattern = ConstantProduct("relax.nn.conv2d", shifted)

        def rewrite(call: relax.Call, matches: dict[DFPattern, relax.Expr],
                    pattern: ConstantProduct = pattern) -> relax.Expr:
            if not isinstance(call, relax.Call):  # rewrite_call may pass a declined match's var
                return call
            x, weight = matches[pattern.x], matches[pattern.weight].value.numpy()
            dtype = str(x.ty.dtype)
            zero = matches[pattern.zero_point].value.numpy() if pattern.shifted else np.zeros(1)
            shape = _conv_shape(call, x, weight)
            if shape is None or zero.size != 1 or dtype not in ("int8", "uint8"):
                return call
            zero_point = int(np.ravel(zero)[0])
            if not np.iinfo(dtype).min <= zero_point <= np.iinfo(dtype).max:
                return call
            weight_t = np.zeros((shape.padded_depth(), weight.shape[3]), np.int64)
            weight_t[:shape.depth()] = weight.reshape(shape.depth(), -1)
            out_h, out_w = shape.out_size()
            batch = x.ty.shape.values[0]
            rows = batch * out_h * out_w
            if _is_pointwise(shape):
                cols = relax.op.reshape(x, [rows, shape.depth()])
            else:
                key = (shape, dtype, zero_point)
                if key not in im2cols:
                    im2cols[key] = builder.add_func(im2col_prim_func(shape, dtype, zero_point),
                                                    "lowbit_im2col")
                cols = relax.call_tir(im2cols[key], [x], relax.TensorType(
                    [rows, shape.padded_depth()], dtype))
            product = gemm(cols, dtype, weight_t.astype(np.int32), zero_point, rows)
            if product is None:
                return call
            return relax.op.reshape(product, [batch, out_h, out_w, weight.shape[3]])

        for gv, func in builder.get().functions_items():
            if isinstance(func, relax.Function):
                builder.update_func(gv, rewrite_call(pattern.product(), rewrite, func))


__all__ = ["ConvShape", "GemmCall", "im2col_prim_func", "rewrite_convs", "schedule_im2col"]
