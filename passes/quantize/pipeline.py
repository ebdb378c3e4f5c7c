"""The compile pipeline: float clean-up passes, calibration, integer lowering, checks.

``compile_graph`` never mutates its input; it returns the float graph the calibration saw, the
integer program and what each step did, for the compile report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.passes.manager import PassManager, PassRecord
from lowbit.passes.quantize.block_quant import BLOCK_SIZES
from lowbit.passes.quantize.calibrate import Calibration, calibrate
from lowbit.passes.quantize.lowering import LoweringOptions, lower_graph
from lowbit.passes.quantize.range_analysis import RangeReport, analyze_ranges
from lowbit.passes.registry import PassInputs, make_passes

CLEANUP_PASSES = ("fold-batch-norm", "dead-code")
SUPPORTED_BITS = frozenset({4, 8})


@dataclass(frozen=True)
class CompileOptions:
    bits: int = 8
    """Weight bits of conv/linear layers (``layer_bits`` overrides per float node name)."""
    activation_bits: int = 8
    layer_bits: Mapping[str, int] = field(default_factory=dict)
    passes: tuple[str, ...] | None = None
    """Float passes by registry name, run after clean-up; ``None``: ``default_passes``."""
    calibration_method: str = "minmax"
    symmetric_activations: bool = False
    migration_alpha: float | None = 0.8
    block_size: int | None = None
    """Per-block linear weight scales (``BLOCK_SIZES``); None: per output channel."""
    progress: bool = True


@dataclass(frozen=True)
class CompileResult:
    float_graph: Graph
    integer_graph: Graph
    calibration: Calibration
    pass_records: list[PassRecord]
    lowering_stats: dict[str, Any]
    ranges: RangeReport


@dataclass(frozen=True)
class Family:
    """A model family, recognized by ops its graph has, and its default float passes (at 8-bit
    weights, and at narrower ones)."""

    name: str
    has: frozenset[str]
    passes: tuple[str, ...]
    low_bit_passes: tuple[str, ...]


FAMILIES = (
    # ViT and BERT at W8: the lowering's own LayerNorm migration (the same SmoothQuant formula,
    # no duplicated LayerNorm); no float pass beat it beyond one test sample in
    # `lowbit bench all --suite passes` (BENCHMARKS.md). At W4 the fixed strength (alpha 0.8)
    # loads the outliers onto 4-bit weights; AWQ's search at the actual bits picks the strength
    # on calibration data (MiniLM W4A8 cosine 0.868 -> 0.922, digits-vit 97.33% -> 98.00%).
    Family("transformer", frozenset({"layer_norm"}), (), ("awq",)),
    # DFQ equalization: +1.1 points at W4A8 and +1.6 at W4A4 on digits-cnn, neutral at W8A8
    Family("convolutional network", frozenset({"conv"}), ("equalize",), ("equalize",)),
)
"""First match wins; a graph no row matches gets no float pass."""


def default_passes(graph: Graph, bits: int = 8) -> tuple[str, ...]:
    """The float passes a model gets at ``bits``-bit weights when ``--passes`` is not given
    (clean-up always runs)."""
    ops = set(graph.op_histogram())
    family = next((f for f in FAMILIES if f.has <= ops), None)
    if family is None:
        return ()
    return family.passes if bits >= 8 else family.low_bit_passes


def compile_graph(graph: Graph, calibration_data: Mapping[str, np.ndarray],
                  options: CompileOptions = CompileOptions()) -> CompileResult:
    widths = {options.bits, options.activation_bits, *options.layer_bits.values()}
    if not widths <= SUPPORTED_BITS:
        raise ValueError(f"bit widths {sorted(widths - SUPPORTED_BITS)} are not supported; "
                         f"choose from {sorted(SUPPORTED_BITS)}")
    if options.block_size is not None and options.block_size not in BLOCK_SIZES:
        raise ValueError(f"block size {options.block_size} is not one of {BLOCK_SIZES}")
    narrowest = min([options.bits, *options.layer_bits.values()])
    chosen = default_passes(graph, narrowest) if options.passes is None else options.passes
    pass_options = {"bits": options.bits, "activation_bits": options.activation_bits,
                    "layer_bits": dict(options.layer_bits), "alpha": options.migration_alpha,
                    "block_size": options.block_size}
    passes = make_passes(CLEANUP_PASSES + tuple(chosen), PassInputs(calibration_data,
                                                                     pass_options))
    float_graph, records = PassManager(passes).run(graph)
    calibration = calibrate(float_graph, calibration_data, method=options.calibration_method,
                            progress=options.progress)
    lowering = LoweringOptions(bits=options.bits, activation_bits=options.activation_bits,
                               layer_bits=dict(options.layer_bits),
                               symmetric_activations=options.symmetric_activations,
                               migration_alpha=options.migration_alpha,
                               block_size=options.block_size)
    integer_graph, stats = lower_graph(float_graph, calibration.ranges, lowering,
                                       calibration.channel_absmax)
    return CompileResult(float_graph, integer_graph, calibration, records, stats,
                         analyze_ranges(integer_graph))
