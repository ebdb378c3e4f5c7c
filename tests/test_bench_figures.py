"""The accuracy suite's picture and how ``lowbit bench --out`` writes a suite's pictures: a PNG
of the expected size per model panel, written beside the report and linked from it."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from lowbit.bench import suites
from lowbit.bench.accuracy import FLOAT, LOWBIT_INT8, LOWBIT_W4A8, ORT_QDQ, ModelTable, Row
from lowbit.bench.accuracy_plot import accuracy_png
from lowbit.bench.suites import SuiteOutput
from lowbit.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(model: str, metric: str, values: dict[str, float]) -> ModelTable:
    rows = tuple(Row(name, {metric: value}, 0.0, 10) for name, value in values.items())
    return ModelTable(model, "hand-made", 8, rows)


def test_accuracy_picture_has_one_panel_per_model() -> None:
    digits = _table("digits-cnn", "accuracy",
                    {FLOAT: 0.99, LOWBIT_INT8: 0.99, ORT_QDQ: 0.98, LOWBIT_W4A8: 0.97})
    text = _table("minilm", "mean_cosine_to_float",
                  {FLOAT: 1.0, LOWBIT_INT8: 0.998, ORT_QDQ: 0.4, LOWBIT_W4A8: 0.92})
    one, two = accuracy_png([digits]), accuracy_png([digits, text])
    assert one.startswith(PNG_MAGIC) and two.startswith(PNG_MAGIC)
    width_one = Image.open(io.BytesIO(one)).size[0]
    width_two = Image.open(io.BytesIO(two)).size[0]
    assert 1.6 * width_one < width_two < 2.4 * width_one  # a second panel of the same width


def test_bench_writes_pictures_beside_the_report(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    picture = accuracy_png([_table("digits-cnn", "accuracy", {FLOAT: 1.0, LOWBIT_INT8: 0.9})])
    suites.suites()  # registers the real suites first, so the stand-in is not overwritten
    monkeypatch.setitem(suites._SUITES, "pictures", suites.Suite(
        "pictures", "a stand-in", lambda names, calib: SuiteOutput("body\n", {"plot": picture})))
    out = tmp_path / "report.md"
    assert main(["bench", "digits-cnn", "--suite", "pictures", "--calib-samples", "2",
                 "--out", str(out)]) == 0
    written = tmp_path / "report-plot.png"
    assert written.read_bytes() == picture
    assert out.read_text().rstrip().endswith("![plot](report-plot.png)")
