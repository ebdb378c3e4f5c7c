"""Expected accuracy of lowbit's integer programs per bundled model and bit setting, kept in
the versioned ``reference_accuracy.json`` beside this module.

A row names the model, the bit setting (``CompileOptions`` fields), the calibration samples and
the metric; its recorded value was measured by ``python -m lowbit.models.reference_accuracy
--write`` and may only get worse by its tolerance (``tests/test_reference_accuracy.py``).
A change that improves a figure updates the file in the same commit.

The digits models are trained on the machine that first loads them (``models.training``), and
two CPUs can train different weights from the same seed (their float kernels sum in different
orders: this project's AMX host trains a digits-cnn at 98.44% float accuracy, the machine the
first rows were recorded on one at 98.89%). A row may therefore name the weights it was
measured with (``weights``: ``weights_fingerprint`` of the captured float graph); a model's
weights are held to their own rows where the file has them, else to the rows naming no
weights. ``--write --add-weights`` adds rows for the weights this machine has.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = Path(__file__).with_name("reference_accuracy.json")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Setting:
    model: str
    bits: str
    options: dict[str, Any]
    calib_samples: int
    metric: str
    tolerance: float
    value: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    weights: str | None = None
    """``weights_fingerprint`` of the weights ``value`` was measured with (None: the first
    recording's, made before fingerprints were kept)."""

    @property
    def key(self) -> str:
        return f"{self.model}/{self.bits}"


SETTINGS: tuple[Setting, ...] = (
    Setting("digits-cnn", "W8A8", {}, 128, "accuracy", 0.005),
    Setting("digits-cnn", "W4A8", {"bits": 4}, 128, "accuracy", 0.01),
    Setting("digits-cnn", "W4A4", {"bits": 4, "activation_bits": 4}, 128, "accuracy", 0.01),
    Setting("digits-vit", "W8A8", {}, 128, "accuracy", 0.005),
    Setting("digits-vit", "W4A8", {"bits": 4}, 128, "accuracy", 0.01),
    Setting("digits-vit", "W4A4", {"bits": 4, "activation_bits": 4}, 128, "accuracy", 0.01),
    Setting("minilm", "W8A8", {}, 32, "mean_cosine_to_float", 0.001),
)


def measure(setting: Setting) -> tuple[dict[str, float], str]:
    """The model's own metrics for the integer program compiled with ``setting``, and the
    fingerprint of the weights it was compiled from."""
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
    from lowbit.runtime.interpreter import run_graph

    model = get_model(setting.model)
    graph = capture_bundled(setting.model)
    fingerprint = weights_fingerprint(graph.constants)
    result = compile_graph(graph, model.sample_inputs(setting.calib_samples, "calib"),
                           CompileOptions(progress=False, **setting.options))
    return model.evaluate(lambda feeds: run_graph(result.integer_graph, feeds)), fingerprint


def weights_fingerprint(constants: dict[str, np.ndarray]) -> str:
    """SHA-256 of a captured graph's constants (names, dtypes, shapes, bytes), first 16 hex."""
    digest = hashlib.sha256()
    for name in sorted(constants):
        array = np.ascontiguousarray(constants[name])
        digest.update(f"{name}:{array.dtype}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def recorded() -> dict[str, Setting]:
    """The settings with their recorded values measured before fingerprints were kept, keyed
    ``model/bits``."""
    return {key: row for (key, weights), row in recorded_rows().items() if weights is None}


def recorded_rows() -> dict[tuple[str, str | None], Setting]:
    """Every row, keyed by ``model/bits`` and the weights it names."""
    data = json.loads(REFERENCE_FILE.read_text())
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{REFERENCE_FILE.name}: expected version {FORMAT_VERSION}")
    rows = [Setting(**row) for row in data["settings"]]
    return {(row.key, row.weights): row for row in rows}


def reference_for(key: str, weights: str) -> Setting:
    """The row holding ``key`` measured with ``weights``, else the one naming no weights."""
    rows = recorded_rows()
    return rows.get((key, weights)) or rows[(key, None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="measure and rewrite the file")
    parser.add_argument("--add-weights", action="store_true",
                        help="keep every row and add (or replace) rows for this machine's "
                             "weights, instead of re-recording the rows naming no weights")
    args = parser.parse_args()
    rows = {key: asdict(row) for key, row in recorded_rows().items()} if args.add_weights else {}
    for setting in SETTINGS:
        metrics, weights = measure(setting)
        print(f"{setting.key} (weights {weights}): {metrics}")
        if args.add_weights and (setting.key, None) in rows:
            measured = Setting(**{**asdict(setting), "value": metrics[setting.metric],
                                  "extra": metrics, "weights": weights})
            rows[(setting.key, weights)] = asdict(measured)
        elif not args.add_weights:
            rows[(setting.key, None)] = asdict(Setting(**{
                **asdict(setting), "value": metrics[setting.metric], "extra": metrics}))
    if args.write:
        ordered = [rows[key] for key in sorted(rows, key=lambda k: (k[0], k[1] or ""))]
        REFERENCE_FILE.write_text(json.dumps({"version": FORMAT_VERSION, "settings": ordered},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
