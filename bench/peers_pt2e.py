"""Peer: torch PT2E static quantization with `X86InductorQuantizer`, evaluated in eager mode.

`torch.export` (dynamic batch) -> `prepare_pt2e` with the default x86 inductor config (per-channel
symmetric int8 weights, per-tensor asymmetric uint8 activations, histogram/min-max observers) ->
calibration on the same inputs lowbit gets -> `convert_pt2e`. The converted module is the
reference quantized representation (quantize/dequantize pairs around float ops), run eagerly;
no `torch.compile` lowering is involved.

Dead code is removed before `prepare_pt2e`: MiniLM's BERT computes a pooler (linear -> tanh)
whose output nothing uses, and the quantizer's linear+unary fusion annotation crashes on a
partition without output nodes (`IndexError` in `_get_output_nodes_of_partitions`, torchao
0.18). Removing unused nodes changes no output.

torch 2.13 removed `torch.ao.quantization.quantize_pt2e`; the flow lives in the `torchao` package.
"""

import importlib.metadata

import torch

from lowbit.models import BundledModel, torch_predictor
from lowbit.models.bundled import ArrayDict, PredictFn

CALIB_BATCH = 32


def torchao_version() -> str | None:
    """The installed torchao version, or None when it is not installed."""
    try:
        return importlib.metadata.version("torchao")
    except importlib.metadata.PackageNotFoundError:
        return None


def _batches(calib: ArrayDict, names: tuple[str, ...]) -> list[tuple[torch.Tensor, ...]]:
    count = len(calib[names[0]])
    return [tuple(torch.from_numpy(calib[name][start : start + CALIB_BATCH]) for name in names)
            for start in range(0, count, CALIB_BATCH)]


def torch_pt2e(model: BundledModel, calib: ArrayDict) -> PredictFn:
    """Quantize `model` with PT2E + X86InductorQuantizer; raises ImportError without torchao."""
    if torchao_version() is None:
        raise ImportError("torchao is not installed; torch 2.13 has no "
                          "torch.ao.quantization.quantize_pt2e (pip install torchao)")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batches = _batches(calib, model.input_names)
    batch = torch.export.Dim("batch", min=1)
    dynamic = tuple({0: batch} for _ in model.input_names)
    exported = torch.export.export(model.load(), batches[0], dynamic_shapes=dynamic).module()
    exported.graph.eliminate_dead_code()  # see the module docstring (MiniLM's unused pooler)
    exported.recompile()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for args in batches:
            prepared(*args)
    return torch_predictor(convert_pt2e(prepared), model.input_names, model.output_names)
