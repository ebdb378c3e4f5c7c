"""The README's main job on the smallest bundled model: ``lowbit compile digits-cnn`` into a
fresh folder writes the artifact and its reports, and the report's figures agree with an
independent recomputation: the written program re-run with ``lowbit run`` on every backend,
scored against the digits labels here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lowbit.cli.main import main
from lowbit.models import get_model
from lowbit.models.digits_data import digits_split


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("main") / "digits-cnn"
    assert main(["compile", "digits-cnn", "--out", str(folder)]) == 0
    return folder, json.loads((folder / "report.json").read_text())


def test_folder_has_artifact_and_reports(compiled) -> None:
    folder, figures = compiled
    names = {path.name for path in folder.iterdir()}
    assert {"manifest.json", "integer.lowbit", "model.onnx", "report.html", "report.json",
            "report.md"} <= names
    page = (folder / "report.html").read_text()
    assert page.startswith("<!doctype html>") and "data:image/png;base64," in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained


@pytest.mark.parametrize("backend", ["interp", "onnx", "tvm"])
def test_reported_accuracy_matches_a_rerun_of_the_written_program(compiled, tmp_path,
                                                                   backend: str) -> None:
    folder, figures = compiled
    model, split = get_model("digits-cnn"), digits_split()
    images = model.sample_inputs(len(split.test_labels), "test")
    np.savez(tmp_path / "x.npz", **images)
    assert main(["run", str(folder), "--input", str(tmp_path / "x.npz"), "--output",
                 str(tmp_path / "y.npz"), "--backend", backend]) == 0
    with np.load(tmp_path / "y.npz") as outputs:
        logits = outputs[model.output_names[0]]
    accuracy = float((logits.argmax(axis=1) == split.test_labels).mean())
    assert figures["accuracy"]["integer"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert abs(figures["accuracy"]["float"]["accuracy"] - accuracy) <= 0.005  # issue 4 target


def test_node_table_is_worst_first_and_latency_covers_every_backend(compiled) -> None:
    _, figures = compiled
    sqnr = [row["sqnr_db"] for row in figures["nodes"]]
    finite = [value for value in sqnr if value is not None]
    assert finite == sorted(finite) and len(figures["nodes"]) >= 5
    assert {"interp", "onnx", "tvm"} <= set(figures["latency_seconds"])
    assert all(figures["latency_seconds"][k] > 0 for k in ("interp", "onnx", "tvm"))
    assert figures["overflow"]["unproved"] == []
