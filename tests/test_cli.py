"""The CLI contract: exit codes, one-line errors naming file/node/op, npz keyed by names,
no half-written outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lowbit.cli.main import main
from lowbit.compiler import save_graph
from lowbit.runtime import run_graph
from tests.graphs import conv_relu_linear


def _run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def graph_file(tmp_path):
    path = tmp_path / "tiny.lowbit"
    save_graph(conv_relu_linear(), path)
    return path


def _onnx_model(tmp_path, op_type: str = "Relu", name: str = "the_node", opset: int = 17):
    node = helper.make_node(op_type, ["x"], ["y"], name=name)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, path)
    return path


def test_capture_show_run_roundtrip(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path)
    out = tmp_path / "relu.lowbit"
    code, _, err = _run_cli(capsys, "capture", str(model), "--out", str(out))
    assert code == 0 and out.exists() and "relu 1" in err
    code, text, _ = _run_cli(capsys, "show", str(out))
    assert code == 0 and "relu" in text and "input  x: float32[N, 3]" in text
    feeds = tmp_path / "x.npz"
    np.savez(feeds, x=np.array([[-1, 2, -3], [4, -5, 6]], np.float32))
    result = tmp_path / "y.npz"
    code, _, _ = _run_cli(capsys, "run", str(out), "--input", str(feeds), "--output", str(result))
    assert code == 0
    with np.load(result) as data:
        np.testing.assert_array_equal(data["y"], [[0, 2, 0], [4, 0, 6]])


def test_run_output_keyed_by_output_name(graph_file, tmp_path, capsys) -> None:
    image = np.random.default_rng(0).standard_normal((3, 2, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "x.npz", image=image)
    code, _, _ = _run_cli(capsys, "run", str(graph_file), "--input", str(tmp_path / "x.npz"),
                          "--output", str(tmp_path / "y.npz"))
    assert code == 0
    with np.load(tmp_path / "y.npz") as data:
        assert data.files == ["logits"]
        want = run_graph(conv_relu_linear(), {"image": image})["logits"]
        np.testing.assert_array_equal(data["logits"], want)


def test_missing_file(tmp_path, capsys) -> None:
    missing = tmp_path / "nope.onnx"
    code, _, err = _run_cli(capsys, "capture", str(missing), "--out", str(tmp_path / "o.lowbit"))
    assert code == 2
    assert f"file {missing}" in _one_line_error(err) and "not found" in err


def test_unknown_model_name(tmp_path, capsys) -> None:
    code, _, err = _run_cli(capsys, "capture", "resnet9000", "--out", str(tmp_path / "o"))
    assert code == 2 and "digits-cnn" in _one_line_error(err)


def test_truncated_onnx(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path)
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    out = tmp_path / "o.lowbit"
    code, _, err = _run_cli(capsys, "capture", str(model), "--out", str(out))
    line = _one_line_error(err)
    assert code == 2 and f"file {model}" in line
    assert not out.exists()


def test_garbage_onnx(tmp_path, capsys) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\xff\x00not a protobuf at all" * 10)
    code, _, err = _run_cli(capsys, "capture", str(path), "--out", str(tmp_path / "o.lowbit"))
    assert code == 2 and f"file {path}" in _one_line_error(err)


def test_unsupported_op_names_file_node_and_op(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path, op_type="Det", name="my_det")
    code, _, err = _run_cli(capsys, "capture", str(model), "--out", str(tmp_path / "o.lowbit"))
    line = _one_line_error(err)
    assert code == 2
    assert f"file {model}" in line and "node my_det" in line and "op Det" in line


@pytest.mark.parametrize("feeds, expected", [
    ({"image": np.zeros((2, 2, 6, 5), np.float32)}, "shape [2, 2, 6, 5]"),
    ({"image": np.zeros((2, 2, 6, 6), np.float64)}, "dtype float64"),
    ({"picture": np.zeros((2, 2, 6, 6), np.float32)}, "missing input"),
    ({"image": np.zeros((2, 2, 6, 6), np.float32), "extra": np.zeros(1)}, "unknown input"),
], ids=["shape", "dtype", "missing", "extra"])
def test_bad_input_arrays(graph_file, tmp_path, capsys, feeds, expected) -> None:
    np.savez(tmp_path / "x.npz", **feeds)
    out = tmp_path / "y.npz"
    code, _, err = _run_cli(capsys, "run", str(graph_file), "--input", str(tmp_path / "x.npz"),
                            "--output", str(out))
    line = _one_line_error(err)
    assert code == 2 and expected in line and f"file {tmp_path / 'x.npz'}" in line
    assert not out.exists()


def test_bad_npz_file(graph_file, tmp_path, capsys) -> None:
    bad = tmp_path / "x.npz"
    bad.write_text("hello")
    code, _, err = _run_cli(capsys, "run", str(graph_file), "--input", str(bad), "--output",
                            str(tmp_path / "y.npz"))
    assert code == 2 and f"file {bad}" in _one_line_error(err)


def test_console_script_prints_no_traceback(tmp_path) -> None:
    model = _onnx_model(tmp_path, op_type="NonZero", name="nz")
    done = subprocess.run([sys.executable, "-m", "lowbit.cli.main", "capture", str(model),
                           "--out", str(tmp_path / "o.lowbit")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "node nz" in _one_line_error(done.stderr) and "op NonZero" in done.stderr


def test_compile_needs_calibration_for_a_file(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path)
    out = tmp_path / "out"
    code, _, err = _run_cli(capsys, "compile", str(model), "--out", str(out))
    assert code == 2 and "--calib" in _one_line_error(err) and f"file {model}" in err
    assert not out.exists()


def test_compile_with_calibration_missing_an_input(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path)
    np.savez(tmp_path / "calib.npz", wrong=np.zeros((4, 3), np.float32))
    code, _, err = _run_cli(capsys, "compile", str(model), "--calib", str(tmp_path / "calib.npz"),
                            "--out", str(tmp_path / "out"))
    line = _one_line_error(err)
    assert code == 2 and "lacks input(s) ['x']" in line and "calib.npz" in line
    assert not (tmp_path / "out").exists()


def test_compile_then_run_both_backends(tmp_path, capsys) -> None:
    model = _onnx_model(tmp_path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3)).astype(np.float32))
    out = tmp_path / "out"
    code, _, _ = _run_cli(capsys, "compile", str(model), "--calib", str(tmp_path / "calib.npz"),
                          "--out", str(out))
    assert code == 0
    assert {"manifest.json", "integer.lowbit", "model.onnx", "report.md"} <= {
        p.name for p in out.iterdir()}
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((5, 3)).astype(np.float32))
    results = {}
    for backend in ("interp", "onnx"):
        target = tmp_path / f"{backend}.npz"
        code, _, _ = _run_cli(capsys, "run", str(out), "--input", str(tmp_path / "x.npz"),
                              "--output", str(target), "--backend", backend)
        assert code == 0
        with np.load(target) as data:
            results[backend] = data["y"]
    assert np.array_equal(results["interp"], results["onnx"])
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 4), np.float32))
    code, _, err = _run_cli(capsys, "run", str(out), "--input", str(tmp_path / "bad.npz"),
                            "--output", str(tmp_path / "o.npz"), "--backend", "onnx")
    assert code == 2 and "shape [5, 4]" in _one_line_error(err)
