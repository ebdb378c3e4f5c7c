"""BatchNorm folding: ``batch_norm(conv(x, W, b))`` becomes ``conv(x, W', b')``.

With ``k = gamma / sqrt(var + eps)`` per output channel: ``W' = W * k`` and
``b' = (b - mean) * k + beta`` (HAWQ-V3; Jacob et al. 2018, section 3.2). Exact in real
arithmetic, so float outputs change only by float32 rounding. The folded conv carries the
origins of both nodes. A batch_norm whose input is not a conv/linear output used only by it is
left alone (and reported in the stats).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.compiler.ir import Graph, Node
from lowbit.passes.manager import PassResult
from lowbit.passes.registry import PassEntry, register_pass

_FOLDABLE = ("conv", "linear")


def folded_parameters(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray,
                      beta: np.ndarray, mean: np.ndarray, var: np.ndarray,
                      eps: float) -> tuple[np.ndarray, np.ndarray]:
    k = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    new_weight = (weight * k.reshape(shape)).astype(weight.dtype)
    old_bias = np.zeros_like(mean, dtype=np.float64) if bias is None else bias
    new_bias = ((old_bias - mean) * k + beta).astype(weight.dtype)
    return new_weight, new_bias


@dataclass(frozen=True)
class FoldBatchNorm:
    name: str = "fold-batch-norm"

    def run(self, graph: Graph) -> PassResult:
        result = graph.copy()
        producers = result.producers()
        users = result.consumers()
        folded, skipped = [], []
        for bn in [n for n in result.nodes if n.op == "batch_norm"]:
            layer = producers.get(bn.inputs[0])
            params = [result.constants.get(v) for v in bn.inputs[1:]]
            if (layer is None or layer.op not in _FOLDABLE or len(users[bn.inputs[0]]) != 1
                    or bn.inputs[0] in result.outputs or any(p is None for p in params)
                    or (layer.op == "linear" and result.types[bn.inputs[0]].rank != 2)
                    or layer.inputs[1] not in result.constants
                    or (len(layer.inputs) > 2 and layer.inputs[2]
                        and layer.inputs[2] not in result.constants)):
                skipped.append(bn.name)
                continue
            self._fold(result, layer, bn, params)
            folded.append(bn.name)
        return PassResult(result, bool(folded), {"folded": folded, "skipped": skipped})

    @staticmethod
    def _fold(graph: Graph, layer: Node, bn: Node, params: list[np.ndarray]) -> None:
        gamma, beta, mean, var = params
        weight = graph.constants[layer.inputs[1]]
        bias_name = layer.inputs[2] if len(layer.inputs) > 2 else ""
        bias = graph.constants[bias_name] if bias_name else None
        new_weight, new_bias = folded_parameters(weight, bias, gamma, beta, mean, var,
                                                 float(bn.attrs.get("eps", 1e-5)))
        weight_name = f"{layer.name}.folded_weight"
        bias_name = f"{layer.name}.folded_bias"
        for name, array in ((weight_name, new_weight), (bias_name, new_bias)):
            array.flags.writeable = False
            graph.constants[name] = array
            graph.types[name] = graph.types[layer.inputs[1]].with_shape(array.shape)
        layer.inputs = (layer.inputs[0], weight_name, bias_name)
        old_output = layer.outputs[0]
        layer.outputs = bn.outputs
        layer.origin = layer.origin | bn.origin
        graph.nodes.remove(bn)
        del graph.types[old_output]


register_pass(PassEntry("fold-batch-norm", "fold BatchNorm into the preceding conv/linear",
                        lambda inputs: FoldBatchNorm()))
