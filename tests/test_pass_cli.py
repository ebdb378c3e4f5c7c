"""``lowbit pass``: every registered pass runs alone, ONNX in and ONNX out; the equivalence
passes' outputs load in onnxruntime and match the input model's outputs (onnxruntime on the
input ONNX file, the independent reference) to 1e-5 relative."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lowbit.cli.main import main
from lowbit.compiler.exporters import export_onnx
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.passes.registry import registered_passes
from lowbit.runtime.references import relative_error, run_onnxruntime

MODELS = ("digits-cnn", "digits-vit")


class ConvBatchNormNet(torch.nn.Module):
    """A model of the test's own, not bundled: conv, BatchNorm, ReLU, conv, pooling, linear."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
            torch.nn.Conv2d(8, 6, 3, stride=2), torch.nn.ReLU())
        self.head = torch.nn.Linear(6, 4)
        with torch.no_grad():
            bn = self.features[1]
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 2), bn.bias.uniform_(-1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def onnx_models(tmp_path_factory) -> dict[str, tuple[str, str, dict[str, np.ndarray]]]:
    """name -> (model.onnx, calib.npz, test feeds): the user's own net and the bundled ones."""
    folder = tmp_path_factory.mktemp("pass")
    models = {}
    net = ConvBatchNormNet().eval()
    rng = np.random.default_rng(0)
    path = folder / "own.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 10, 10),), path, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                      dynamo=False)
    calib = {"x": rng.normal(size=(32, 3, 10, 10)).astype(np.float32)}
    models["own"] = (str(path), calib, {"x": rng.normal(size=(5, 3, 10, 10)).astype(np.float32)})
    for name in MODELS:
        path = folder / f"{name}.onnx"
        export_onnx(capture_bundled(name), path)
        model = get_model(name)
        models[name] = (str(path), model.sample_inputs(32, "calib"),
                        model.sample_inputs(16, "test"))
    for name, (path, calib, feeds) in models.items():
        np.savez(folder / f"{name}.calib.npz", **calib)
        models[name] = (path, str(folder / f"{name}.calib.npz"), feeds)
    return models


def test_list_names_every_registered_pass(capsys) -> None:
    assert main(["pass", "--list"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == set(registered_passes())


@pytest.mark.parametrize("pass_name", sorted(name for name, entry in registered_passes().items()
                                             if entry.equivalence))
@pytest.mark.parametrize("model", ("own",) + MODELS)
def test_equivalence_pass_keeps_onnxruntime_outputs(onnx_models, tmp_path, pass_name: str,
                                                    model: str) -> None:
    source, calib, feeds = onnx_models[model]
    out = tmp_path / "out.onnx"
    assert main(["pass", pass_name, source, "-o", str(out), "--calib", calib]) == 0
    before, after = run_onnxruntime(source, feeds), run_onnxruntime(str(out), feeds)
    assert before.keys() == after.keys()
    for name in before:
        assert relative_error(after[name], before[name]) < 1e-5, name


def test_fold_batch_norm_removes_the_batch_norm(onnx_models, tmp_path) -> None:
    import onnx

    out = tmp_path / "folded.onnx"
    assert main(["pass", "fold-batch-norm", onnx_models["own"][0], "-o", str(out)]) == 0
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 2


@pytest.mark.parametrize("argv, message", [
    (["pass", "no-such-pass", "digits-cnn", "-o", "x.onnx"], "unknown pass 'no-such-pass'"),
    (["pass", "dead-code", "digits-cnn", "-o", "x.txt"], "output must end in"),
    (["pass", "dead-code"], "usage: lowbit pass"),
])
def test_bad_use_exits_2_with_one_line(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
