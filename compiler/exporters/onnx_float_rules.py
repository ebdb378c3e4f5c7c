"""ONNX export rules for the float ops of captured graphs (``lowbit pass`` writes ONNX-out).

Invariant: onnxruntime running the exported float graph matches the reference interpreter to
float32 tolerance (these ops are not bit-exact: ONNX Runtime and numpy order sums
differently). Each rule maps one lowbit op to the default-domain ONNX ops of opset 17 with
the same semantics: ``linear`` is ``MatMul`` by the transposed weight plus the bias, GELU and
SiLU are written out (opset 17 has no ``Gelu``), ``layer_norm`` is ``LayerNormalization``
over ``axis..-1`` with unit scale when the graph has none.
"""

from __future__ import annotations

import math

import numpy as np

from lowbit.compiler.exporters.onnx_emit import Emitter, ExportRule, Operand, registrar

FLOAT_RULES: dict[str, ExportRule] = {}
rule = registrar(FLOAT_RULES)

UNARY_OP_TYPES = {"abs": "Abs", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "tanh": "Tanh",
                  "sigmoid": "Sigmoid", "erf": "Erf", "reciprocal": "Reciprocal"}
BINARY_OP_TYPES = {"div": "Div", "pow": "Pow"}


def _unary(op_type: str) -> ExportRule:
    def export(em: Emitter, x: Operand) -> str:
        return em.node(op_type, [em.use(x)])
    export.__name__ = f"export_{op_type.lower()}"
    return export


def _binary(op_type: str) -> ExportRule:
    def export(em: Emitter, a: Operand, b: Operand) -> str:
        return em.node(op_type, [em.use(a), em.use(b)])
    export.__name__ = f"export_{op_type.lower()}"
    return export


for _op, _op_type in UNARY_OP_TYPES.items():
    rule(_op)(_unary(_op_type))
for _op, _op_type in BINARY_OP_TYPES.items():
    rule(_op)(_binary(_op_type))


def _plus_bias(em: Emitter, y: str, b: Operand | None, shape: tuple[int, ...]) -> str:
    if b is None:
        return y
    bias = em.use(b) if shape == (-1,) else em.node(
        "Reshape", [em.use(b), em.const(np.array(shape, np.int64), "int64", "shape")])
    return em.add(y, bias)


@rule("linear")
def export_linear(em: Emitter, x: Operand, w: Operand, b: Operand | None) -> str:
    weight_t = (em.const(np.ascontiguousarray(w.value.T), w.dtype, "weight_t")
                if w.value is not None else em.node("Transpose", [em.use(w)], perm=[1, 0]))
    return _plus_bias(em, em.node("MatMul", [em.use(x), weight_t]), b, (-1,))


@rule("matmul")
def export_matmul(em: Emitter, a: Operand, b: Operand) -> str:
    return em.node("MatMul", [em.use(a), em.use(b)])


@rule("conv")
def export_conv(em: Emitter, x: Operand, w: Operand, b: Operand | None, *,
                strides: tuple[int, ...], pads: tuple[int, ...], dilations: tuple[int, ...],
                groups: int) -> str:
    inputs = [em.use(x), em.use(w)] + ([em.use(b)] if b is not None else [])
    return em.node("Conv", inputs, strides=list(strides), pads=list(pads),
                   dilations=list(dilations), group=groups,
                   kernel_shape=[int(k) for k in w.shape[2:]])


@rule("batch_norm")
def export_batch_norm(em: Emitter, x: Operand, scale: Operand, bias: Operand, mean: Operand,
                      var: Operand, *, eps: float) -> str:
    return em.node("BatchNormalization", [em.use(v) for v in (x, scale, bias, mean, var)],
                   epsilon=float(eps))


@rule("layer_norm")
def export_layer_norm(em: Emitter, x: Operand, w: Operand | None, b: Operand | None, *,
                      axis: int, eps: float) -> str:
    axis = axis % x.type.rank
    normalized = tuple(int(d) for d in x.shape[axis:])
    scale = em.use(w) if w is not None else em.const(np.ones(normalized), x.dtype, "ones")
    inputs = [em.use(x), scale] + ([em.use(b)] if b is not None else [])
    return em.node("LayerNormalization", inputs, axis=axis, epsilon=float(eps))


@rule("softmax")
def export_softmax(em: Emitter, x: Operand, *, axis: int) -> str:
    return em.node("Softmax", [em.use(x)], axis=axis)


@rule("gelu")
def export_gelu(em: Emitter, x: Operand, *, approximate: str) -> str:
    """0.5 x (1 + erf(x / sqrt 2)), or the tanh form with sqrt(2/pi) (x + 0.044715 x^3)."""
    value = em.use(x)
    if approximate == "tanh":
        cubic = em.mul(em.mul(em.mul(value, value), value), 0.044715)
        inner = em.mul(em.add(value, cubic), math.sqrt(2.0 / math.pi))
        gate = em.node("Tanh", [inner])
    else:
        gate = em.node("Erf", [em.mul(value, 1.0 / math.sqrt(2.0))])
    return em.mul(em.mul(value, em.add(gate, 1.0)), 0.5)


@rule("silu")
def export_silu(em: Emitter, x: Operand) -> str:
    value = em.use(x)
    return em.mul(value, em.node("Sigmoid", [value]))


@rule("avg_pool")
def export_avg_pool(em: Emitter, x: Operand, *, kernel: tuple[int, ...],
                    strides: tuple[int, ...], pads: tuple[int, ...],
                    count_include_pad: bool) -> str:
    return em.node("AveragePool", [em.use(x)], kernel_shape=list(kernel),
                   strides=list(strides), pads=list(pads),
                   count_include_pad=int(count_include_pad))


@rule("reduce_mean")
def export_reduce_mean(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool
                       ) -> str:
    return em.node("ReduceMean", [em.use(x)], axes=list(axes), keepdims=int(keepdims))


@rule("reduce_sum")
def export_reduce_sum(em: Emitter, x: Operand, *, axes: tuple[int, ...], keepdims: bool
                      ) -> str:
    return em.reduce_sum(em.use(x), axes, keepdims)
