"""Scale reparameterization passes on the bundled digits models: float outputs after each pass
equal torch's output on the original model to 1e-5 (relative to the output range), every
captured node keeps an IR node (the pass manager checks), the stats reach the report, and the
log2 attention program is bit-exact between the interpreter, onnxruntime and TVM. MiniLM's
cases are in ``test_reparam_minilm`` (one file each keeps both under a minute)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.compiler.ir import Graph
from lowbit.models import get_model
from lowbit.passes.manager import PassManager
from lowbit.passes.quantize.pipeline import CLEANUP_PASSES, CompileOptions, compile_graph
from lowbit.passes.registry import PassInputs, make_passes
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error, run_onnxruntime, run_torch

CALIB = {"digits-cnn": 32, "digits-vit": 32, "minilm": 8}
TEST = {"digits-cnn": 16, "digits-vit": 16, "minilm": 4}
CASES = [("digits-cnn", "equalize"), ("digits-vit", "smooth-quant"), ("digits-vit", "awq"),
         ("digits-vit", "repq-vit-layernorm"), ("digits-vit", "repq-vit-softmax"),
         ("digits-vit", "equalize-attention")]


@functools.cache
def bundled(name: str) -> tuple[Graph, dict[str, np.ndarray], dict[str, np.ndarray],
                                dict[str, np.ndarray]]:
    """Captured graph, calibration inputs, test inputs and torch's outputs on them."""
    model = get_model(name)
    test = model.sample_inputs(TEST[name], "test")
    want = run_torch(model.load(), test, model.output_names)
    return capture_bundled(name), model.sample_inputs(CALIB[name], "calib"), test, want


@pytest.mark.parametrize("name, pass_name", CASES)
def test_pass_keeps_torch_output(name: str, pass_name: str) -> None:
    graph, calib, test, want = bundled(name)
    passes = make_passes(CLEANUP_PASSES + (pass_name,),
                         PassInputs(calib, {"bits": 4, "activation_bits": 4}))
    result, records = PassManager(passes).run(graph)
    assert records[-1].changed, records[-1].stats
    assert records[-1].stats["markdown"]  # the compile report's per-layer table
    got = run_graph(result, test)
    for output, expected in want.items():
        assert relative_error(got[output], expected) < 1e-5, output


@functools.cache
def log2_vit() -> Graph:
    graph, calib, _, _ = bundled("digits-vit")
    options = CompileOptions(bits=4, activation_bits=4, progress=False,
                             passes=("repq-vit-layernorm", "repq-vit-softmax"))
    result = compile_graph(graph, calib, options)
    assert result.lowering_stats["log2_softmax"] == ["softmax", "softmax_1"]
    assert not result.ranges.unproved, result.ranges.unproved
    return result.integer_graph


def test_log2_attention_program_is_shift_only_and_bit_exact_in_onnxruntime(tmp_path) -> None:
    program = log2_vit()
    histogram = program.op_histogram()
    assert histogram["int_log2_matmul"] == 2 and histogram["int_matmul"] == 2  # only q @ k^T
    _, _, test, _ = bundled("digits-vit")
    path = export_onnx(program, tmp_path / "vit.onnx")
    want = run_graph(program, test)
    got = run_onnxruntime(str(path), test)
    for name, expected in want.items():
        np.testing.assert_array_equal(got[name], expected)


def test_log2_attention_program_is_bit_exact_in_tvm() -> None:
    pytest.importorskip("tvm")
    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.runtime.tvm_backend import load_tvm

    program = log2_vit()
    _, _, test, _ = bundled("digits-vit")
    got = load_tvm(build(program, "llvm"))(test)
    for name, expected in run_graph(program, test).items():
        np.testing.assert_array_equal(got[name], expected)
