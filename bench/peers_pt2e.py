"""Peer: torch PT2E static quantization with `X86InductorQuantizer`, evaluated in eager mode.

`torch.export` (dynamic batch) -> `prepare_pt2e` with the default x86 inductor config (per-channel
symmetric int8 weights, per-tensor asymmetric uint8 activations, histogram/min-max observers) ->
calibration on the same inputs lowbit gets -> `convert_pt2e`. The W4A8 row changes only the
weight spec: int8 storage restricted to [-8, 7] (4-bit codes), still per-channel symmetric with
the same observer, which PT2E hands those bounds. The converted module is the
reference quantized representation (quantize/dequantize pairs around float ops), run eagerly;
no `torch.compile` lowering is involved.

Dead code is removed before `prepare_pt2e`: MiniLM's BERT computes a pooler (linear -> tanh)
whose output nothing uses, and the quantizer's linear+unary fusion annotation crashes on a
partition without output nodes (`IndexError` in `_get_output_nodes_of_partitions`, torchao
0.18). Removing unused nodes changes no output.

torch 2.13 removed `torch.ao.quantization.quantize_pt2e`; the flow lives in the `torchao` package.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from lowbit.bench.peers_packages import installed_version, require
from lowbit.models import BundledModel, torch_predictor
from lowbit.models.bundled import ArrayDict, PredictFn

if TYPE_CHECKING:
    from torchao.quantization.pt2e.quantizer.utils import QuantizationConfig

CALIB_BATCH = 32
INT4_RANGE = (-8, 7)


def torchao_version() -> str | None:
    """The installed torchao version, or None when it is not installed."""
    return installed_version("torchao")


def _batches(calib: ArrayDict, names: tuple[str, ...]) -> list[tuple[torch.Tensor, ...]]:
    count = len(calib[names[0]])
    return [tuple(torch.from_numpy(calib[name][start : start + CALIB_BATCH]) for name in names)
            for start in range(0, count, CALIB_BATCH)]


def int8_config() -> QuantizationConfig:
    """X86InductorQuantizer's default config; raises ImportError without torchao."""
    require("torchao", "torch 2.13 has no torch.ao.quantization.quantize_pt2e")
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        get_default_x86_inductor_quantization_config,
    )
    return get_default_x86_inductor_quantization_config()


def w4a8_config() -> QuantizationConfig:
    """The default config with 4-bit codes ([-8, 7] in int8) for the weights."""
    config = int8_config()
    low, high = INT4_RANGE
    return dataclasses.replace(config, weight=dataclasses.replace(config.weight, quant_min=low,
                                                                  quant_max=high))


def quantize_with_pt2e(model: BundledModel, calib: ArrayDict,
                       config: QuantizationConfig) -> torch.fx.GraphModule:
    """Export, prepare with X86InductorQuantizer set to `config`, calibrate on `calib` and
    convert `model`: the reference quantized representation."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer

    batches = _batches(calib, model.input_names)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in model.input_names)
    exported = torch.export.export(model.load(), batches[0], dynamic_shapes=dynamic).module()
    exported.graph.eliminate_dead_code()  # see the module docstring (MiniLM's unused pooler)
    exported.recompile()
    prepared = prepare_pt2e(exported, X86InductorQuantizer().set_global(config))
    with torch.no_grad():
        for args in batches:
            prepared(*args)
    return convert_pt2e(prepared)


def torch_pt2e(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """Quantize `model` with PT2E + X86InductorQuantizer; raises ImportError without torchao."""
    return torch_predictor(quantize_with_pt2e(model, calib, int8_config()), model.input_names,
                           model.output_names)


def torch_pt2e_w4a8(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """PT2E as `torch_pt2e` with 4-bit weight codes; raises ImportError without torchao."""
    return torch_predictor(quantize_with_pt2e(model, calib, w4a8_config()), model.input_names,
                           model.output_names)
