"""RepQ-ViT post-LayerNorm reparameterization: channel-wise activation quantizers become one
layer-wise quantizer.

RepQ-ViT (Li et al., ICCV 2023, section 4.2; ``zkkli/RepQ-ViT`` ``test_quant.py``): calibrate
a per-channel affine quantizer ``(D_c, z_c)`` of the LayerNorm output at ``activation_bits``
(RepQ-ViT's per-channel quantile search over the calibration split,
``observers.quantile_search_ranges``), take ``D~ = mean D_c`` and ``z~ = mean z_c``, and with
``r_c = D_c / D~`` and ``b_c = D~ (z~ - z_c)`` fold ``x' = x / r - b`` into the LayerNorm affine
(``gamma / r``, ``beta / r - b``) and the next linears (``W r``, ``bias + (W r) b``). Every
channel's calibrated range then maps onto the same interval ``[-z~ D~, (2^b - 1 - z~) D~]``.
As in RepQ-ViT, that layer-wise quantizer is the deployed one, not re-observed: the interval
is recorded in ``graph.metadata[FIXED_RANGES_KEY]`` and calibration keeps it (re-observing
min/max would undo the per-channel clipping).

Invariant: float outputs unchanged (exact in real arithmetic; float32 rounding only); origins
kept; a LayerNorm with other readers is duplicated (see ``scale_folding``). Declines what
``scale_folding.norm_linear_groups`` declines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.passes.manager import PassResult
from lowbit.passes.quantize.calibrate import FIXED_RANGES_KEY
from lowbit.passes.quantize.observers import quantile_search_ranges
from lowbit.passes.registry import PassEntry, PassInputs, register_pass
from lowbit.passes.scale_folding import (channel_samples, fold_into_norm, norm_linear_groups,
                                         spread, tabulated)


def channel_quantizers(low: np.ndarray, high: np.ndarray, bits: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel affine ``(D_c, z_c)`` for ranges ``[low_c, high_c]`` widened to contain 0,
    codes ``[0, 2^bits - 1]`` (RepQ-ViT's uniform quantizer, not rounded zero points)."""
    low, high = np.minimum(low, 0.0), np.maximum(high, 0.0)
    delta = np.maximum(high - low, 1e-8) / (2**bits - 1)
    return delta, -low / delta


def reparameterization(low: np.ndarray, high: np.ndarray, bits: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """RepQ-ViT's ``(r, b)``: ``r_c = D_c / mean D``, ``b_c = mean D * (mean z - z_c)``."""
    delta, zero = channel_quantizers(low.astype(np.float64), high.astype(np.float64), bits)
    return delta / delta.mean(), delta.mean() * (zero.mean() - zero)


@dataclass(frozen=True)
class RepqVitLayerNorm:
    calibration: Mapping[str, np.ndarray] = field(repr=False)
    activation_bits: int = 8
    name: str = "repq-vit-layernorm"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        groups = norm_linear_groups(result)
        samples = channel_samples(result, self.calibration, [g.value for g in groups])
        fixed: dict[str, list[float]] = {}
        stats: dict[str, Any] = {"activation_bits": self.activation_bits, "layers": {}}
        for group in groups:
            low, high = quantile_search_ranges(samples[group.value], self.activation_bits)
            r, b = reparameterization(low, high, self.activation_bits)
            norm = fold_into_norm(result, group, r, b, "repq")
            after_low, after_high = low / r - b, high / r - b
            fixed[norm.outputs[0]] = [float(after_low.min()), float(after_high.max())]
            stats["layers"][group.norm.name] = {
                "linears": [u.name for u in group.linears],
                "range_before": [float(low.min()), float(high.max())],
                "range_after": [float(after_low.min()), float(after_high.max())],
                "channel_width_spread_before": spread(high - low),
                "channel_width_spread_after": spread(after_high - after_low),
                "r_min": float(r.min()), "r_max": float(r.max())}
        if fixed:
            result.metadata.setdefault(FIXED_RANGES_KEY, {}).update(fixed)
        return PassResult(result, bool(groups), tabulated(stats, "layers"))


def make(inputs: PassInputs) -> RepqVitLayerNorm:
    assert inputs.calibration is not None
    return RepqVitLayerNorm(inputs.calibration, int(inputs.options.get("activation_bits", 8)))


register_pass(PassEntry("repq-vit-layernorm", "RepQ-ViT: fold channel-wise LayerNorm-output "
                        "quantizers into the LayerNorm affine and next linears (layer-wise "
                        "deployment)", make, needs_calibration=True))
