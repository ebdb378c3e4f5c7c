"""The ``passes`` suite: what each scale reparameterization pass buys after quantization.

For every bundled model, bit setting (W8A8, W4A8, W4A4) and pass set of the model's family
(``VARIANTS``; "plain" is ``compile_graph`` with no float pass, i.e. the lowering's own
LayerNorm migration at alpha 0.8), the integer program is scored by the model's ``evaluate``
over its whole test split, and per-layer SQNR is measured at every conv/linear/matmul output
the integer program carries (``quantized_values``; after a fused ReLU/clip), on ``SQNR_SAMPLES`` test inputs against
the float graph the calibration saw. Calibration uses only the calib split. The issue's targets
are checked at the end. The digits-vit W4A4 RepQ-ViT target has a margin of a few test images,
so plain and RepQ-ViT are also re-measured over three calibration set sizes and two range
observers, with the test negative log-likelihood (``calibration_sweep``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lowbit.bench.contender import float_torch
from lowbit.bench.suites import suite
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.compiler.ir import Graph
from lowbit.models import get_model
from lowbit.models.bundled import ArrayDict
from lowbit.models.digits_data import INPUT_NAME, digits_split
from lowbit.passes.quantize.pipeline import CompileOptions, CompileResult, compile_graph
from lowbit.runtime import run_graph

SETTINGS = {"W8A8": (8, 8), "W4A8": (4, 8), "W4A4": (4, 4)}
VARIANTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "digits-cnn": ((), ("equalize",)),
    "digits-vit": ((), ("smooth-quant",), ("awq",), ("repq-vit-layernorm",),
                   ("repq-vit-softmax",), ("repq-vit-layernorm", "repq-vit-softmax"),
                   ("equalize-attention",),
                   ("repq-vit-layernorm", "repq-vit-softmax", "equalize-attention")),
    "minilm": ((), ("smooth-quant",), ("awq",), ("repq-vit-layernorm",)),
}
MINILM_SETTINGS = ("W8A8",)
"""MiniLM runs take minutes each on the 2-core machine: only the setting its target names."""
SQNR_SAMPLES = 8
SWEEP_MODEL = "digits-vit"
SWEEP_PASSES = ((), ("repq-vit-layernorm", "repq-vit-softmax"))
SWEEP_SAMPLES = (128, 256, 512)
SWEEP_METHODS = ("minmax", "percentile")
LAYER_OPS = ("conv", "linear", "matmul")
FUSED = ("relu", "clip")


@dataclass(frozen=True)
class Result:
    setting: str
    passes: tuple[str, ...]
    metrics: dict[str, float]
    sqnr: dict[str, float]

    @property
    def label(self) -> str:
        return " + ".join(self.passes) or "plain"


def layer_sqnr(compiled: CompileResult, feeds: ArrayDict) -> dict[str, float]:
    """SQNR (dB) of each conv/linear/matmul output the integer program carries."""
    floats = run_graph(compiled.float_graph, feeds, keep=True)
    ints = run_graph(compiled.integer_graph, feeds, keep=True)
    carried = compiled.integer_graph.metadata["quantized_values"]
    users = compiled.float_graph.consumers()
    sqnr = {}
    for node in compiled.float_graph.nodes:
        value = node.outputs[0]
        readers = users.get(value, [])
        if value not in carried and len(readers) == 1 and readers[0].op in FUSED:
            value = readers[0].outputs[0]  # the ReLU fused into the requantization
        if node.op not in LAYER_OPS or value not in carried:
            continue
        entry = carried[value]
        real = (ints[entry["codes"]].astype(np.float64) - entry["zero_point"]) * entry["scale"]
        error = np.square(floats[value].astype(np.float64) - real).sum()
        sqnr[node.name] = float(10 * np.log10(np.square(floats[value]).sum() / max(error, 1e-30)))
    return sqnr


def run_variant(name: str, graph: Graph, calib: ArrayDict, setting: str,
                passes: tuple[str, ...]) -> Result:
    bits, activation_bits = SETTINGS[setting]
    options = CompileOptions(bits=bits, activation_bits=activation_bits, passes=passes,
                             progress=False)
    compiled = compile_graph(graph, calib, options)
    model = get_model(name)
    metrics = model.evaluate(lambda feeds: run_graph(compiled.integer_graph, feeds))
    return Result(setting, passes, metrics,
                  layer_sqnr(compiled, model.sample_inputs(SQNR_SAMPLES, "test")))


def digits_accuracy_and_nll(graph: Graph) -> tuple[float, float]:
    """Top-1 accuracy and mean negative log-likelihood of the logits over the digits test
    split."""
    data = digits_split()
    logits = np.concatenate([run_graph(graph, {INPUT_NAME: data.test_images[i:i + 150]})
                             [graph.outputs[0]] for i in range(0, len(data.test_images), 150)])
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    picked = log_probs[np.arange(len(logits)), data.test_labels]
    return float((logits.argmax(axis=1) == data.test_labels).mean()), float(-picked.mean())


def calibration_sweep() -> str:
    """digits-vit W4A4, plain and RepQ-ViT, for every calibration size and range observer."""
    model, graph = get_model(SWEEP_MODEL), capture_bundled(SWEEP_MODEL)
    labels = [" + ".join(p) or "plain" for p in SWEEP_PASSES]
    lines = [f"#### {SWEEP_MODEL} W4A4: calibration sweep", "",
             "| observer | calib samples | " + " | ".join(f"{label} accuracy | {label} NLL"
                                                       for label in labels) + " |",
             "| --- | ---: |" + " ---: | ---: |" * len(labels)]
    for method in SWEEP_METHODS:
        for count in SWEEP_SAMPLES:
            calib = model.sample_inputs(count, "calib")
            cells = []
            for passes in SWEEP_PASSES:
                options = CompileOptions(bits=4, activation_bits=4, passes=passes,
                                         calibration_method=method, progress=False)
                accuracy, nll = digits_accuracy_and_nll(
                    compile_graph(graph, calib, options).integer_graph)
                cells += [f"{100 * accuracy:.2f}%", f"{nll:.4f}"]
            lines.append(f"| {method} | {count} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(key: str, value: float) -> str:
    return f"{100 * value:.2f}%" if key == "accuracy" else f"{value:.5f}"


def _delta(key: str, value: float) -> str:
    return f"{100 * value:+.2f} pt" if key == "accuracy" else f"{value:+.5f}"


def render_model(name: str, float_metrics: Mapping[str, float], results: Sequence[Result]) -> str:
    key = next(iter(float_metrics))
    lines = [f"#### {name}", "",
             f"float (torch): {key} {_fmt(key, float_metrics[key])}", "",
             f"| setting | passes | {key} | Δ vs float | mean layer SQNR (dB) | "
             "min layer SQNR (dB) |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        values = list(r.sqnr.values())
        lines.append(f"| {r.setting} | {r.label} | {_fmt(key, r.metrics[key])} | "
                     f"{_delta(key, r.metrics[key] - float_metrics[key])} | "
                     f"{np.mean(values):.1f} | {np.min(values):.1f} |")
    chosen = [r for r in results if r.setting == "W4A4"] or [r for r in results
                                                             if r.setting == results[0].setting]
    layers = list(chosen[0].sqnr)
    lines += ["", f"Per-layer SQNR (dB) at {chosen[0].setting}:", "",
              "| layer | " + " | ".join(r.label for r in chosen) + " |",
              "| --- |" + " ---: |" * len(chosen)]
    for layer in layers:
        cells = [f"{r.sqnr[layer]:.1f}" if layer in r.sqnr else "-" for r in chosen]
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _find(results: Sequence[Result], setting: str, passes: tuple[str, ...]) -> Result | None:
    return next((r for r in results if r.setting == setting and r.passes == passes), None)


def verdicts(tables: Mapping[str, tuple[Mapping[str, float], list[Result]]]) -> list[str]:
    """The issue's three targets, PASS/FAIL with the measured numbers (absent models: N/A)."""
    lines = []
    if "digits-vit" in tables:
        ref, results = tables["digits-vit"]
        plain = _find(results, "W4A4", ())
        repq = _find(results, "W4A4", ("repq-vit-layernorm", "repq-vit-softmax"))
        if plain and repq:
            need = plain.metrics["accuracy"] + (ref["accuracy"] - plain.metrics["accuracy"]) / 2
            got = repq.metrics["accuracy"]
            lines.append(f"- **{'PASS' if got >= need else 'FAIL'}** digits-vit W4A4 with "
                         f"RepQ-ViT recovers half of plain W4A4's loss: {100 * got:.2f}% (need "
                         f"{100 * need:.2f}%; plain {100 * plain.metrics['accuracy']:.2f}%, "
                         f"float {100 * ref['accuracy']:.2f}%)")
    if "digits-cnn" in tables:
        ref, results = tables["digits-cnn"]
        eq = _find(results, "W4A8", ("equalize",))
        if eq:
            got, need = eq.metrics["accuracy"], ref["accuracy"] - 0.02
            lines.append(f"- **{'PASS' if got >= need else 'FAIL'}** digits-cnn W4A8 with "
                         f"equalization within 2 points of float: {100 * got:.2f}% (float "
                         f"{100 * ref['accuracy']:.2f}%)")
    if "minilm" in tables:
        _, results = tables["minilm"]
        migrated = [r for r in results if r.setting == "W8A8" and r.passes]
        if migrated:
            best = max(migrated, key=lambda r: r.metrics["mean_cosine_to_float"])
            got = best.metrics["mean_cosine_to_float"]
            lines.append(f"- **{'PASS' if got >= 0.995 else 'FAIL'}** minilm W8A8 with "
                         f"migration mean cosine >= 0.995: {got:.5f} ({best.label})")
    return lines


@suite("passes", "scale reparameterization passes: per-layer SQNR and accuracy, with and "
       "without each pass, at W8A8, W4A8 and W4A4")
def passes_suite(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> str:
    tables: dict[str, tuple[Mapping[str, float], list[Result]]] = {}
    for name in names:
        model = get_model(name)
        graph = capture_bundled(name)
        float_metrics = model.evaluate(float_torch(model, calib[name]))
        settings = MINILM_SETTINGS if name == "minilm" else tuple(SETTINGS)
        results = [run_variant(name, graph, calib[name], setting, passes)
                   for setting in settings for passes in VARIANTS.get(name, ((),))]
        tables[name] = (float_metrics, results)
    sections = [render_model(name, *tables[name]) for name in tables]
    if SWEEP_MODEL in tables:
        sections.append(calibration_sweep())
    return "\n\n".join(sections + ["Targets:", "\n".join(verdicts(tables))])
