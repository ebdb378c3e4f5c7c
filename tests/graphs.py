"""Small hand-built graphs shared by the IR, pass and CLI tests."""

from __future__ import annotations

import numpy as np

from lowbit.compiler import Graph, GraphBuilder, Sym, TensorType


def conv_relu_linear(seed: int = 0) -> Graph:
    """image[N,2,6,6] -> conv 3x3 -> relu -> global mean -> linear -> logits[N,4]."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder("tiny", metadata={"source": "test"})
    conv_id = builder.capture("conv", "aten.convolution.default")
    relu_id = builder.capture("relu", "aten.relu.default")
    pool_id = builder.capture("pool", "aten.mean.dim")
    fc_id = builder.capture("fc", "aten.linear.default")
    image = builder.add_input("image", TensorType("float32", (Sym(1), 2, 6, 6)))
    weight = builder.add_constant(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "conv.w")
    bias = builder.add_constant(rng.standard_normal(3).astype(np.float32), "conv.b")
    fc_w = builder.add_constant(rng.standard_normal((4, 3)).astype(np.float32), "fc.w")
    conv = builder.add("conv", [image, weight, bias], conv_id,
                       {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1)})
    relu = builder.add("relu", [conv], relu_id)
    pooled = builder.add("reduce_mean", [relu], pool_id, {"axes": (2, 3)})
    logits = builder.add("linear", [pooled, fc_w, ""], fc_id, hint="logits")
    return builder.finish([logits])
