"""Per-layer quantization sensitivity (HAWQ-V3, Yao et al. 2021, section 3.3; REFERENCES 3.3):
``Omega_i(b) = Tr(H_i) / n_i * ||Q_b(W_i) - W_i||^2``.

``H_i`` is the Hessian of the loss with respect to layer i's weight ``W_i`` (``n_i`` entries)
on the float torch model, and ``Tr(H_i)`` is estimated by Hutchinson's method: for Rademacher
``z``, ``E[z^T H z] = Tr H``; each ``H z`` is one autograd Hessian-vector product (a second
backward pass through the gradient). The estimate stops once its standard error is below
``rel_tol`` of its magnitude (PyHessian's rule) or after ``max_samples`` products, and it carries
that standard error. ``Q_b`` is lowbit's own per-channel symmetric weight quantizer
(``qparams.quantize_weight_per_channel``) applied to the weight exactly as the lowering sees it
after the float passes, its rounding error mapped back to the torch parameter (``perturbation``).
Not seen: the lowering's own SmoothQuant column migration of LayerNorm -> linear (text
transformers; vision transformers get RepQ-ViT as a float pass, which is seen).

Loss: cross-entropy against labels when the data has them; otherwise (MiniLM, any model without
labels) the mean squared distance to the float model's own output, whose Hessian at the float
weights is the Gauss-Newton matrix ``2/m J^T J`` (the residual is zero there). A graph without a
torch module (a plain ONNX file) has no autograd and is declined by the caller.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from lowbit.compiler.errors import LowbitError
from lowbit.passes.mixed_precision.layers import QuantLayer
from lowbit.passes.quantize.qparams import quantize_weight_per_channel

BITS = (4, 8)


@dataclass(frozen=True)
class HutchinsonConfig:
    min_samples: int = 16
    max_samples: int = 100
    rel_tol: float = 0.05
    """Stop when the standard error is below this fraction of |estimate|."""
    seed: int = 0


@dataclass(frozen=True)
class TraceEstimate:
    mean: float
    stderr: float
    """Standard error of ``mean``: sample standard deviation of z^T H z over sqrt(samples)."""
    samples: int


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    params: int
    trace: TraceEstimate
    perturbation: Mapping[int, float]
    """``||Q_b(W) - W||^2`` per weight bit width b."""

    def omega(self, bits: int) -> float:
        """HAWQ-V3's sensitivity of this layer at ``bits``: average trace times perturbation."""
        return self.trace.mean / self.params * self.perturbation[bits]


def rademacher(shape: torch.Size, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """A tensor of independent +-1 entries, each with probability 1/2."""
    return (torch.randint(0, 2, shape, generator=generator) * 2 - 1).to(dtype)


def hutchinson_trace(gradient: torch.Tensor, parameter: torch.Tensor,
                     config: HutchinsonConfig = HutchinsonConfig(),
                     generator: torch.Generator | None = None) -> TraceEstimate:
    """Tr of d(gradient)/d(parameter), where ``gradient`` came from ``torch.autograd.grad(...,
    create_graph=True)``; its graph is kept for further calls."""
    generator = generator or torch.Generator().manual_seed(config.seed)
    values: list[float] = []
    while len(values) < config.max_samples:
        z = rademacher(parameter.shape, parameter.dtype, generator)
        (product,) = torch.autograd.grad(gradient, parameter, grad_outputs=z, retain_graph=True)
        values.append(float((z * product).sum()))
        if len(values) >= config.min_samples:
            estimate = _summary(values)
            if estimate.stderr <= config.rel_tol * abs(estimate.mean):
                return estimate
    return _summary(values)


def _summary(values: Sequence[float]) -> TraceEstimate:
    array = np.asarray(values, dtype=np.float64)
    spread = float(array.std(ddof=1)) if len(array) > 1 else math.inf
    return TraceEstimate(float(array.mean()), spread / math.sqrt(len(array)), len(array))


def perturbation(weight: np.ndarray, bits: int, lowered: np.ndarray | None = None) -> float:
    """``||Q_b(W) - W||^2`` in the torch parameter's basis, with lowbit's per-output-channel
    symmetric quantizer.

    ``lowered`` is the same weight as the lowering quantizes it, after float passes rescaled
    its rows and columns (BN folding, cross-layer equalization, RepQ-ViT: ``W_g = W * scaling``
    entrywise); its rounding error is mapped back to the parameter entrywise by ``W / W_g``
    (zero where ``W_g`` is zero, whose error is zero too)."""
    target = weight if lowered is None else lowered
    if target.shape != weight.shape:
        raise LowbitError(f"lowered weight {list(target.shape)} does not match the parameter "
                          f"{list(weight.shape)}")
    codes, scales = quantize_weight_per_channel(target, bits)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    exact = target.astype(np.float64)
    error = codes.astype(np.float64) * scales.reshape(shape) - exact
    if lowered is not None:
        error *= np.divide(weight.astype(np.float64), exact, out=np.zeros_like(exact),
                           where=exact != 0)
    return float((error * error).sum())


def model_loss(module: torch.nn.Module, inputs: Sequence[torch.Tensor],
               labels: torch.Tensor | None) -> torch.Tensor:
    """Cross-entropy on ``labels``; without labels, mean squared distance to the float output."""
    output = module(*inputs)
    output = output[0] if isinstance(output, (tuple, list)) else output
    if labels is not None:
        return torch.nn.functional.cross_entropy(output, labels)
    return ((output - output.detach()) ** 2).mean()


def layer_parameters(module: torch.nn.Module, layers: Sequence[QuantLayer]
                     ) -> list[torch.nn.Parameter]:
    """The module parameter behind each layer's weight (matched by captured constant name)."""
    named = dict(module.named_parameters())
    missing = [layer.weight for layer in layers if layer.weight not in named]
    if missing:
        raise LowbitError(f"weights {missing} are not parameters of the torch module; Hessian "
                          "sensitivity needs the module the graph was captured from")
    return [named[layer.weight].requires_grad_(True) for layer in layers]


def layer_sensitivities(module: torch.nn.Module, layers: Sequence[QuantLayer],
                        inputs: Sequence[torch.Tensor], labels: torch.Tensor | None,
                        config: HutchinsonConfig = HutchinsonConfig(),
                        progress: bool = True,
                        lowered: Mapping[str, np.ndarray] | None = None
                        ) -> list[LayerSensitivity]:
    """``Omega`` ingredients of every layer: Hutchinson trace and perturbation per bit width;
    ``lowered`` maps layer names to the weights the lowering quantizes (see ``perturbation``)."""
    module = module.eval()
    parameters = layer_parameters(module, layers)
    generator = torch.Generator().manual_seed(config.seed)
    result = []
    with single_threaded():
        loss = model_loss(module, inputs, labels)
        gradients = torch.autograd.grad(loss, parameters, create_graph=True)
        bar = tqdm(zip(layers, parameters, gradients), total=len(layers),
                   desc="Hessian traces", unit="layer", file=sys.stderr, disable=not progress)
        for layer, parameter, gradient in bar:
            bar.set_postfix_str(layer.name)
            trace = hutchinson_trace(gradient, parameter, config, generator)
            weight = parameter.detach().numpy()
            target = None if lowered is None else lowered[layer.name]
            result.append(LayerSensitivity(layer.name, layer.params, trace,
                                           {b: perturbation(weight, b, target) for b in BITS}))
    return result


@contextmanager
def single_threaded() -> Iterator[None]:
    """One torch intra-op thread, restored afterwards: the Hessian-vector products of these
    small layers are many short kernels, which extra threads only slow down (measured 8x on the
    shared 2-core CI machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
