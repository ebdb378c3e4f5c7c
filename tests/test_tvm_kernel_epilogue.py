"""Requantization fused into the int8 GEMM kernel (``tvm_kernel_epilogue``): bit-exact against
the reference interpreter for linear and convolution programs on every runnable kernel row,
with per-channel and single multipliers, offsets, and int8 and int16 codes; no separate
kernel is left for the requantization; a product read twice is not fused (computed once).
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.compiler import GraphBuilder, Sym, TensorType
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from lowbit.compiler.codegen.tvm_emit import to_relax  # noqa: E402
from lowbit.compiler.codegen.tvm_layout import channels_last  # noqa: E402
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_MACS  # noqa: E402
from lowbit.compiler.codegen.tvm_kernels import (KERNEL_ATTR, MIN_AMX_MACS,  # noqa: E402
                                                 int8_gemm)

from tests.integer_graphs import assert_same, dyadic_pair, full_range  # noqa: E402
from tests.test_tvm_kernels import HOST, runnable_rows  # noqa: E402

RNG = np.random.default_rng(61)
N = Sym(1)


def product_then_requantize(op: str, x_type: TensorType, weight: np.ndarray, attrs: dict,
                            out_dtype: str, per_channel: bool, readers: int = 1):
    """``op`` then ``readers`` requantizations of its accumulator, each with its own
    multipliers (so that the readers share nothing after the accumulator) and output."""
    builder = GraphBuilder("epilogue")
    origin = builder.capture(op, op)
    x = builder.add_input("x", x_type)
    w = builder.add_constant(weight, "w")
    b = builder.add_constant(RNG.integers(-10**5, 10**5, weight.shape[0]).astype(np.int32), "b")
    acc = builder.add(op, [x, w, b], origin, attrs)
    channels = weight.shape[0]
    shape = (channels,) + (1,) * (x_type.rank - 2) if op == "int_conv" else (channels,)
    qmin, qmax = (-128, 127) if out_dtype == "int8" else (-32768, 32767)
    outputs = []
    for reader in range(readers):
        ratio = RNG.uniform(1e-4, 1e-2, channels if per_channel else 1)
        mult, shift = dyadic_pair(ratio, shape if per_channel else ())
        names = [acc, builder.add_constant(mult, f"mult{reader}"),
                 builder.add_constant(shift, f"shift{reader}")]
        outputs.append(builder.add("requantize", names, origin, {
            "zero_point": -3 + reader, "dtype": out_dtype, "qmin": qmin, "qmax": qmax}))
    return builder.finish(outputs)


def built(graph, row):
    module = to_relax(graph)
    pipeline = tvm.transform.Sequential([channels_last(), int8_gemm(HOST, row),
                                         relax.get_default_pipeline(HOST)])
    rewritten = int8_gemm(HOST, row)(channels_last()(module))
    executable = tvm.compile(module, HOST, relax_pipeline=pipeline)
    return relax.VirtualMachine(executable, tvm.cpu()), rewritten


def gemm_kernels(module: tvm.IRModule) -> list[str]:
    return [gv.name_hint for gv, f in module.functions_items()
            if f.attrs is not None and KERNEL_ATTR in f.attrs and "gemm" in str(f.attrs[KERNEL_ATTR])]


CASES = {
    "linear, per-channel, int8": ("int_linear", (7, 48), (40, 48), {"x_zero_point": -128},
                                  "int8", True),
    "linear, one multiplier, int16": ("int_linear", (96,), (24, 96), {"x_zero_point": 5},
                                      "int16", False),
    "conv 3x3, per-channel, int8": ("int_conv", (8, 6, 6), (16, 8, 3, 3),
                                    {"x_zero_point": -128, "strides": (1, 1),
                                     "pads": (1, 1, 1, 1), "dilations": (1, 1), "groups": 1},
                                    "int8", True),
}


@pytest.mark.parametrize("row", runnable_rows(), ids=lambda r: r.name)
@pytest.mark.parametrize("case", CASES)
def test_requantization_fused_into_the_gemm_is_bit_exact(case: str, row) -> None:
    op, x_shape, w_shape, attrs, out_dtype, per_channel = CASES[case]
    weight = RNG.integers(-128, 128, w_shape).astype(np.int8)
    graph = product_then_requantize(op, TensorType("int8", (N,) + x_shape), weight, attrs,
                                    out_dtype, per_channel)
    vm, module = built(graph, row)
    kernels = gemm_kernels(module)
    assert len(kernels) == 1 and kernels[0].endswith("ops"), kernels
    calls = [b.value for block in module["main"].body.blocks for b in block.bindings]
    assert not any(isinstance(c, relax.Call) and getattr(c.op, "name", "") == "relax.multiply"
                   for c in calls)  # the requantization's multiply went into the kernel
    macs = int(np.prod(w_shape)) * int(np.prod(x_shape[1:])) // (w_shape[1] if op == "int_linear"
                                                                  else 1)
    # in parallel from the third; the last one on the AMX row's tiles where the host has them
    for batch in (1, 5, MIN_MACS // max(macs, 1) + 1, MIN_AMX_MACS // max(macs, 1) + 1):
        x = full_range("int8", (batch,) + x_shape)
        x.reshape(-1)[:2] = (127, -128)
        got = vm["main"](tvm.runtime.tensor(x))
        assert_same({graph.outputs[0]: got.numpy()}, run_graph(graph, {"x": x}), case)


def test_a_product_read_twice_keeps_its_own_kernel() -> None:
    weight = RNG.integers(-128, 128, (32, 64)).astype(np.int8)
    graph = product_then_requantize("int_linear", TensorType("int8", (N, 64)), weight,
                                     {"x_zero_point": 0}, "int8", True, readers=2)
    vm, module = built(graph, runnable_rows()[0])
    # one product; the chain ends where the readers part: each keeps its multiply outside
    assert len(gemm_kernels(module)) == 1
    calls = [b.value for block in module["main"].body.blocks for b in block.bindings]
    assert sum(getattr(c.op, "name", "") == "relax.multiply" for c in calls
               if isinstance(c, relax.Call)) == 2
    x = full_range("int8", (9, 64))
    got = vm["main"](tvm.runtime.tensor(x))
    assert_same(dict(zip(graph.outputs, (v.numpy() for v in got))), run_graph(graph, {"x": x}),
                "two readers")
