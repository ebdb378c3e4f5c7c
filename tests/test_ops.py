"""Every row of the op table against torch's own implementation of the same op.

Each case builds a one-node graph, checks that shape inference agrees with the shape torch
produces, and that the float kernel agrees with torch to float tolerance. A row without a case
fails ``test_every_op_has_a_case``, so a new op cannot land untested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lowbit.compiler import OP_TABLE, GraphBuilder, Sym, TensorType
from lowbit.runtime import run_graph


@dataclass
class Case:
    op: str
    inputs: list[np.ndarray]
    reference: Callable[..., torch.Tensor]
    attrs: dict[str, Any] = field(default_factory=dict)
    constant_inputs: tuple[int, ...] = ()
    id: str = ""


RNG = np.random.default_rng(7)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (RNG.random(shape) + 0.1).astype(np.float32)


CASES = [
    Case("relu", [f32(3, 5)], torch.relu),
    Case("sigmoid", [f32(3, 5)], torch.sigmoid),
    Case("silu", [f32(3, 5)], F.silu),
    Case("tanh", [f32(3, 5)], torch.tanh),
    Case("erf", [f32(3, 5)], torch.erf),
    Case("exp", [f32(3, 5)], torch.exp),
    Case("log", [pos(3, 5)], torch.log),
    Case("sqrt", [pos(3, 5)], torch.sqrt),
    Case("neg", [f32(3, 5)], torch.neg),
    Case("abs", [f32(3, 5)], torch.abs),
    Case("reciprocal", [pos(3, 5)], torch.reciprocal),
    Case("gelu", [f32(4, 6)], F.gelu, id="erf"),
    Case("gelu", [f32(4, 6)], lambda x: F.gelu(x, approximate="tanh"), {"approximate": "tanh"},
         id="tanh"),
    Case("clip", [f32(4, 6) * 5], F.relu6, {"min": 0.0, "max": 6.0}, id="relu6"),
    Case("clip", [f32(4, 6)], lambda x: torch.clamp(x, max=0.5), {"max": 0.5}, id="max-only"),
    Case("cast", [f32(4, 6) * 9], lambda x: x.to(torch.int64), {"to": "int64"}),
    Case("add", [f32(2, 3, 4), f32(3, 1)], torch.add),
    Case("sub", [f32(2, 3, 4), f32(4)], torch.sub),
    Case("mul", [f32(2, 1, 4), f32(3, 1)], torch.mul),
    Case("div", [f32(2, 3, 4), pos(1, 4)], torch.div),
    Case("div", [np.array([7, -7, 5], np.int64), np.array([2, 2, -3], np.int64)],
         lambda a, b: torch.div(a, b, rounding_mode="trunc"), id="int-trunc"),
    Case("pow", [pos(2, 3), np.array(2.5, np.float32)], torch.pow),
    Case("maximum", [f32(2, 3), f32(3)], torch.maximum),
    Case("minimum", [f32(2, 3), f32(3)], torch.minimum),
    Case("equal", [np.array([[1, 2], [3, 4]], np.int64), np.array([2], np.int64)], torch.eq),
    Case("where", [f32(2, 3) > 0, f32(2, 3), f32(3)], torch.where),
    Case("linear", [f32(2, 5, 8), f32(6, 8), f32(6)], F.linear, constant_inputs=(1, 2)),
    Case("linear", [f32(4, 8), f32(6, 8)], F.linear, constant_inputs=(1,), id="no-bias"),
    Case("matmul", [f32(2, 3, 4, 5), f32(3, 5, 6)], torch.matmul),
    Case("conv", [f32(2, 4, 9, 9), f32(6, 2, 3, 3), f32(6)],
         lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=(1, 2), groups=2),
         {"strides": (2, 2), "pads": (1, 2, 1, 2), "dilations": (1, 2), "groups": 2},
         constant_inputs=(1, 2), id="grouped-strided-dilated"),
    Case("conv", [f32(2, 4, 7, 7), f32(4, 1, 3, 3)],
         lambda x, w: F.conv2d(x, w, padding=1, groups=4),
         {"strides": (1, 1), "pads": (1, 1, 1, 1), "dilations": (1, 1), "groups": 4},
         constant_inputs=(1,), id="depthwise"),
    Case("conv", [f32(2, 3, 11), f32(5, 3, 4), f32(5)],
         lambda x, w, b: F.conv1d(x, w, b, stride=3, padding=2),
         {"strides": (3,), "pads": (2, 2), "dilations": (1,), "groups": 1},
         constant_inputs=(1, 2), id="1d"),
    Case("batch_norm", [f32(2, 3, 4, 4), f32(3), f32(3), f32(3), pos(3)],
         lambda x, s, b, m, v: F.batch_norm(x, m, v, s, b, eps=1e-3),
         {"eps": 1e-3}, constant_inputs=(1, 2, 3, 4)),
    Case("layer_norm", [f32(2, 5, 8) * 3 + 1, f32(8), f32(8)],
         lambda x, w, b: F.layer_norm(x, (8,), w, b), constant_inputs=(1, 2)),
    Case("layer_norm", [f32(2, 5, 8)], lambda x: F.layer_norm(x, (5, 8), eps=1e-6),
         {"axis": -2, "eps": 1e-6}, id="two-axes-no-affine"),
    Case("softmax", [f32(2, 3, 7) * 4], lambda x: torch.softmax(x, 1), {"axis": 1}),
    Case("max_pool", [f32(2, 3, 9, 9)],
         lambda x: F.max_pool2d(x, 3, stride=2, padding=1, ceil_mode=True),
         {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "dilations": (1, 1),
          "ceil_mode": True}, id="ceil-padded"),
    Case("max_pool", [f32(2, 3, 8, 8)], lambda x: F.max_pool2d(x, 2, dilation=2),
         {"kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 0, 0), "dilations": (2, 2)},
         id="dilated"),
    Case("avg_pool", [f32(2, 3, 9, 9)],
         lambda x: F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False),
         {"kernel": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "count_include_pad": False},
         id="exclude-pad"),
    Case("avg_pool", [f32(2, 3, 8, 8)], lambda x: F.avg_pool2d(x, 2, padding=1),
         {"kernel": (2, 2), "strides": (2, 2), "pads": (1, 1, 1, 1), "count_include_pad": True},
         id="include-pad"),
    Case("reduce_mean", [f32(2, 3, 4, 4)], lambda x: x.mean((2, 3), keepdim=True),
         {"axes": (2, 3), "keepdims": True}),
    Case("reduce_sum", [f32(2, 3, 4)], lambda x: x.sum(-1), {"axes": (-1,)}),
    Case("reduce_max", [f32(2, 3, 4)], lambda x: x.amax(1), {"axes": (1,)}),
    Case("reshape", [f32(2, 3, 4)], lambda x: x.reshape(2, 12), {"shape": (Sym(1), 12)}),
    Case("reshape", [f32(2, 6, 4)], lambda x: x.reshape(6, 2, 4), {"shape": (Sym(3), 2, 4)},
         id="batch-folded"),
    Case("transpose", [f32(2, 3, 4)], lambda x: x.permute(0, 2, 1), {"perm": (0, 2, 1)}),
    Case("slice", [f32(2, 9, 4)], lambda x: x[:, 1:8:3, -3:],
         {"axes": (1, 2), "starts": (1, -3), "ends": (8, 2**63 - 1), "steps": (3, 1)}),
    Case("concat", [f32(2, 3, 4), f32(2, 5, 4)], lambda a, b: torch.cat([a, b], 1),
         {"axis": 1}),
    Case("gather", [f32(10, 4), np.array([[1, 9], [0, 3]], np.int64)],
         lambda w, i: F.embedding(i, w), constant_inputs=(0,)),
    Case("expand", [f32(2, 3, 1)], lambda x: x.expand(2, 3, 5), {"shape": (Sym(1), 3, 5)}),
]


def _case_id(case: Case) -> str:
    return f"{case.op}-{case.id}" if case.id else case.op


def _input_types(case: Case) -> list[TensorType | None]:
    """The first non-constant input carries the symbolic batch; others of the same rank and
    leading size share it, the rest are static graph inputs. Constants get ``None``."""
    lead = next(a for i, a in enumerate(case.inputs) if i not in case.constant_inputs)
    types: list[TensorType | None] = []
    for i, array in enumerate(case.inputs):
        shape: tuple = tuple(array.shape)
        if i in case.constant_inputs or array.ndim == 0:
            types.append(None)
            continue
        if array.ndim == lead.ndim and array.shape[0] == lead.shape[0]:
            shape = (Sym(1),) + shape[1:]
        types.append(TensorType(str(array.dtype), shape))
    return types


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_op_matches_torch(case: Case) -> None:
    builder = GraphBuilder(f"one-{case.op}")
    origin = builder.capture(case.op, case.op)
    names = []
    for i, (array, ttype) in enumerate(zip(case.inputs, _input_types(case))):
        names.append(builder.add_constant(array, f"c{i}") if ttype is None
                     else builder.add_input(f"x{i}", ttype))
    out = builder.add(case.op, names, origin, case.attrs)
    graph = builder.finish([out])
    feeds = {n: a for n, a in zip(names, case.inputs) if n in graph.inputs}
    got = run_graph(graph, feeds)[out]
    want = case.reference(*(torch.from_numpy(np.array(a)) for a in case.inputs)).numpy()
    declared = graph.types[out].shape
    batch = next(a.shape[0] for n, a in zip(names, case.inputs) if n in graph.inputs)
    assert got.shape == want.shape
    assert tuple(d if isinstance(d, int) else d.coeff * batch for d in declared) == want.shape
    assert str(got.dtype) == str(want.dtype).replace("torch.", "")
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_every_op_has_a_case() -> None:
    from tests.test_integer_ops import INTEGER_OPS

    assert set(OP_TABLE) == {case.op for case in CASES} | INTEGER_OPS
