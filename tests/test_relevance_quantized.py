"""Relevance of compiled integer programs (``lowbit explain MODEL --after DIR``).

The compile directories are written by the CLI (``lowbit compile``, 32 calibration samples).
References: the reference interpreter for the forward with replaced activations, the float
explanation for the override mechanism and for the rank correlation, and the integer program's
own output for the explained class.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from lowbit.cli.main import main
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.passes.relevance import Objective, composite_named, explain
from lowbit.passes.relevance.engine import forward
from lowbit.passes.relevance.quantized import (dequantized_activations, explain_quantized,
                                               load_compiled, rank_agreement)
from lowbit.runtime import run_graph

SAMPLES = 8
CALIBRATION = 32
TARGET = 0.95
CASES = {"digits-cnn": "epsilon-plus-flat", "digits-vit": "attnlrp"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    root = tmp_path_factory.mktemp("compiled")
    directories = {}
    for name in CASES:
        directories[name] = root / name
        assert main(["compile", name, "--out", str(directories[name]),
                     "--calib-samples", str(CALIBRATION)]) == 0
    return directories


@pytest.fixture(scope="module")
def feeds():
    return {name: get_model(name).sample_inputs(SAMPLES, "test") for name in CASES}


def test_forward_recomputes_from_replaced_values() -> None:
    graph = capture_bundled("digits-cnn")
    x = get_model("digits-cnn").sample_inputs(2, "test")
    doubled = 2 * x["image"]
    values = forward(graph, x, {"image": doubled})
    want = run_graph(graph, {"image": doubled}, keep=True)
    for name in graph.types:
        np.testing.assert_array_equal(values[name], want[name], err_msg=name)


def test_forward_rejects_unknown_names_and_shapes() -> None:
    graph = capture_bundled("digits-cnn")
    x = get_model("digits-cnn").sample_inputs(2, "test")
    with pytest.raises(LowbitError, match="no_such_value"):
        forward(graph, x, {"no_such_value": x["image"]})
    with pytest.raises(LowbitError, match="shape"):
        forward(graph, x, {"image": x["image"][:1]})


@pytest.mark.parametrize("name", sorted(CASES))
def test_float_values_as_overrides_give_the_float_explanation(compiled, feeds, name) -> None:
    program = load_compiled(compiled[name])
    graph, x = program.float_graph, feeds[name]
    composite, objective = composite_named(CASES[name]), Objective()
    mapped = dequantized_activations(graph, program.integer_graph, x)
    float_values = run_graph(graph, x, keep=True)
    overrides = {v: float_values[v] for v in mapped}
    ours = explain(graph, x, composite, objective, overrides)
    want = explain(graph, x, composite, objective)
    assert len(overrides) > len(graph.inputs)
    np.testing.assert_array_equal(ours.inputs["image"], want.inputs["image"])
    assert ours.propagation.seed.targets == want.propagation.seed.targets
    for node, relevance in want.nodes.items():
        np.testing.assert_array_equal(ours.nodes[node].relevance, relevance.relevance)


@pytest.mark.parametrize("name", sorted(CASES))
def test_quantized_explanation_ranks_like_the_float_one(compiled, feeds, name) -> None:
    program = load_compiled(compiled[name])
    graph, x = program.float_graph, feeds[name]
    composite, objective = composite_named(CASES[name]), Objective()
    quantized = explain_quantized(graph, program.integer_graph, x, composite, objective)
    reference = explain(graph, x, composite, objective)
    agreement = rank_agreement(quantized, reference)
    print(f"{name} ({CASES[name]}): Spearman per sample "
          f"{np.round(agreement.per_sample, 4).tolist()}, mean {agreement.mean:.4f}")
    assert len(agreement.per_sample) == SAMPLES
    assert agreement.mean >= TARGET
    np.testing.assert_allclose(rank_agreement(reference, reference).per_sample, 1.0)
    integer_output = run_graph(program.integer_graph, x)[graph.outputs[0]]
    assert quantized.propagation.seed.targets == tuple(integer_output.argmax(axis=1))
    assert set(quantized.nodes) == set(explain(capture_bundled(name), x, composite,
                                               objective).nodes)


def test_cli_after_writes_relevance_and_correlation(compiled, feeds, tmp_path, capsys) -> None:
    x = feeds["digits-vit"]
    np.savez(tmp_path / "x.npz", **x)
    out = tmp_path / "out"
    code = main(["explain", "digits-vit", "--input", str(tmp_path / "x.npz"), "--out", str(out),
                 "--after", str(compiled["digits-vit"])])
    err = capsys.readouterr().err
    assert code == 0 and "rank correlation with the float explanation" in err
    with np.load(out / "relevance.npz") as saved:
        assert saved.files == ["image"] and saved["image"].shape == x["image"].shape
    summary = json.loads((out / "summary.json").read_text())
    correlation = summary["after"]["rank_correlation"]
    assert len(correlation["per_sample"]) == SAMPLES and correlation["mean"] >= TARGET
    assert f"mean {correlation['mean']:.4f}" in err
    program = load_compiled(compiled["digits-vit"])
    integer_output = run_graph(program.integer_graph, x)["logits"]
    assert summary["targets"] == integer_output.argmax(axis=1).tolist()
    assert summary["composite"] == "attnlrp"


def test_cli_after_without_manifest_is_a_user_error(feeds, tmp_path, capsys) -> None:
    np.savez(tmp_path / "x.npz", **feeds["digits-cnn"])
    empty = tmp_path / "not-compiled"
    empty.mkdir()
    code = main(["explain", "digits-cnn", "--input", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out"), "--after", str(empty)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and str(empty) in lines[-1] and "manifest.json" in lines[-1]
    assert "Traceback" not in lines[-1]


def test_cli_after_from_another_model_is_a_user_error(compiled, feeds, tmp_path, capsys) -> None:
    np.savez(tmp_path / "x.npz", **feeds["digits-cnn"])
    code = main(["explain", "digits-cnn", "--input", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out"), "--after", str(compiled["digits-vit"])])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and str(compiled["digits-vit"] / "float.lowbit") in line
    assert "digits-vit" in line and "digits-cnn" in line
