"""``lowbit compile --target`` writes a TVM library into the compile directory, and
``lowbit run DIR --backend tvm`` runs it bit-exact with the reference interpreter.

The contract checked: the library and its manifest entry (target, module target, file, TVM
versions); outputs equal to ``run_graph`` on the directory's integer program on real and random
inputs; bad inputs rejected like the other backends (exit 2, one line naming the npz file, no
output written); ``--target none`` builds nothing and the tvm backend says so; ``npu:SPEC``
adds the partition report and runs bit-exact; a CUDA library is built without a GPU and
refused clearly where none is (bit-exact where one is); a failed build leaves an existing
directory as it was. aarch64 libraries are run in ``test_aarch64``.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from lowbit.cli.main import main
from lowbit.compiler.artifact import load_program
from lowbit.models import get_model
from lowbit.runtime import run_graph

tvm = pytest.importorskip("tvm")

from lowbit.compiler.codegen import tvm_build  # noqa: E402

from tests.integer_graphs import assert_same  # noqa: E402
from tests.test_cli import _one_line_error, _onnx_model, _run_cli  # noqa: E402

EM_X86_64 = 62


def has_gpu() -> bool:
    return bool(tvm.runtime.enabled("cuda") and tvm.cuda(0).exist)


@pytest.fixture(scope="module")
def cnn_dir(tmp_path_factory):
    """digits-cnn compiled with the default target."""
    out = tmp_path_factory.mktemp("tvm-cli") / "cnn"
    assert main(["compile", "digits-cnn", "--calib-samples", "64", "--out", str(out)]) == 0
    return out


@pytest.fixture
def relu_model(tmp_path):
    """A one-op ONNX model and its calibration file, for the quick cases."""
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((16, 3)).astype(np.float32))
    np.savez(tmp_path / "x.npz", x=rng.standard_normal((4, 3)).astype(np.float32))
    return _onnx_model(tmp_path), tmp_path / "calib.npz", tmp_path / "x.npz"


def run_cli_backend(capsys, directory, feeds: dict[str, np.ndarray], folder, backend: str
                    ) -> dict[str, np.ndarray]:
    np.savez(folder / "x.npz", **feeds)
    code, _, _ = _run_cli(capsys, "run", str(directory), "--input", str(folder / "x.npz"),
                          "--output", str(folder / f"{backend}.npz"), "--backend", backend)
    assert code == 0
    with np.load(folder / f"{backend}.npz") as data:
        return dict(data)


def test_the_default_target_writes_a_host_library_and_its_manifest_entry(cnn_dir) -> None:
    entry = json.loads((cnn_dir / "manifest.json").read_text())["tvm"]
    assert {k: entry[k] for k in ("target", "module_target", "library", "device", "tvm")} == {
        "target": "llvm", "module_target": "llvm", "library": "model.so", "device": "cpu",
        "tvm": tvm.__version__}
    assert entry["tvm_target"]["kind"] == "llvm" and entry["build_seconds"] > 0
    header = (cnn_dir / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == EM_X86_64
    assert "## TVM library" in (cnn_dir / "report.md").read_text()


def test_run_backend_tvm_is_bit_exact_with_the_interpreter(cnn_dir, tmp_path, capsys) -> None:
    program = load_program(cnn_dir)
    real = get_model("digits-cnn").sample_inputs(32, "test")
    noise = np.random.default_rng(8).uniform(-1.0, 2.0, (5, 1, 8, 8)).astype(np.float32)
    for feeds in (real, {"image": noise}, {"image": real["image"][:1]}):
        got = run_cli_backend(capsys, cnn_dir, feeds, tmp_path, "tvm")
        assert_same(got, run_graph(program, feeds), f"batch {len(feeds['image'])}")
        assert_same(got, run_cli_backend(capsys, cnn_dir, feeds, tmp_path, "interp"), "interp")


@pytest.mark.parametrize("feeds, expected", [
    ({"image": np.zeros((2, 1, 8, 7), np.float32)}, "shape [2, 1, 8, 7]"),
    ({"image": np.zeros((2, 1, 8, 8), np.float64)}, "dtype float64"),
    ({"picture": np.zeros((2, 1, 8, 8), np.float32)}, "missing input"),
    ({"image": np.zeros((2, 1, 8, 8), np.float32), "extra": np.zeros(1)}, "unknown input"),
], ids=["shape", "dtype", "missing", "extra"])
def test_bad_inputs_are_refused_like_the_other_backends(cnn_dir, tmp_path, capsys, feeds,
                                                        expected) -> None:
    np.savez(tmp_path / "x.npz", **feeds)
    out = tmp_path / "y.npz"
    code, _, err = _run_cli(capsys, "run", str(cnn_dir), "--input", str(tmp_path / "x.npz"),
                            "--output", str(out), "--backend", "tvm")
    line = _one_line_error(err)
    assert code == 2 and expected in line and f"file {tmp_path / 'x.npz'}" in line
    assert not out.exists()


def test_target_none_builds_nothing_and_the_tvm_backend_says_so(relu_model, tmp_path,
                                                                 capsys) -> None:
    model, calib, inputs = relu_model
    out = tmp_path / "out"
    code, _, _ = _run_cli(capsys, "compile", str(model), "--calib", str(calib), "--out",
                          str(out), "--target", "none")
    assert code == 0 and not (out / "model.so").exists()
    assert json.loads((out / "manifest.json").read_text())["tvm"] is None
    code, _, err = _run_cli(capsys, "run", str(out), "--input", str(inputs), "--output",
                            str(tmp_path / "y.npz"), "--backend", "tvm")
    assert code == 2 and "no TVM library" in _one_line_error(err) and f"file {out}" in err


def test_the_tvm_backend_needs_a_compile_directory(relu_model, tmp_path, capsys) -> None:
    model, _, inputs = relu_model
    code, _, err = _run_cli(capsys, "run", str(model), "--input", str(inputs), "--output",
                            str(tmp_path / "y.npz"), "--backend", "tvm")
    assert code == 2 and "not a lowbit compile directory" in _one_line_error(err)


@pytest.mark.parametrize("target", ["npu", "llvm:x", "x86", "npu:"])
def test_a_malformed_target_is_refused_before_anything_runs(relu_model, tmp_path, capsys,
                                                            target: str) -> None:
    model, calib, _ = relu_model
    with pytest.raises(SystemExit) as exit_:
        main(["compile", str(model), "--calib", str(calib), "--out", str(tmp_path / "out"),
              "--target", target])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "llvm|cuda|aarch64|npu:SPEC|none" in err
    assert not (tmp_path / "out").exists()


def test_a_failed_build_keeps_the_existing_directory(relu_model, tmp_path, capsys,
                                                     monkeypatch) -> None:
    model, calib, _ = relu_model
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier")
    spec = dataclasses.replace(tvm_build.TARGETS["aarch64"], cross_compiler="lowbit-no-such-cc")
    monkeypatch.setitem(tvm_build.TARGETS, "aarch64", spec)
    code, _, err = _run_cli(capsys, "compile", str(model), "--calib", str(calib), "--out",
                            str(out), "--target", "aarch64")
    last = err.strip().splitlines()[-1]  # after the calibration progress bar
    assert code == 2 and "Traceback" not in err
    assert last.startswith("lowbit compile: error: exporting for aarch64 needs the cross "
                           "compiler lowbit-no-such-cc")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [  # no staging folder left behind
        "Relu.onnx", "calib.npz", "out", "x.npz"]


def test_an_npu_target_writes_its_partition_report_and_runs_bit_exact(relu_model, tmp_path,
                                                                      capsys) -> None:
    model, calib, inputs = relu_model
    out = tmp_path / "npu"
    code, _, _ = _run_cli(capsys, "compile", str(model), "--calib", str(calib), "--out",
                          str(out), "--target", "npu:reference-int8")
    assert code == 0
    entry = json.loads((out / "manifest.json").read_text())["tvm"]
    assert (entry["target"], entry["module_target"]) == ("npu:reference-int8", "llvm")
    assert json.loads((out / entry["report"]).read_text())
    assert "## NPU partition" in (out / "report.md").read_text()
    with np.load(inputs) as data:
        feeds = dict(data)
    got = run_cli_backend(capsys, out, feeds, tmp_path, "tvm")
    assert_same(got, run_graph(load_program(out), feeds), "npu:reference-int8")


@pytest.fixture
def cuda_dir(relu_model, tmp_path, capsys):
    model, calib, _ = relu_model
    out = tmp_path / "cuda"
    code, _, _ = _run_cli(capsys, "compile", str(model), "--calib", str(calib), "--out",
                          str(out), "--target", "cuda")
    assert code == 0
    return out


def test_the_cuda_target_builds_without_a_gpu(cuda_dir) -> None:
    entry = json.loads((cuda_dir / "manifest.json").read_text())["tvm"]
    assert (entry["target"], entry["module_target"], entry["device"]) == ("cuda", "cuda", "cuda")
    assert entry["tvm_target"]["arch"] == "sm_90"
    assert b"__global__" in (cuda_dir / "model.so").read_bytes()  # the kernels' CUDA source


def test_a_cuda_library_is_refused_clearly_without_a_gpu(cuda_dir, relu_model, tmp_path,
                                                        capsys) -> None:
    if has_gpu():
        pytest.skip("this machine has a GPU: the CUDA library runs (next test)")
    _, _, inputs = relu_model
    code, _, err = _run_cli(capsys, "run", str(cuda_dir), "--input", str(inputs), "--output",
                            str(tmp_path / "y.npz"), "--backend", "tvm")
    assert code == 2 and "needs an NVIDIA GPU" in _one_line_error(err)
    assert not (tmp_path / "y.npz").exists()


def test_a_cuda_library_runs_bit_exact_on_a_gpu(cuda_dir, relu_model, tmp_path, capsys) -> None:
    if not has_gpu():
        pytest.skip("no CUDA GPU on this machine (tvm.cuda(0).exist is false)")
    _, _, inputs = relu_model
    with np.load(inputs) as data:
        feeds = dict(data)
    got = run_cli_backend(capsys, cuda_dir, feeds, tmp_path, "tvm")
    assert_same(got, run_graph(load_program(cuda_dir), feeds), "on the GPU")
