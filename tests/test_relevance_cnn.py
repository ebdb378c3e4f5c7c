"""Relevance on the bundled digits CNN: against zennit, conservation, through passes, CLI.

zennit (0.5.1) is the independent reference: it runs on the torch module itself, with its own
rules and BatchNorm merging. Its ``SequentialMergeBatchNorm`` leaves each merged batch norm
computing ``x / sqrt(1 + eps)`` instead of ``x`` (it resets the statistics but keeps ``eps``),
which shifts every later activation by about 5e-6; ``ExactMerge`` also zeroes ``eps`` so the
merged torch model computes exactly the folded function, and the comparison is then exact to
float32 rounding. Without merging (zennit's BatchNorm pass-through on both sides) gamma and z+
agree too; epsilon is left out there: relevance passed through an unmerged batch norm is not
proportional to the conv output it lands on, so outputs near zero amplify rounding by 1/eps.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types

import numpy as np
import pytest
import torch

from lowbit.cli import explain_cmd
from lowbit.cli.main import main
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.compiler.ir import CapturedNode, Node
from lowbit.models import get_model
from lowbit.passes import DeadCodeElimination, PassManager
from lowbit.passes.fold_batch_norm import FoldBatchNorm
from lowbit.passes.relevance import Composite, Entry, Objective, composite_named, explain
from lowbit.passes.relevance.linear_rules import Epsilon
from tests.graphs import conv_relu_linear

SAMPLES = 8


def import_zennit() -> types.ModuleType:
    """zennit imports torchvision's ResNet blocks at import time. Without torchvision (the CPU
    torch here has no matching wheel), minimal stand-in modules are put in ``sys.modules`` for
    the import only, then taken out again so that other libraries still see no torchvision."""
    if importlib.util.find_spec("torchvision") is not None:
        import zennit

        return zennit
    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
    resnet.BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
    models = types.ModuleType("torchvision.models")
    models.resnet = resnet
    vision = types.ModuleType("torchvision")
    vision.models = models
    stubs = {"torchvision": vision, "torchvision.models": models,
             "torchvision.models.resnet": resnet}
    sys.modules.update(stubs)
    try:
        import zennit
    finally:
        for name in stubs:
            del sys.modules[name]
    return zennit


zennit = import_zennit()
from zennit import rules as zr  # noqa: E402
from zennit.attribution import Gradient  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import EpsilonPlusFlat, LayerMapComposite  # noqa: E402
from zennit.types import Activation, AvgPool, BatchNorm, Convolution  # noqa: E402


class ExactMerge(SequentialMergeBatchNorm):
    @staticmethod
    def merge_batch_norm(modules, batch_norm) -> None:
        SequentialMergeBatchNorm.merge_batch_norm(modules, batch_norm)
        batch_norm.eps = 0.0


@pytest.fixture(scope="module")
def graph():
    return capture_bundled("digits-cnn")


@pytest.fixture(scope="module")
def feeds():
    return get_model("digits-cnn").sample_inputs(SAMPLES, "test")


def zennit_relevance(composite, image: np.ndarray) -> np.ndarray:
    module = get_model("digits-cnn").load()
    inputs = torch.from_numpy(image).requires_grad_()

    def class_score(output: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(output.argmax(1), output.shape[1]).to(output) * output

    with Gradient(module, composite, attr_output=class_score) as attributor:
        _, relevance = attributor(inputs)
    return relevance.detach().numpy().astype(np.float64)


def zennit_single(rule, merge: bool) -> LayerMapComposite:
    """zennit's layer_map_base plus one rule on every conv and linear."""
    return LayerMapComposite([(Activation, zr.Pass()), (AvgPool, zr.Norm()), (BatchNorm, zr.Pass()),
                              (Convolution, rule), (torch.nn.Linear, rule)],
                             canonizers=[ExactMerge()] if merge else [])


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (want.max() - want.min()))


ZENNIT_CASES = {
    "epsilon": lambda: zennit_single(zr.Epsilon(), True),
    "gamma": lambda: zennit_single(zr.Gamma(), True),
    "zplus": lambda: zennit_single(zr.ZPlus(), True),
    "alphabeta": lambda: zennit_single(zr.AlphaBeta(), True),
    "epsilon-plus-flat": lambda: EpsilonPlusFlat(canonizers=[ExactMerge()]),
}


@pytest.mark.parametrize("name", sorted(ZENNIT_CASES))
def test_input_relevance_equals_zennit(graph, feeds, name: str) -> None:
    ours = explain(graph, feeds, composite_named(name), Objective()).inputs["image"]
    error = relative_error(ours, zennit_relevance(ZENNIT_CASES[name](), feeds["image"]))
    print(f"zennit {name}: max abs err / range = {error:.1e}")
    assert error <= 1e-5


@pytest.mark.parametrize("name,rule", [("gamma", zr.Gamma()), ("zplus", zr.ZPlus())])
def test_unmerged_batch_norm_passes_relevance_like_zennit(graph, feeds, name, rule) -> None:
    ours = explain(graph, feeds, composite_named(name).without_canonizers(), Objective())
    error = relative_error(ours.inputs["image"], zennit_relevance(zennit_single(rule, False),
                                                                  feeds["image"]))
    print(f"zennit {name} without merging: {error:.1e}")
    assert error <= 1e-5


@pytest.mark.parametrize("name", ["epsilon", "gamma", "zplus", "alphabeta", "epsilon-plus-flat"])
def test_every_layer_conserves_relevance(graph, feeds, name: str) -> None:
    explanation = explain(graph, feeds, composite_named(name), Objective())
    worst, kept = explanation.worst_layer(), explanation.most_stabilized()
    print(f"conservation {name}: worst layer {worst.node} ({worst.rule}) {worst.deviation:.1e}; "
          f"largest stabilizer share {kept.node} {kept.stabilizer_share:.1e}")
    assert explanation.violations() == []
    assert len(explanation.checks) == len(explanation.propagation.graph.nodes)
    if name != "alphabeta":  # alpha-beta leaves empty negative parts to the stabilizer
        assert kept.stabilizer_share <= 1e-4


def _per_node(explanation) -> dict[str, np.ndarray]:
    return {name: node.relevance for name, node in explanation.nodes.items()}


def test_relevance_survives_fold_batch_norm_and_dead_code(graph, feeds) -> None:
    """Rules are defined on the canonical (merged) graph, as in zennit, so the captured graph and
    the compiled one must report the same relevance on every original node, through origins."""
    folded, _ = PassManager([FoldBatchNorm(), DeadCodeElimination()]).run(graph)
    assert "batch_norm" not in folded.op_histogram()
    for name in ("epsilon", "zplus", "epsilon-plus-flat"):
        before = explain(graph, feeds, composite_named(name), Objective())
        after = explain(folded, feeds, composite_named(name), Objective())
        assert relative_error(after.inputs["image"], before.inputs["image"]) <= 1e-4
        assert _per_node(after).keys() == _per_node(before).keys()
        for node, relevance in _per_node(before).items():
            np.testing.assert_allclose(_per_node(after)[node], relevance, rtol=1e-4, err_msg=node)


def test_folding_is_invisible_to_lrp_epsilon_without_canonizing(graph, feeds) -> None:
    """Batch norm as an affine map under LRP-eps (eps -> 0) composes with the conv's rule into
    the rule on the folded conv; only the folded convs' own captured nodes change, since they
    now report the fused node's output (the split rule for fused nodes)."""
    lrp = Composite("lrp-eps", "", (Entry(Epsilon(1e-9), ops=frozenset(
        {"conv", "linear", "batch_norm"})),), canonizers=())
    folded, _ = PassManager([FoldBatchNorm(), DeadCodeElimination()]).run(graph)
    before = explain(graph, feeds, lrp, Objective())
    after = explain(folded, feeds, lrp, Objective())
    assert relative_error(after.inputs["image"], before.inputs["image"]) <= 1e-4
    merged = {c.name for c in graph.captured.values() if c.source_op == "aten.convolution.default"}
    for node, relevance in _per_node(before).items():
        if node in merged:
            bn = next(n for n, r in after.nodes.items() if r.ir_nodes == after.nodes[node].ir_nodes
                      and n != node and n not in merged)
            np.testing.assert_array_equal(after.nodes[node].relevance, after.nodes[bn].relevance)
        else:
            np.testing.assert_allclose(after.nodes[node].relevance, relevance, rtol=1e-4)


def test_a_captured_node_removed_by_a_pass_reports_none() -> None:
    graph = conv_relu_linear()
    dead_id = max(graph.captured) + 1
    graph.captured[dead_id] = CapturedNode(dead_id, "unused", "aten.relu.default")
    graph.nodes.append(Node("unused", "relu", ("image",), ("unused_out",), {},
                            frozenset({dead_id})))
    graph.types["unused_out"] = graph.types["image"]
    pruned, _ = PassManager([DeadCodeElimination()]).run(graph)
    feeds = {"image": np.random.default_rng(0).standard_normal((2, 2, 6, 6)).astype(np.float32)}
    explanation = explain(pruned, feeds, composite_named("epsilon"), Objective())
    assert explanation.nodes["unused"].relevance is None
    assert explanation.nodes["relu"].relevance is not None


def test_cli_writes_heatmap_npz_and_node_json(graph, feeds, tmp_path, capsys,
                                              monkeypatch) -> None:
    monkeypatch.setattr(explain_cmd, "capture", lambda model: graph)
    np.savez(tmp_path / "x.npz", **feeds)
    out = tmp_path / "out"
    code = main(["explain", "digits-cnn", "--input", str(tmp_path / "x.npz"), "--out", str(out),
                 "--rule", "zplus", "--target-class", "3"])
    err = capsys.readouterr().err
    assert code == 0 and "conservation: worst layer" in err
    with np.load(out / "relevance.npz") as saved:
        assert saved.files == ["image"] and saved["image"].shape == feeds["image"].shape
    nodes = json.loads((out / "node_relevance.json").read_text())
    assert set(nodes) == {c.name for c in graph.captured.values()}
    assert len(nodes["linear"]["relevance"]) == SAMPLES
    summary = json.loads((out / "summary.json").read_text())
    assert summary["targets"] == [3] * SAMPLES and summary["composite"] == "zplus"
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("argv,message", [
    (["--rule", "nope"], "unknown rule or composite"),
    (["--target-class", "12"], "out of range"),
    (["--override", "convolution=nope"], "rule must be one of"),
    (["--override", "nowhere=zplus"], "no node or captured node"),
])
def test_cli_user_errors_are_one_line(graph, feeds, tmp_path, capsys, monkeypatch, argv,
                                      message) -> None:
    monkeypatch.setattr(explain_cmd, "capture", lambda model: graph)
    np.savez(tmp_path / "x.npz", **feeds)
    code = main(["explain", "digits-cnn", "--input", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out"), *argv])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and message in lines[-1] and "Traceback" not in lines[-1]
