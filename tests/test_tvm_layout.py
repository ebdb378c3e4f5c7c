"""Channels-last layout of the CPU pipeline (``tvm_layout``): the bundled CNN's convolutions,
requantizations and pooling all run in NHWC with transposes only at the module's edges, and
the pass changes no value (the module before and after gives the same arrays; the integer
clamp rewritten as minimum/maximum against numpy's clip, bounds at the dtype's limits
included).
"""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")

from tvm import relax  # noqa: E402

from lowbit.compiler.codegen.tvm_emit import to_relax  # noqa: E402
from lowbit.compiler.codegen.tvm_layout import channels_last  # noqa: E402

RNG = np.random.default_rng(16)


def _bindings(module: tvm.IRModule) -> list[relax.Call]:
    return [b.value for block in module["main"].body.blocks for b in block.bindings
            if isinstance(b.value, relax.Call) and isinstance(b.value.op, tvm.ir.Op)]


def _run(module: tvm.IRModule, *arrays: np.ndarray) -> np.ndarray:
    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(module, target), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in arrays]).numpy()


def test_the_cnn_runs_channels_last_between_its_edges() -> None:
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    model = get_model("digits-cnn")
    graph = compile_graph(capture_bundled(model.name), model.sample_inputs(64, "calib"),
                          CompileOptions(progress=False)).integer_graph
    module = to_relax(graph, "cpu")
    converted = channels_last()(module)
    calls = _bindings(converted)
    convs = [c for c in calls if c.op.name == "relax.nn.conv2d"]
    assert len(convs) == 4
    assert all((c.attrs.data_layout, c.attrs.kernel_layout) == ("NHWC", "HWIO") for c in convs)
    # one transpose of the image into NHWC, one of the pooled features before the flatten
    assert [c.op.name for c in calls].count("relax.permute_dims") == 2
    assert not any(c.op.name == "relax.clip" and "int" in str(c.ty.dtype) for c in calls)
    images = model.sample_inputs(5, "test")[graph.inputs[0]]
    assert np.array_equal(_run(converted, images), _run(module, images))


@pytest.mark.parametrize("dtype, low, high", [("int8", -128, 100), ("int8", -5, 127),
                                              ("int64", -128, 127), ("int16", -7, 9)])
def test_integer_clamps_become_min_max_with_the_same_values(dtype: str, low: int,
                                                            high: int) -> None:
    x = relax.Var("x", relax.TensorType([4, 64], dtype))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            out = builder.emit_output(builder.emit(relax.op.clip(x, low, high)))
        builder.emit_func_output(out)
    module = builder.get()
    converted = channels_last()(module)
    ops = [c.op.name for c in _bindings(converted)]
    info = np.iinfo(dtype)
    assert ops == ["relax.maximum"] * (low > info.min) + ["relax.minimum"] * (high < info.max)
    values = RNG.integers(max(info.min, -2**40), min(info.max, 2**40), (4, 64), endpoint=True)
    values[0, :2] = info.min, info.max
    values = values.astype(dtype)
    assert np.array_equal(_run(converted, values), np.clip(values, low, high))
