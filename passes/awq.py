"""AWQ-style search of the per-layer migration strength on calibration data.

AWQ (Lin et al., MLSys 2024, section 3.2; ``mit-han-lab/llm-awq`` ``auto_scale.py``) grid
searches the exponent of its per-channel scale and keeps the one whose *quantized* layer
output is closest to the float output. Here the scale family is SmoothQuant's
(``smooth_quant.smoothing_scales``, ``alpha`` in ``GRID``) and the quantizers are the ones the
integer lowering deploys: per-output-channel symmetric weights at ``bits`` and per-tensor
affine activations at ``activation_bits`` (``passes.quantize.qparams``). The objective of a
LayerNorm -> linears group is the sum over its linears of the relative squared error
``||X W^T - Q(X/s) Q(W s)^T||^2 / ||X W^T||^2`` on up to ``rows`` calibration rows. The chosen
``s`` is folded as in SmoothQuant (``scale_folding.fold_into_norm``).

Invariant: float outputs unchanged (exact in real arithmetic; float32 rounding only); origins
kept, a LayerNorm with other readers is duplicated. Declines what SmoothQuant declines. The
search only reads the calibration split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.passes.manager import PassResult
from lowbit.passes.quantize.qparams import (activation_qparams, quantize_tensor,
                                            quantize_weight_per_channel)
from lowbit.passes.registry import PassEntry, PassInputs, register_pass
from lowbit.passes.scale_folding import (channel_samples, fold_into_norm, norm_linear_groups,
                                         tabulated)
from lowbit.passes.smooth_quant import migration_stats, smoothing_scales, weight_column_absmax

GRID = tuple(round(0.1 * i, 2) for i in range(11))


def fake_quant_activations(x: np.ndarray, bits: int) -> np.ndarray:
    """Per-tensor affine min/max quantization, as the lowering gives a product's input."""
    qparams = activation_qparams(float(x.min()), float(x.max()), "int8", symmetric=False,
                                 bits=bits if bits < 8 else None)
    codes = quantize_tensor(x, qparams).astype(np.float32)
    return (codes - qparams.zero_point) * np.float32(qparams.scale)


def fake_quant_weight(weight: np.ndarray, bits: int) -> np.ndarray:
    codes, scales = quantize_weight_per_channel(weight, bits)
    return (codes * scales[:, None]).astype(np.float32)


def quantized_error(x: np.ndarray, weights: list[np.ndarray], references: list[np.ndarray],
                    scales: np.ndarray, bits: Sequence[int], activation_bits: int) -> float:
    """Sum over ``weights`` of the relative squared output error (against ``references``,
    the float outputs ``x W^T``) after smoothing by ``scales`` and quantizing each weight at
    its entry of ``bits``."""
    xq = fake_quant_activations((x / scales).astype(np.float32), activation_bits)
    total = 0.0
    for weight, reference, width in zip(weights, references, bits, strict=True):
        got = xq @ fake_quant_weight(weight * scales, width).T
        total += float(np.square(reference - got).sum() / max(np.square(reference).sum(), 1e-30))
    return total


@dataclass(frozen=True)
class AwqSearch:
    calibration: Mapping[str, np.ndarray] = field(repr=False)
    bits: int = 8
    activation_bits: int = 8
    rows: int = 256
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    """Weight bits of single linears (mixed precision), by node name; others get ``bits``."""
    name: str = "awq"

    def __post_init__(self) -> None:
        widths = {self.bits, self.activation_bits, *self.layer_bits.values()}
        if not widths <= {4, 8}:
            raise ValueError("awq searches for 4- or 8-bit weights and activations")

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        groups = norm_linear_groups(result)
        samples = channel_samples(result, self.calibration, [g.value for g in groups])
        stats: dict[str, Any] = {"grid": list(GRID), "bits": self.bits,
                                 "activation_bits": self.activation_bits, "layers": {}}
        for group in groups:
            x = samples[group.value]
            act = np.abs(x).max(axis=0).astype(np.float64)
            x = x[np.linspace(0, len(x) - 1, min(self.rows, len(x))).astype(int)]
            weights = [result.constants[u.inputs[1]].astype(np.float64) for u in group.linears]
            references = [x @ w.T.astype(np.float32) for w in weights]
            column = weight_column_absmax(result, group)
            widths = [self.layer_bits.get(u.name, self.bits) for u in group.linears]
            errors = [quantized_error(x, weights, references, smoothing_scales(act, column, alpha),
                                      widths, self.activation_bits) for alpha in GRID]
            best = GRID[int(np.argmin(errors))]
            scales = smoothing_scales(act, column, best)
            fold_into_norm(result, group, scales, np.zeros_like(scales), "awq")
            stats["layers"][group.norm.name] = migration_stats(
                group, act, scales, alpha=best, error_alpha0=errors[0],
                error_best=float(min(errors)))
        return PassResult(result, bool(groups), tabulated(stats, "layers"))


def make(inputs: PassInputs) -> AwqSearch:
    assert inputs.calibration is not None
    return AwqSearch(inputs.calibration, int(inputs.options.get("bits", 8)),
                     int(inputs.options.get("activation_bits", 8)),
                     layer_bits=dict(inputs.options.get("layer_bits", {})))


register_pass(PassEntry("awq", "AWQ-style grid search of the LayerNorm -> linear migration "
                        "strength, minimizing the quantized layers' output error", make,
                        needs_calibration=True))
