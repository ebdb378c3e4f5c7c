"""Channels-last layout for the CPU pipeline: 2-d convolutions and everything between them
(requantization, pooling, reductions) run on NHWC tensors, with HWIO weights.

Invariant: the pass only changes where values are stored, never a value: every output of the
module is the array of the NCHW module it was given. Layouts change at the module's edges
only, by ``permute_dims``.

Why: an im2col row of an NHWC image is a run of contiguous channel vectors, a 1x1 convolution
needs no im2col at all (the image is already its ``[N*H*W, C]`` GEMM operand), the GEMM's
``[N*OH*OW, O]`` result is the NHWC output without a transpose, and per-channel requantization,
depthwise convolution and pooling vectorize over the channels (``tvm_schedule_cpu``); in HWIO
a depthwise kernel's channels are contiguous too (in OHWI they would be a strided gather).

Steps, each a Relax rewrite of TVM's own:

1. ``clamps_as_min_max``: an integer ``clip`` becomes ``minimum(maximum(x, low), high)``
   with scalar bounds (the same integers); TVM 0.27's ``ConvertLayout`` has no layout rule
   for ``clip`` and would transpose back to NCHW before each requantization's clamp.
2. ``ConvertLayout`` with ``DESIRED_LAYOUTS``: TVM's layout propagation through elementwise,
   pooling and reduction ops. Per-channel constants take part because the emitters give them
   the rank of the tensor they scale (``tvm_int_rules``).
3. ``widen_after_transpose``: ``permute_dims(astype(x) [- zp])`` becomes
   ``astype(permute_dims(x)) [- zp]`` for a scalar ``zp``, so that a convolution fed from the
   module's NCHW input keeps the ``astype(x) - zp`` operand the kernel rewrite matches
   (``tvm_kernels_conv``); the transpose then moves 8-bit codes, not int32.
4. ``FoldConstant``: the transposed weights and per-channel constants become constants again.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, rewrite_call, wildcard

from lowbit.compiler.types import INT_DTYPES

DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}
"""``ConvertLayout``'s target: data, kernel (output follows the data)."""


def channels_last() -> tvm.transform.Pass:
    """The module pass: steps 1-4 of the module docstring."""
    return tvm.transform.Sequential([
        _rewrite_pass("LowbitClampsAsMinMax", _clamp_pattern(), _clamp_as_min_max),
        relax.transform.ConvertLayout(DESIRED_LAYOUTS),
        *(_rewrite_pass(f"LowbitWidenAfterTranspose{int(shifted)}", pattern, rewrite)
          for shifted in (True, False)
          for pattern, rewrite in [_widen_after_transpose(shifted)]),
        relax.transform.FoldConstant(),
    ], name="LowbitChannelsLast")


def _rewrite_pass(name: str, pattern: DFPattern, rewrite) -> tvm.transform.Pass:  # noqa: ANN001
    @tvm.transform.module_pass(opt_level=0, name=name)
    def run(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {gv: rewrite_call(pattern, rewrite, func)
                   for gv, func in mod.functions_items() if isinstance(func, relax.Function)}
        for gv, func in updates.items():
            mod[gv] = func
        return mod

    return run


def _one_value(constant: relax.Expr) -> bool:
    return all(int(d) == 1 for d in constant.ty.shape.values)


def _clamp_pattern() -> DFPattern:
    return is_op("relax.clip")(wildcard(), wildcard(), wildcard())


def _clamp_as_min_max(call: relax.Call, _matches: dict[DFPattern, relax.Expr]) -> relax.Expr:
    x, low, high = call.args
    dtype = str(call.ty.dtype)
    if dtype not in INT_DTYPES:
        return call
    info = np.iinfo(dtype)
    out = x
    if int(low.value) > info.min:
        out = relax.op.maximum(out, relax.const(int(low.value), dtype))
    if int(high.value) < info.max:
        out = relax.op.minimum(out, relax.const(int(high.value), dtype))
    return out


def _widen_after_transpose(shifted: bool):  # noqa: ANN202 - (pattern, rewrite)
    x, zero_point = wildcard(), is_const()
    wide = is_op("relax.astype")(x)
    pattern = is_op("relax.permute_dims")(
        is_op("relax.subtract")(wide, zero_point) if shifted else wide)

    def rewrite(call: relax.Call, matches: dict[DFPattern, relax.Expr]) -> relax.Expr:
        if str(call.ty.dtype) not in INT_DTYPES or shifted and not _one_value(matches[zero_point]):
            return call
        moved = relax.op.astype(relax.op.permute_dims(matches[x], call.attrs.axes),
                                str(call.ty.dtype))
        return relax.op.subtract(moved, matches[zero_point]) if shifted else moved

    return pattern, rewrite


__all__ = ["DESIRED_LAYOUTS", "channels_last"]
