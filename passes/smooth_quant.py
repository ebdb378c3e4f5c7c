"""SmoothQuant migration: activation outliers of LayerNorm outputs move into the next linears.

SmoothQuant (Xiao et al., ICML 2023, section 4; ``mit-han-lab/smoothquant`` ``smooth.py``):
per input channel ``j`` of the linears reading a LayerNorm output,
``s_j = a_j^alpha / w_j^(1 - alpha)`` with ``a_j`` the calibration max of ``|x_j|`` and ``w_j``
the max of ``|W[:, j]|`` over all those linears (q/k/v share one ``s``). ``1/s`` is folded
into the LayerNorm affine and ``s`` into the weight columns (``scale_folding.fold_into_norm``).

Invariant: float outputs unchanged (exact in real arithmetic; float32 rounding only). Every
rewritten node keeps its origin; a LayerNorm that also feeds a residual add is duplicated with
the same origin. Declines: LayerNorms over more than the last axis, run-time affine
parameters, linears with run-time weights. ``smoothing_scales`` is the one implementation of
the formula; the integer lowering's own LayerNorm migration calls it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, PassInputs, register_pass
from lowbit.passes.scale_folding import (NormGroup, channel_samples, fold_into_norm,
                                         norm_linear_groups, spread, tabulated)

SCALE_LIMITS = (1e-4, 1e4)


def smoothing_scales(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float
                     ) -> np.ndarray:
    """SmoothQuant's ``s = a^alpha / w^(1 - alpha)`` per channel, clamped to SCALE_LIMITS."""
    act = np.maximum(np.asarray(act_absmax, np.float64), 1e-8)
    weight = np.maximum(np.asarray(weight_absmax, np.float64), 1e-8)
    return np.clip(act**alpha / weight ** (1.0 - alpha), *SCALE_LIMITS)


def weight_column_absmax(graph: Graph, group: NormGroup) -> np.ndarray:
    """max over every linear of the group and every row of ``|W[:, j]|``."""
    return np.max([np.abs(graph.constants[u.inputs[1]]).max(axis=0) for u in group.linears],
                  axis=0)


def migration_stats(group: NormGroup, act_absmax: np.ndarray, scales: np.ndarray,
                    **extra: Any) -> dict[str, Any]:
    """What a migration changed in one group, for the compile report."""
    return {"linears": [u.name for u in group.linears], **extra,
            "act_absmax_before": float(act_absmax.max()),
            "act_absmax_after": float((act_absmax / scales).max()),
            "act_channel_spread_before": spread(act_absmax),
            "act_channel_spread_after": spread(act_absmax / scales),
            "scale_min": float(scales.min()), "scale_max": float(scales.max())}


@dataclass(frozen=True)
class SmoothQuant:
    calibration: Mapping[str, np.ndarray] = field(repr=False)
    alpha: float = 0.8
    name: str = "smooth-quant"

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        groups = norm_linear_groups(result)
        samples = channel_samples(result, self.calibration, [g.value for g in groups])
        stats: dict[str, Any] = {"alpha": self.alpha, "layers": {}}
        for group in groups:
            act = np.abs(samples[group.value]).max(axis=0).astype(np.float64)
            scales = smoothing_scales(act, weight_column_absmax(result, group), self.alpha)
            fold_into_norm(result, group, scales, np.zeros_like(scales), "smooth")
            stats["layers"][group.norm.name] = migration_stats(group, act, scales)
        return PassResult(result, bool(groups), tabulated(stats, "layers"))


def make(inputs: PassInputs) -> SmoothQuant:
    assert inputs.calibration is not None
    alpha = inputs.options.get("alpha")
    return SmoothQuant(inputs.calibration, 0.8 if alpha is None else float(alpha))


register_pass(PassEntry("smooth-quant", "SmoothQuant: migrate LayerNorm-output outliers into "
                        "the next linears' weights (strength alpha)", make,
                        needs_calibration=True))
