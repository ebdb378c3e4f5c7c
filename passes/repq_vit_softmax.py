"""RepQ-ViT post-softmax: attention probabilities get a log2(sqrt 2) quantizer, deployed as
plain log2 shifts.

RepQ-ViT (Li et al., ICCV 2023, section 4.3; ``zkkli/RepQ-ViT`` ``quant/quantizer.py``): a
probability ``A`` in ``(0, 1]`` has the code ``q = round(-2 log2(A / D))`` clamped to the
``bits``-bit range and reads back as ``D 2^(-q/2)``; here the highest code ``2^bits - 1`` is
reserved for 0 (RepQ-ViT's underflow mask), so codes ``0 .. 2^bits - 2`` are live. ``D`` is
calibrated by RepQ-ViT's search: of the quantiles {0.999, 0.9999, 0.99999} and the maximum of
the calibration probabilities, the one with the smallest L2 quantization error. The
reparameterization to a shift-only quantizer splits the codes by parity,
``D 2^(-q/2) = D 2^(-floor(q/2)) (1/sqrt 2)^(q mod 2)``: the product ``A V`` is two sums of
``V`` shifted by ``floor(q/2)`` and one constant multiply of the odd sum (the integer op
``int_log2_matmul``, lowered by ``passes.quantize.lowering_log2``).

This pass only annotates: it records ``{bits, delta}`` per softmax node in
``graph.metadata[LOG2_SOFTMAX_KEY]``; float semantics are unchanged, no node changes. It
annotates softmaxes over the last axis whose only reader is the ``A @ V`` matmul (``A`` its
first operand) and declines the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, PassInputs, register_pass
from lowbit.passes.scale_folding import channel_samples, tabulated

LOG2_SOFTMAX_KEY = "log2_softmax"
"""Graph metadata: softmax node name -> {"bits": int, "delta": float}."""
QUANTILES = (0.999, 0.9999, 0.99999)
SAMPLE_LIMIT = 1 << 20


def zero_code(bits: int) -> int:
    """The code that reads as 0; codes below it are live."""
    return (1 << bits) - 1


def log_sqrt2_codes(probs: np.ndarray, delta: float, bits: int) -> np.ndarray:
    """``clamp(round(-2 log2(A / D)), 0, zero_code)``; ``A`` at or below the last live level's
    rounding boundary (and ``A = 0``) gets ``zero_code``."""
    with np.errstate(divide="ignore"):
        q = np.rint(-2.0 * np.log2(probs.astype(np.float64) / delta))
    return np.clip(np.nan_to_num(q, posinf=zero_code(bits)), 0, zero_code(bits)).astype(np.int64)


def log_sqrt2_values(codes: np.ndarray, delta: float, bits: int) -> np.ndarray:
    """``D 2^(-q/2)``, 0 for the zero code."""
    return np.where(codes < zero_code(bits), delta * 2.0 ** (-codes / 2.0), 0.0)


def search_delta(probs: np.ndarray, bits: int) -> tuple[float, float]:
    """RepQ-ViT's quantile search: the ``D`` with the smallest L2 error, and that error."""
    candidates = [float(np.quantile(probs, q)) for q in QUANTILES] + [float(probs.max())]
    errors = [float(np.square(probs - log_sqrt2_values(log_sqrt2_codes(probs, d, bits), d,
                                                       bits)).sum()) for d in candidates]
    best = int(np.argmin(errors))
    return candidates[best], errors[best]


def attention_softmaxes(graph: Graph) -> list[Node]:
    users = graph.consumers()
    found = []
    for node in graph.nodes:
        readers = users.get(node.outputs[0], [])
        rank = graph.types[node.inputs[0]].rank
        if (node.op == "softmax" and node.attrs.get("axis", -1) in (-1, rank - 1)
                and len(readers) == 1 and readers[0].op == "matmul"
                and readers[0].inputs[0] == node.outputs[0]
                and node.outputs[0] not in graph.outputs):
            found.append(node)
    return found


@dataclass(frozen=True)
class RepqVitSoftmax:
    calibration: Mapping[str, np.ndarray] = field(repr=False)
    bits: int = 4
    name: str = "repq-vit-softmax"

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 6:
            raise ValueError(f"log2 softmax codes need 2 to 6 bits, got {self.bits}")

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        nodes = attention_softmaxes(result)
        samples = channel_samples(result, self.calibration, [n.outputs[0] for n in nodes])
        annotations = result.metadata.setdefault(LOG2_SOFTMAX_KEY, {})
        stats: dict[str, Any] = {"bits": self.bits, "layers": {}}
        for node in nodes:
            probs = samples[node.outputs[0]].reshape(-1)
            probs = probs[np.linspace(0, probs.size - 1, min(probs.size, SAMPLE_LIMIT))
                          .astype(np.int64)].astype(np.float64)
            delta, error = search_delta(probs, self.bits)
            annotations[node.name] = {"bits": self.bits, "delta": delta}
            uniform = np.rint(probs * (2**self.bits - 1)) / (2**self.bits - 1)
            stats["layers"][node.name] = {
                "delta": delta, "range": [float(probs.min()), float(probs.max())],
                "sqnr_db_log_sqrt2": _sqnr(probs, error),
                "sqnr_db_uniform_same_bits": _sqnr(probs, float(np.square(probs - uniform).sum()))}
        return PassResult(result, bool(nodes), tabulated(stats, "layers"))


def _sqnr(values: np.ndarray, error: float) -> float:
    return float(10 * np.log10(np.square(values).sum() / max(error, 1e-30)))


def make(inputs: PassInputs) -> RepqVitSoftmax:
    assert inputs.calibration is not None
    return RepqVitSoftmax(inputs.calibration, int(inputs.options.get("softmax_bits", 4)))


register_pass(PassEntry("repq-vit-softmax", "RepQ-ViT: log2(sqrt 2) quantizer for attention "
                        "probabilities, lowered to shift-only P@V (annotation; float graph "
                        "unchanged)", make, needs_calibration=True))
