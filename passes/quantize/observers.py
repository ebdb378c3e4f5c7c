"""Activation range observers for calibration: min/max, percentile and MSE-optimal.

Each observer sees every calibration batch of one tensor and returns a clipping range
``(lo, hi)``. Percentile and MSE observers keep a bounded, deterministic subsample (every k-th
element of each batch) so memory stays flat on long calibration runs. The MSE observer picks
the symmetric or affine 8-bit clipping range whose fake-quantization error on that subsample is
smallest (a grid over shrink factors of the min/max range), as in the "MSE" calibrators of
TensorRT and NNCF. ``quantile_search_ranges`` is RepQ-ViT's per-channel range search (Li et al.,
ICCV 2023), used by the ``repq-vit-layernorm`` pass before it reparameterizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SAMPLE_CAP = 1 << 18


@dataclass
class RangeObserver:
    method: str = "minmax"
    percentile: float = 99.99
    bits: int = 8
    lo: float = float("inf")
    hi: float = float("-inf")
    samples: list[np.ndarray] = field(default_factory=list)
    kept: int = 0

    def observe(self, values: np.ndarray) -> None:
        flat = np.asarray(values, np.float64).ravel()
        if not flat.size:
            return
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        if self.method != "minmax" and self.kept < SAMPLE_CAP:
            step = max(1, flat.size // max(1, (SAMPLE_CAP - self.kept) // 4))
            picked = flat[::step]
            self.samples.append(picked)
            self.kept += picked.size

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            raise ValueError("observer saw no values")
        if self.method == "minmax":
            return self.lo, self.hi
        data = np.concatenate(self.samples)
        if self.method == "percentile":
            lo = float(np.percentile(data, 100.0 - self.percentile))
            hi = float(np.percentile(data, self.percentile))
            return min(lo, 0.0) if self.lo < 0 else self.lo, max(hi, 0.0)
        if self.method == "mse":
            return mse_optimal_range(data, self.lo, self.hi, self.bits)
        raise ValueError(f"unknown observer {self.method!r}")


def fake_quant_error(data: np.ndarray, lo: float, hi: float, bits: int) -> float:
    levels = (1 << bits) - 1
    scale = max(hi - lo, 1e-12) / levels
    codes = np.clip(np.round((data - lo) / scale), 0, levels)
    return float(np.mean(np.square(codes * scale + lo - data)))


def mse_optimal_range(data: np.ndarray, lo: float, hi: float, bits: int,
                      steps: int = 64) -> tuple[float, float]:
    best = (fake_quant_error(data, lo, hi, bits), lo, hi)
    for shrink in np.linspace(1.0 / steps, 1.0, steps)[:-1]:
        candidate = (lo * shrink, hi * shrink)
        error = fake_quant_error(data, *candidate, bits)
        if error < best[0]:
            best = (error, *candidate)
    return best[1], best[2]


SEARCH_QUANTILES = (0.999, 0.9999, 0.99999)
"""RepQ-ViT's candidate clipping quantiles (``zkkli/RepQ-ViT`` ``UniformQuantizer``)."""


def quantile_search_ranges(data: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """RepQ-ViT's range search, per column of ``data`` ``[rows, columns]``: of the clipping
    ranges ``[quantile(1 - p), quantile(p)]`` for ``p`` in ``SEARCH_QUANTILES``, each widened to
    contain 0, the one whose ``bits``-bit affine fake quantization has the smallest L2 error."""
    data = np.asarray(data, np.float64)
    best_error = np.full(data.shape[1], np.inf)
    best_lo, best_hi = np.zeros(data.shape[1]), np.zeros(data.shape[1])
    for p in SEARCH_QUANTILES:
        lo = np.minimum(np.quantile(data, 1.0 - p, axis=0), 0.0)
        hi = np.maximum(np.quantile(data, p, axis=0), 0.0)
        scale = np.maximum(hi - lo, 1e-12) / ((1 << bits) - 1)
        codes = np.clip(np.rint((data - lo) / scale), 0, (1 << bits) - 1)
        error = np.square(codes * scale + lo - data).sum(axis=0)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_lo, best_hi = np.where(better, lo, best_lo), np.where(better, hi, best_hi)
    return best_lo, best_hi


OBSERVERS = ("minmax", "percentile", "mse")
