"""The ``blocks`` suite: block quantization (W4 weights in blocks of 32 input channels, 8-bit
activations) with and without outlier channel rearrangement (``rearrange-channels``).

Per layer: the block-quantization SQNR of each block-quantized linear's output,
``10 log10(|x W^T|^2 / |x W^T - x Q(W)^T|^2)`` with ``x`` the float layer input on test
samples and ``Q`` the W4 block-32 quantizer, in the original and the rearranged float graph.
A layer *has outlier channels* when the calibrated max ``|x_j|`` of some input channel is at
least ``OUTLIER_RATIO`` times the median channel's (LLM.int8()'s threshold is 6 in absolute
terms; this one is relative). End accuracy: the model's own metric over its test split for
the integer programs compiled with W4A8 per-channel weights, W4A8 block-32, and W4A8 block-32
after rearrangement. Calibration inputs come from the calibration split only; SQNR and
accuracy from the test split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from lowbit.bench.suites import suite
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.compiler.ir import Graph
from lowbit.models import get_model
from lowbit.models.bundled import ArrayDict, BundledModel
from lowbit.passes.manager import PassManager
from lowbit.passes.quantize.block_quant import fake_quantize_blocks
from lowbit.passes.quantize.calibrate import calibrate
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph
from lowbit.passes.rearrange_channels import RearrangeChannels
from lowbit.runtime import run_graph

BLOCK, BITS = 32, 4
OUTLIER_RATIO = 6.0
SQNR_SAMPLES = 32
TARGET_GAIN_DB = 3.0


@dataclass(frozen=True)
class LayerRow:
    layer: str
    features: int
    outlier_ratio: float
    sqnr_before: float
    sqnr_after: float

    @property
    def has_outliers(self) -> bool:
        return self.outlier_ratio >= OUTLIER_RATIO


def _sqnr(x: np.ndarray, weight: np.ndarray) -> float:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    exact = flat @ weight.T
    noise = flat @ (weight - fake_quantize_blocks(weight, BLOCK, BITS)).T
    return float(10 * np.log10((exact**2).sum() / max((noise**2).sum(), 1e-300)))


def layer_rows(original: Graph, rearranged: Graph, calib: ArrayDict, test: ArrayDict
               ) -> list[LayerRow]:
    absmax = calibrate(original, calib, progress=False).channel_absmax
    before = run_graph(original, test, keep=True)
    after = run_graph(rearranged, test, keep=True)
    rows = []
    for node in original.nodes:
        weight = original.constants.get(node.inputs[1]) if node.op == "linear" else None
        if weight is None or weight.shape[1] % BLOCK:
            continue
        twin = rearranged.node(node.name)
        ranges = absmax[node.inputs[0]]
        rows.append(LayerRow(node.name, weight.shape[1],
                             float(ranges.max() / max(np.median(ranges), 1e-30)),
                             _sqnr(before[node.inputs[0]], weight.astype(np.float64)),
                             _sqnr(after[twin.inputs[0]],
                                   rearranged.constants[twin.inputs[1]].astype(np.float64))))
    return rows


def _accuracy(model: BundledModel, graph: Graph, calib: ArrayDict, block: int | None
              ) -> dict[str, float]:
    options = CompileOptions(bits=BITS, activation_bits=8, block_size=block, passes=(),
                             progress=False)
    program = compile_graph(graph, calib, options).integer_graph
    return model.evaluate(lambda feeds: run_graph(program, feeds))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


def render_model(model: BundledModel, calib: ArrayDict) -> str:
    graph = capture_bundled(model.name)
    rearranged, records = PassManager([RearrangeChannels(calib, BLOCK, BITS)]).run(graph)
    stats = records[0].stats
    rows = layer_rows(graph, rearranged, calib, model.sample_inputs(SQNR_SAMPLES, "test"))
    outlier_rows = [r for r in rows if r.has_outliers]
    gain = _mean([r.sqnr_after - r.sqnr_before for r in outlier_rows])
    accuracy = {"W4A8 per-channel": _accuracy(model, graph, calib, None),
                f"W4A8 block-{BLOCK}": _accuracy(model, graph, calib, BLOCK),
                f"W4A8 block-{BLOCK} + rearrange-channels": _accuracy(model, rearranged, calib,
                                                                      BLOCK)}
    lines = [f"### {model.name}", "", f"{model.description}; {len(next(iter(calib.values())))} "
             f"calibration samples, SQNR on {SQNR_SAMPLES} test samples.", "",
             f"Sites permuted: {stats['permuted_sites']} of {len(stats['sites'])} "
             f"(declined: {len(stats['declined'])}).", *stats["markdown"],
             "| layer | in features | max/median channel range | SQNR (dB) | SQNR rearranged "
             "(dB) | gain (dB) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| `{r.layer}`{' (outliers)' if r.has_outliers else ''} | {r.features} | "
              f"{r.outlier_ratio:.1f} | {r.sqnr_before:.2f} | {r.sqnr_after:.2f} | "
              f"{r.sqnr_after - r.sqnr_before:+.2f} |" for r in rows]
    verdict = "PASS" if outlier_rows and gain >= TARGET_GAIN_DB else "FAIL"
    lines += ["", f"Mean SQNR gain on the {len(outlier_rows)} layers with outlier channels "
              f"(ratio >= {OUTLIER_RATIO:g}): {gain:+.2f} dB (target >= {TARGET_GAIN_DB:g} dB: "
              f"{verdict}); over all {len(rows)} block-quantized layers: "
              f"{_mean([r.sqnr_after - r.sqnr_before for r in rows]):+.2f} dB.", "",
              "| integer program | " + " | ".join(next(iter(accuracy.values()))) + " |",
              "| --- |" + " ---: |" * len(next(iter(accuracy.values())))]
    lines += [f"| {name} | " + " | ".join(f"{v:.4f}" for v in metrics.values()) + " |"
              for name, metrics in accuracy.items()]
    return "\n".join(lines) + "\n"


@suite("blocks", f"W{BITS} block-{BLOCK} quantization with and without outlier channel "
       "rearrangement")
def blocks(names: Sequence[str], calib: Mapping[str, ArrayDict]) -> str:
    return "\n".join(render_model(get_model(name), calib[name]) for name in names)
