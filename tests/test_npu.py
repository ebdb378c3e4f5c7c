"""NPU partitions: spec files, the partition and its report, and the reference NPU's C kernels
bit-exact against the interpreter.

Expected outputs always come from ``run_graph`` (the numpy interpreter); expected partitions
are written out by hand from the spec's rules (which op kinds, bit widths and shapes the
reference int8 NPU runs). Hand-made programs run on full-range int8 inputs (the one with every
op kind at batch 1 and 3), the bundled models on real test images and random ones.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from lowbit.compiler import Graph, GraphBuilder, LowbitError, Sym, TensorType
from lowbit.compiler.codegen.npu import bundled_specs, load_spec
from lowbit.kernels import dyadic
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from lowbit.compiler.codegen.npu import NpuBuild, build_npu  # noqa: E402 - after the TVM check
from lowbit.compiler.codegen.tvm_build import device_source, export_library  # noqa: E402
from lowbit.runtime.tvm_backend import load_tvm, run_tvm  # noqa: E402

from tests.integer_graphs import assert_same  # noqa: E402

RNG = np.random.default_rng(41)
N = Sym(1)
REFERENCE = "reference-int8"


def offloaded(build: NpuBuild) -> dict[str, str]:
    """Offloaded node name -> NPU op kind."""
    return {entry["node"]: entry["npu_op"] for entry in build.report_json()["offloaded"]}


def fallbacks(build: NpuBuild) -> dict[str, str]:
    """Host node name -> reason."""
    return {entry["node"]: entry["reason"] for entry in build.report_json()["fallbacks"]}


# -- a hand-made program with every NPU op kind ----------------------------------------------
def weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def biases(rng: np.random.Generator, size: int, bound: int) -> np.ndarray:
    return rng.integers(-bound, bound, size).astype(np.int32)


class ProgramBuilder:
    """A ``GraphBuilder`` with one origin for every node and constants named after nodes."""

    def __init__(self, name: str) -> None:
        self.b = GraphBuilder(name)
        self.origin = self.b.capture(name, "test")

    def node(self, op: str, name: str, inputs: list[str], **attrs: object) -> str:
        return self.b.add(op, inputs, self.origin, attrs, hint=name)

    def const(self, array: np.ndarray, name: str) -> str:
        return self.b.add_constant(array, name)

    def requantize(self, acc: str, name: str, scales: np.ndarray, shape: tuple[int, ...],
                   **attrs: object) -> str:
        mult, shift = dyadic(scales)
        return self.node("requantize", name, [acc, self.const(mult.reshape(shape), f"{name}.m"),
                                              self.const(shift.reshape(shape), f"{name}.s")],
                         **attrs)


INT8 = {"dtype": "int8", "qmin": -128, "qmax": 127}
CONV = {"dilations": (1, 1), "pads": (1, 1, 1, 1)}


def every_kind_program(seed: int = 7) -> Graph:
    """conv (stride 2, padded, zero point, ReLU clamp) -> depthwise conv -> residual add ->
    max pool -> global average pool -> reshape -> fully connected to int16."""
    rng = np.random.default_rng(seed)
    p = ProgramBuilder("every-kind")
    x = p.b.add_input("x", TensorType("int8", (N, 4, 9, 9)))
    conv = p.node("int_conv", "conv", [x, p.const(weights(rng, 8, 4, 3, 3), "w1"),
                                       p.const(biases(rng, 8, 5000), "b1")],
                  x_zero_point=3, strides=(2, 2), groups=1, **CONV)
    relu = p.requantize(conv, "conv.rq", rng.uniform(2e-4, 9e-4, 8), (8, 1, 1),
                        zero_point=-5, dtype="int8", qmin=-5, qmax=127)
    depthwise = p.node("int_conv", "depthwise", [relu, p.const(weights(rng, 8, 1, 3, 3), "wd")],
                       x_zero_point=0, strides=(1, 1), groups=8, **CONV)
    depthwise = p.requantize(depthwise, "depthwise.rq", np.full(8, 3e-3), (8, 1, 1),
                             zero_point=4, **INT8)
    total = p.node("int_add", "residual", [relu, depthwise], a_zero_point=-5, b_zero_point=4,
                   a_mult=(1 << 29) + 12345, b_mult=3 << 27, shift=30, zero_point=2, **INT8)
    pool = p.node("max_pool", "pool", [total], kernel=(3, 3), strides=(2, 2),
                  pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=False)
    mean = p.node("int_sum", "mean", [pool], axes=(2, 3), keepdims=True, zero_point=2)
    mean = p.requantize(mean, "mean.rq", np.array(1 / 9), (), zero_point=0, **INT8)
    flat = p.node("reshape", "flat", [mean], shape=(N, 8))
    fc = p.node("int_linear", "fc", [flat, p.const(weights(rng, 5, 8), "wf"),
                                     p.const(biases(rng, 5, 900), "bf")], x_zero_point=0)
    out = p.requantize(fc, "fc.rq", rng.uniform(0.01, 0.05, 5), (5,), zero_point=100,
                       dtype="int16", qmin=-32768, qmax=32767)
    return p.b.finish([out])


def feeds_for(graph: Graph, batch: int) -> dict[str, np.ndarray]:
    """Full-range int8 inputs, the same for the same batch size."""
    rng = np.random.default_rng(batch)
    feeds = {}
    for name in graph.inputs:
        t = graph.types[name]
        shape = tuple(d.coeff * batch if isinstance(d, Sym) else d for d in t.shape)
        feeds[name] = rng.integers(-128, 128, shape).astype(t.dtype)
    return feeds


@pytest.fixture(scope="module")
def every_kind() -> tuple[Graph, NpuBuild]:
    graph = every_kind_program()
    return graph, build_npu(graph, REFERENCE)


def test_every_kind_is_offloaded_and_bit_exact(every_kind) -> None:
    graph, build = every_kind
    assert offloaded(build) == {
        "conv": "conv2d", "conv.rq": "conv2d", "depthwise": "depthwise_conv2d",
        "depthwise.rq": "depthwise_conv2d", "residual": "add", "pool": "max_pool2d",
        "mean": "global_avg_pool2d", "mean.rq": "global_avg_pool2d",
        "fc": "fully_connected", "fc.rq": "fully_connected"}
    assert fallbacks(build) == {"flat": "no NPU op kind runs reshape"}
    source = device_source(build.executable, "c")  # what the C compiler gets
    assert source.count("static void npu_kernel_") == 6
    assert source.count("TVM_FFI_DLL_EXPORT int32_t __tvm_ffi_") == 2
    program = load_tvm(build.executable)
    for batch in (1, 3):
        feeds = feeds_for(graph, batch)
        assert_same(program(feeds), run_graph(graph, feeds), f"at batch {batch}")


def test_a_region_value_the_host_also_reads_is_written_to_its_output() -> None:
    """``conv.rq`` is a graph output and feeds the rest of its region: the region returns it
    through an alias binding, and the C code must write it into the VM's output tensor."""
    graph = every_kind_program()
    graph.outputs = ["conv.rq", *graph.outputs]
    build = build_npu(graph, REFERENCE)
    assert "conv.rq" in offloaded(build) and len(build.report_json()["regions"]) == 2
    feeds = feeds_for(graph, 2)
    assert_same(run_tvm(build.executable, feeds), run_graph(graph, feeds), "with conv.rq out")


def test_requantize_epilogue_at_ties_and_extremes() -> None:
    """An identity fully connected layer feeds each input code straight to the epilogue:
    shift 1 makes every odd code a tie (-3/2 rounds to -1), and the other channels take the
    largest multiplier, shifts 0 and 62, and biases near the int32 bound."""
    p = ProgramBuilder("epilogue")
    x = p.b.add_input("x", TensorType("int8", (N, 6)))
    bias = np.array([0, 0, 1 << 30, -(1 << 30), 0, 12345], np.int32)
    fc = p.node("int_linear", "fc", [x, p.const(np.eye(6, dtype=np.int8), "w"),
                                     p.const(bias, "b")], x_zero_point=0)
    mult = np.array([1, 3, (1 << 31) - 1, (1 << 31) - 1, 1, 1 << 30], np.int64)
    shift = np.array([1, 2, 62, 40, 0, 31], np.int64)
    out = p.node("requantize", "fc.rq", [fc, p.const(mult, "m"), p.const(shift, "s")],
                 zero_point=-3, dtype="int16", qmin=-32768, qmax=32767)
    graph = p.b.finish([out])
    build = build_npu(graph, REFERENCE)
    assert set(offloaded(build)) == {"fc", "fc.rq"}
    codes = np.arange(-128, 128, dtype=np.int8)
    feeds = {"x": np.repeat(codes[:, None], 6, axis=1)}
    assert_same(run_tvm(build.executable, feeds), run_graph(graph, feeds), "every int8 code")


def test_shares_count_ops_and_macs_of_one_sample(every_kind) -> None:
    _, build = every_kind
    report = build.report_json()
    assert report["ops"] == {"total": 11, "offloaded": 10, "share": 10 / 11}
    # conv 8x5x5 outputs x 36 taps, depthwise 8x5x5 x 9 taps, fc 5 x 8: all on the NPU
    macs = 8 * 25 * 36 + 8 * 25 * 9 + 5 * 8
    assert report["macs"] == {"total": macs, "offloaded": macs, "share": 1.0,
                              "unit": "MACs per sample"}
    assert [r["nodes"] for r in report["regions"]] == [
        ["conv", "conv.rq", "depthwise", "depthwise.rq", "residual", "pool", "mean", "mean.rq"],
        ["fc", "fc.rq"]]


def test_a_spec_without_an_op_or_bit_width_leaves_it_on_the_host(every_kind, tmp_path) -> None:
    graph, _ = every_kind
    spec = json.loads(Path(load_spec(REFERENCE).source).read_text())
    del spec["ops"]["add"]
    spec["ops"]["fully_connected"]["output"] = ["int8"]
    spec["ops"]["conv2d"]["strides"] = [[1, 1]]
    spec["name"] = "no-add"
    path = tmp_path / "no-add.json"
    path.write_text(json.dumps(spec))
    build = build_npu(graph, str(path))
    host = fallbacks(build)
    assert host["residual"] == "the spec 'no-add' does not list add"
    assert host["fc"] == "output is int16; the spec allows ['int8']"
    assert host["fc.rq"].startswith("epilogue of fc (int_linear), which stays on the host")
    assert host["conv"] == "stride [2, 2] not in the spec's [[1, 1]]"
    assert set(offloaded(build)) == {"depthwise", "depthwise.rq", "pool", "mean", "mean.rq"}
    markdown = build.report_markdown()
    assert "| `residual` | int_add | the spec 'no-add' does not list add |" in markdown
    feeds = feeds_for(graph, 2)
    assert_same(run_tvm(build.executable, feeds), run_graph(graph, feeds), "with no-add")


def test_a_spec_with_no_ops_leaves_everything_on_the_host(every_kind, tmp_path) -> None:
    graph, _ = every_kind
    path = tmp_path / "empty.json"
    path.write_text(json.dumps({"format": "lowbit-npu-spec", "version": 1, "name": "empty",
                                "ops": {}}))
    build = build_npu(graph, str(path))
    assert offloaded(build) == {} and build.report_json()["regions"] == []
    assert fallbacks(build)["conv"] == "the spec 'empty' does not list conv2d"
    feeds = feeds_for(graph, 2)
    assert_same(run_tvm(build.executable, feeds), run_graph(graph, feeds), "all on the host")


# -- spec files --------------------------------------------------------------------------------
def test_the_reference_spec_is_bundled() -> None:
    assert REFERENCE in bundled_specs()
    spec = load_spec(REFERENCE)
    assert set(spec.ops) == {"conv2d", "depthwise_conv2d", "fully_connected", "add",
                             "max_pool2d", "global_avg_pool2d"}
    assert spec.ops["conv2d"].input == {"int8"} and spec.accumulator == "int32"


BAD_SPECS = {
    "not json": ("{ops: ", "cannot read the NPU spec"),
    "unknown op": ('{"format": "lowbit-npu-spec", "version": 1, "name": "x", '
                   '"ops": {"softmax": {"input": ["int8"]}}}', "unknown key(s) ['softmax']"),
    "bad dtype": ('{"format": "lowbit-npu-spec", "version": 1, "name": "x", '
                  '"ops": {"add": {"input": ["int7"]}}}', "ops.add.input must be a list"),
    "bad kernel": ('{"format": "lowbit-npu-spec", "version": 1, "name": "x", '
                   '"ops": {"conv2d": {"input": ["int8"], "kernel_sizes": [3]}}}',
                   "ops.conv2d.kernel_sizes"),
    "wrong format": ('{"format": "onnx", "version": 1, "name": "x", "ops": {}}',
                     "'format' must be"),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_a_bad_spec_file_is_an_error_naming_it(case: str, tmp_path) -> None:
    text, message = BAD_SPECS[case]
    path = tmp_path / "npu.json"
    path.write_text(text)
    with pytest.raises(LowbitError, match=str(path)) as info:
        load_spec(str(path))
    assert message in str(info.value)


def test_a_missing_spec_file_is_an_error_naming_it(tmp_path) -> None:
    with pytest.raises(LowbitError, match="no such NPU spec file") as info:
        build_npu(every_kind_program(), str(tmp_path / "absent.json"))
    assert str(tmp_path / "absent.json") in str(info.value)


# -- the bundled models ------------------------------------------------------------------------
@functools.cache
def lowered_program(name: str) -> tuple[object, Graph]:
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

    model = get_model(name)
    program = compile_graph(capture_bundled(name), model.sample_inputs(64, "calib"),
                            CompileOptions(progress=False)).integer_graph
    return model, program


@functools.cache
def bundled_build(name: str) -> NpuBuild:
    return build_npu(lowered_program(name)[1], REFERENCE)


def _check_bundled(name: str) -> None:
    model, program = lowered_program(name)
    runnable = load_tvm(bundled_build(name).executable)
    images = model.sample_inputs(8, "test")["image"]
    for feeds in ({"image": images}, {"image": RNG.uniform(-1, 2, (3, *images.shape[1:]))
                                      .astype(images.dtype)}):
        assert_same(runnable(feeds), run_graph(program, feeds), f"{name} on the NPU")


def test_digits_cnn_offloads_its_convolutions_pooling_and_classifier() -> None:
    build = bundled_build("digits-cnn")
    _check_bundled("digits-cnn")
    npu = offloaded(build)
    assert set(npu.values()) == {"conv2d", "depthwise_conv2d", "max_pool2d", "fully_connected"}
    program = lowered_program("digits-cnn")[1]
    assert {n.op for n in program.nodes if n.name in npu} == {
        "int_conv", "requantize", "max_pool", "int_linear"}
    assert [n.name for n in program.nodes if n.op in ("int_conv", "int_linear")
            and n.name not in npu] == []
    host = fallbacks(build)
    assert host["mean.sum"] == "input is int16; the spec allows ['int8']"
    report = build.report_json()
    assert 0 < report["ops"]["share"] < 1 and report["macs"]["share"] == 1.0
    assert report["ops"]["offloaded"] + len(host) == len(program.nodes)


def test_digits_vit_offloads_every_int8_linear() -> None:
    """The MLP's second linears read GELU's 15-bit codes (int16), which the int8 spec
    refuses with that reason; every other linear runs on the NPU."""
    build = bundled_build("digits-vit")
    _check_bundled("digits-vit")
    program = lowered_program("digits-vit")[1]
    npu, host = offloaded(build), fallbacks(build)
    linears = [n for n in program.nodes if n.op == "int_linear"]
    wide = [n.name for n in linears if program.types[n.inputs[0]].dtype == "int16"]
    assert len(linears) == 13 and len(wide) == 2
    assert all(npu[n.name] == "fully_connected" for n in linears if n.name not in wide)
    assert all(host[name] == "input is int16; the spec allows ['int8']" for name in wide)
    assert host["matmul.acc"] == "no NPU op kind runs int_matmul"
    assert host["add_107"] == "input is int16; the spec allows ['int8']"
    assert 0.5 < build.report_json()["macs"]["share"] < 1


def test_exported_npu_library_reloads_and_runs_bit_exact(tmp_path) -> None:
    model, program = lowered_program("digits-cnn")
    path = export_library(bundled_build("digits-cnn").executable, tmp_path / "npu.so")
    feeds = model.sample_inputs(5, "test")
    assert_same(run_tvm(path, feeds), run_graph(program, feeds), f"from {path}")
