"""The plug-in API: a torch module of the test's own, captured, passed, compiled and run
through ``lowbit.*`` alone, checked against torch itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import lowbit


class TinyMlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.layers = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(),
                                          torch.nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def setup():
    module = TinyMlp().eval()
    rng = np.random.default_rng(1)
    calib = {"x": rng.normal(size=(64, 6)).astype(np.float32)}
    test = {"x": rng.normal(size=(9, 6)).astype(np.float32)}
    with torch.no_grad():
        expected = module(torch.from_numpy(test["x"])).numpy()
    return module, calib, test, expected


def test_capture_and_run_match_torch(setup) -> None:
    module, calib, test, expected = setup
    graph = lowbit.capture(module, {"x": calib["x"][:2]}, output_names=["y"])
    np.testing.assert_allclose(lowbit.run(graph, test)["y"], expected, rtol=1e-5, atol=1e-6)


def test_one_pass_alone_keeps_the_function(setup) -> None:
    module, calib, test, expected = setup
    graph = lowbit.capture(module, {"x": calib["x"][:2]}, output_names=["y"])
    cleaned = lowbit.run_pass("dead-code", graph)
    assert cleaned is not graph
    np.testing.assert_allclose(lowbit.run(cleaned, test)["y"], expected, rtol=1e-5, atol=1e-6)


def test_compile_gives_an_integer_program_close_to_torch(setup) -> None:
    module, calib, test, expected = setup
    graph = lowbit.capture(module, {"x": calib["x"][:2]}, output_names=["y"])
    result = lowbit.compile(graph, calib, bits=8)
    ops = {node.op for node in result.integer_graph.nodes}
    assert "linear" not in ops and "int_linear" in ops
    got = lowbit.run(result.integer_graph, test)["y"]
    assert np.abs(got - expected).max() < 0.05 * np.abs(expected).max()


def test_import_lowbit_stays_light() -> None:
    code = "import sys, lowbit; print(sorted(m for m in ('torch', 'tvm', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
