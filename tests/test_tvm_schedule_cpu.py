"""The default CPU schedule (``tvm_schedule_cpu``) and the parallel gate (``tvm_parallel_gate``).

Every PrimFunc of a lowered program leaves the pipeline scheduled (a lowbit kernel or the
default schedule), and the ops the default schedule covers (depthwise convolutions with their
padded copy, pooling, sums, requantization) stay bit-exact with the interpreter on both sides
of the gate: at batch 1 (serial loops) and at a batch whose call reaches ``MIN_ELEMENTS``
(parallel loops).
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit.compiler import Graph, Sym, TensorType
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from tvm.relax.analysis import has_reshape_pattern  # noqa: E402 - after the TVM check

from lowbit.compiler.codegen.tvm_build import TARGETS, build  # noqa: E402
from lowbit.compiler.codegen.tvm_emit import to_relax  # noqa: E402
from lowbit.compiler.codegen.tvm_kernels_batched import KERNEL_ATTR  # noqa: E402
from lowbit.compiler.codegen.tvm_parallel_gate import MIN_ELEMENTS  # noqa: E402
from lowbit.compiler.codegen.tvm_schedule_cpu import SCHEDULED, scheduled_passes  # noqa: E402
from lowbit.runtime.tvm_backend import load_tvm  # noqa: E402

from tests.integer_graphs import assert_same, dyadic_pair, i8, one_op, random_feeds  # noqa: E402

RNG = np.random.default_rng(29)
N = Sym(1)


def parallel_batch(graph: Graph) -> int:
    """A batch at which the graph's input alone has ``MIN_ELEMENTS`` elements."""
    per_sample = int(np.prod(graph.types[graph.inputs[0]].shape[1:]))
    return MIN_ELEMENTS // per_sample + 1


def assert_bit_exact_both_sides(graph: Graph) -> None:
    program = load_tvm(build(graph, "llvm"))
    feeds = random_feeds(graph)
    for batch in (1, parallel_batch(graph)):
        feed = feeds(batch)
        assert_same(program(feed), run_graph(graph, feed), f"at batch {batch}")


def test_depthwise_convolution_with_requantization() -> None:
    w, b = i8(6, 1, 3, 3), RNG.integers(-10**5, 10**5, 6).astype(np.int32)
    conv = one_op("int_conv", [TensorType("int8", (N, 6, 8, 8)), w, b],
                  {"x_zero_point": -7, "strides": (1, 1), "pads": (1, 1, 1, 1),
                   "dilations": (1, 1), "groups": 6})
    assert_bit_exact_both_sides(conv)


def test_max_pool() -> None:
    assert_bit_exact_both_sides(one_op("max_pool", [TensorType("int8", (N, 4, 8, 8))], {
        "kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0), "dilations": (1, 1),
        "ceil_mode": False}))


def test_sum_over_the_image() -> None:
    assert_bit_exact_both_sides(one_op("int_sum", [TensorType("int16", (N, 16, 4, 4))],
                                       {"axes": (2, 3), "keepdims": True, "zero_point": -3}))


def test_requantize_per_channel() -> None:
    mult, shift = dyadic_pair(RNG.uniform(1e-4, 3e-4, 8), (8, 1, 1))
    offset = RNG.integers(-2**40, 2**40, (8, 1, 1))
    assert_bit_exact_both_sides(one_op(
        "requantize", [TensorType("int32", (N, 8, 4, 4)), mult, shift, offset],
        {"zero_point": -128, "dtype": "int8", "qmin": -128, "qmax": 127}))


def test_every_primfunc_of_the_lowered_cnn_is_scheduled() -> None:
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    model = get_model("digits-cnn")
    graph = compile_graph(capture_bundled(model.name), model.sample_inputs(64, "calib"),
                          CompileOptions(progress=False)).integer_graph
    target = TARGETS["llvm"].make()
    with target:
        module = tvm.transform.Sequential(scheduled_passes(target))(to_relax(graph, "cpu"))
    funcs = {gv.name_hint: f.attrs or {} for gv, f in module.functions_items()
             if isinstance(f, tvm.tirx.PrimFunc) and not has_reshape_pattern(f)}  # views
    assert len(funcs) >= 12  # 4 GEMMs with their requantization, 2 im2cols, 6 others
    assert [name for name, attrs in funcs.items()
            if KERNEL_ATTR not in attrs and SCHEDULED not in attrs] == []
