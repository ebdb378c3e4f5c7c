"""Expected accuracy of lowbit's integer programs per bundled model and bit setting, kept in
the versioned ``reference_accuracy.json`` beside this module.

A row names the model, the bit setting (``CompileOptions`` fields), the calibration samples and
the metric; its recorded value was measured by ``python -m lowbit.models.reference_accuracy
--write`` and may only get worse by its tolerance (``tests/test_reference_accuracy.py``).
A change that improves a figure updates the file in the same commit.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

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


def measure(setting: Setting) -> dict[str, float]:
    """The model's own metrics for the integer program compiled with ``setting``."""
    from lowbit.compiler.importers.sources import capture_bundled
    from lowbit.models import get_model
    from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
    from lowbit.runtime.interpreter import run_graph

    model = get_model(setting.model)
    result = compile_graph(capture_bundled(setting.model),
                           model.sample_inputs(setting.calib_samples, "calib"),
                           CompileOptions(progress=False, **setting.options))
    return model.evaluate(lambda feeds: run_graph(result.integer_graph, feeds))


def recorded() -> dict[str, Setting]:
    """The settings with their recorded values, keyed ``model/bits``."""
    data = json.loads(REFERENCE_FILE.read_text())
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"{REFERENCE_FILE.name}: expected version {FORMAT_VERSION}")
    return {row["model"] + "/" + row["bits"]: Setting(**row) for row in data["settings"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="measure and rewrite the file")
    args = parser.parse_args()
    rows = []
    for setting in SETTINGS:
        metrics = measure(setting)
        print(f"{setting.key}: {metrics}")
        rows.append(asdict(Setting(**{**asdict(setting), "value": metrics[setting.metric],
                                      "extra": metrics})))
    if args.write:
        REFERENCE_FILE.write_text(json.dumps({"version": FORMAT_VERSION, "settings": rows},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()
