"""Outlier channel rearrangement: permute reduction channels so that outliers share blocks.

Block quantization gives each block of ``B`` consecutive input channels of a linear one scale
per output row; one outlier channel sets the scale of its whole block. Sorting the channels
by magnitude ("Accurate Block Quantization in LLMs with Outliers", K-sort; Quamba2's
sort-and-cluster, REFERENCES.md section 2) puts channels of similar range in the same block.
For each channel site (``rearrange_sites``: the tensors that carry the same channels, through
residual adds and LayerNorms) the pass sorts the channels by a per-channel range
(``CHANNEL_KEYS``: calibrated ``max |x_j|``, ``max_o |W[o, j]|``, their product or the column
RMS, normalized per reader, max over readers), keeps the order with the lowest estimated
error, and applies the permutation to constants only: producer rows (weights, bias,
embedding columns), norm affine parameters and constants on the path, and consumer columns.
No node is added or removed.

Invariant: same ops, node count, value names and shapes; float outputs unchanged up to float32
summation order (the permutation is exact in real arithmetic). Provenance is untouched (only
constants change). A site is kept as it is, with the reason in the stats, when it is declined
by ``find_site``, when its channel count is not a multiple of the block size, or when sorting
does not lower the estimated block-quantization error of its readers.

Error estimate per reader (reported before and after): the calibration-weighted relative error
of its block-quantized weight, ``sum_oj a_j^2 (W - Q_B(W))_oj^2 / sum_oj a_j^2 W_oj^2`` with
``a_j`` the calibrated max ``|x_j|``, ``Q_B`` the symmetric per-(row, block) quantizer of
``block_quant``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.passes.manager import PassResult
from lowbit.passes.quantize.block_quant import fake_quantize_blocks
from lowbit.passes.quantize.calibrate import calibrate
from lowbit.passes.rearrange_sites import Site, find_site, permute_site
from lowbit.passes.registry import PassEntry, PassInputs, register_pass

READERS = ("linear", "matmul")
WEIGHT_AXIS = {"linear": 1, "matmul": 0}  # the reduction axis of the reader's weight


@dataclass(frozen=True)
class RearrangeChannels:
    calibration: Mapping[str, np.ndarray]
    block_size: int = 32
    bits: int = 4
    name: str = "rearrange-channels"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        stats = calibrate(graph, self.calibration, progress=False).channel_absmax
        sites, declined, seen = [], [], set()
        for node in graph.nodes:
            if node.op not in READERS or node.inputs[0] in seen or node.inputs[1] \
                    not in graph.constants:
                continue
            site = find_site(graph, node.inputs[0], graph.types[node.inputs[0]].rank - 1)
            seen.update(site.values)
            if site.declined is not None:
                declined.append({"start": site.start, "reason": site.declined})
                continue
            sites.append(self._rearrange(result, site, stats, len(sites)))
        permuted = [s for s in sites if s["permuted"]]
        return PassResult(result, bool(permuted), {
            "block_size": self.block_size, "bits": self.bits, "sites": sites,
            "permuted_sites": len(permuted), "declined": declined,
            "markdown": site_table(sites, declined, self.block_size, self.bits)})

    def _rearrange(self, graph: Graph, site: Site, stats: Mapping[str, np.ndarray],
                   index: int) -> dict[str, Any]:
        record: dict[str, Any] = {"start": site.start, "channels": site.channels,
                                  "tensors": len(site.values), "writers": site.writers,
                                  "readers": sorted(site.readers), "permuted": False}
        if site.channels % self.block_size:
            record["reason"] = f"{site.channels} channels are not blocks of {self.block_size}"
            return record
        blocked = {r: v for r, v in site.readers.items() if graph.node(r).op in WEIGHT_AXIS}
        if not blocked:
            record["reason"] = "no reader is a linear layer (only those are block-quantized)"
            return record
        columns = {r: _reduction_columns(graph, graph.node(r)) for r in blocked}
        scales = {r: _activation_absmax(stats, value, site.channels)
                  for r, value in blocked.items()}
        before = {r: self._error(columns[r], scales[r]) for r in blocked}
        candidates = {}
        for key, statistic in CHANNEL_KEYS.items():
            order = np.argsort(_site_key(statistic, columns, scales), kind="stable")
            after = {r: self._error(columns[r][:, order], scales[r][order]) for r in blocked}
            candidates[key] = (sum(after.values()), order, after)
        key = min(candidates, key=lambda k: candidates[k][0])
        total, order, after = candidates[key]
        record.update(error_before=before, error_after=after, key=key)
        if total >= sum(before.values()):
            record["reason"] = "no sort order lowers the block-quantization error"
            return record
        permute_site(graph, site, order, f"perm{index}")
        record.update(permuted=True, permutation=order.tolist())
        return record

    def _error(self, weight: np.ndarray, absmax: np.ndarray) -> float:
        weighted = absmax[None, :] ** 2
        error = (weight - fake_quantize_blocks(weight, self.block_size, self.bits)) ** 2
        total = float((weighted * weight**2).sum())
        return float((weighted * error).sum()) / total if total > 0 else 0.0


def site_table(sites: list[dict[str, Any]], declined: list[dict[str, str]], block_size: int,
               bits: int) -> list[str]:
    """Markdown: each site, and each reader's estimated block-quantization SQNR
    (``-10 log10`` of the weighted relative error) before and after the permutation."""
    lines = ["", f"| site (first tensor) | channels | W{bits} block-{block_size} reader SQNR "
             "before -> after (dB) | permuted |", "| --- | ---: | --- | --- |"]
    for site in sites:
        readers = ", ".join(f"{r} {_db(site['error_before'][r]):.2f} -> "
                            f"{_db(site['error_after'][r]):.2f}"
                            for r in sorted(site.get("error_before", {})))
        verdict = (f"yes (sorted by {site['key']})" if site["permuted"]
                   else f"no: {site['reason']}")
        lines.append(f"| `{site['start']}` | {site['channels']} | {readers or '-'} | "
                     f"{verdict} |")
    lines += [f"| `{d['start']}` | - | - | declined: {d['reason']} |" for d in declined]
    return lines + [""]


def _db(error: float) -> float:
    return -10.0 * float(np.log10(max(error, 1e-30)))


def _reduction_columns(graph: Graph, node: Node) -> np.ndarray:
    """The reader's weight as ``[out, channels]`` (float64)."""
    weight = graph.constants[node.inputs[1]].astype(np.float64)
    return weight if WEIGHT_AXIS[node.op] == 1 else weight.T


def _activation_absmax(stats: Mapping[str, np.ndarray], value: str, channels: int
                       ) -> np.ndarray:
    absmax = stats.get(value)
    return absmax.astype(np.float64) if absmax is not None and absmax.shape == (channels,) \
        else np.ones(channels)


def _activation_key(weight: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    return absmax


def _weight_key(weight: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    return np.abs(weight).max(axis=0)


def _contribution_key(weight: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    return absmax * np.abs(weight).max(axis=0)


def _weight_rms_key(weight: np.ndarray, absmax: np.ndarray) -> np.ndarray:
    return np.sqrt((weight**2).mean(axis=0))


CHANNEL_KEYS = {"activation": _activation_key, "weight": _weight_key,
                "contribution": _contribution_key, "weight-rms": _weight_rms_key}
"""Per-channel ranges a site may be sorted by (calibrated max |x_j|, max_o |W[o, j]|, their
product, the column RMS); the pass keeps the order with the lowest estimated error."""


def _site_key(statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
              columns: Mapping[str, np.ndarray], scales: Mapping[str, np.ndarray]
              ) -> np.ndarray:
    """Per channel: the largest ``statistic`` over the site's readers, each reader normalized
    by its largest (readers of one site differ in scale)."""
    keys = []
    for reader, weight in columns.items():
        value = statistic(weight, scales[reader])
        keys.append(value / max(float(value.max()), 1e-30))
    return np.max(keys, axis=0)


def _make(inputs: PassInputs) -> RearrangeChannels:
    assert inputs.calibration is not None  # the registry checks needs_calibration
    options = {k: v for k, v in inputs.options.items() if k in ("block_size", "bits") and v}
    return RearrangeChannels(inputs.calibration, **options)


register_pass(PassEntry("rearrange-channels",
                        "permute reduction channels so that outliers share quantization blocks "
                        "(K-sort / Quamba2 sort-and-cluster)", _make, needs_calibration=True))
