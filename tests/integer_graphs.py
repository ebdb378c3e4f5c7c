"""Integer test graphs shared by the backend tests (ONNX export, TVM, NPU): one-node graphs,
random feeds over each input's full dtype range, and the bit-exact comparison of outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lowbit.compiler import Graph, GraphBuilder, Sym, TensorType
from lowbit.compiler.ops.integer import INT_RANGES
from lowbit.kernels import dyadic

RNG = np.random.default_rng(29)
Feeds = Callable[[int], dict[str, np.ndarray]]


def assert_same(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray], where: str
                ) -> None:
    """``got`` holds ``want``'s outputs, in its order, with the same dtypes, shapes and bits."""
    assert list(got) == list(want)
    for name, expected in want.items():
        value = got[name]
        assert value.dtype == expected.dtype and value.shape == expected.shape, (name, where)
        differ = int(np.sum(value != expected))
        assert differ == 0, f"{name} {where}: {differ} of {value.size} elements differ"


def full_range(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bool":
        return RNG.integers(0, 2, shape).astype(bool)
    if dtype.startswith("float"):
        return (RNG.standard_normal(shape) * 4).astype(dtype)
    lo, hi = INT_RANGES[dtype]
    return RNG.integers(lo, hi, shape, endpoint=True, dtype=np.int64).astype(dtype)


def random_feeds(graph: Graph, ranges: Mapping[str, tuple[int, int]] | None = None) -> Feeds:
    """Feeds over each input's full dtype range (or ``ranges[name]``, inclusive)."""
    def make(batch: int) -> dict[str, np.ndarray]:
        feeds = {}
        for name in graph.inputs:
            t = graph.types[name]
            shape = tuple(d.coeff * batch if isinstance(d, Sym) else d for d in t.shape)
            if ranges and name in ranges:
                lo, hi = ranges[name]
                feeds[name] = RNG.integers(lo, hi, shape, endpoint=True).astype(t.dtype)
            else:
                feeds[name] = full_range(t.dtype, shape)
        return feeds
    return make


def one_op(op: str, inputs: Sequence[TensorType | np.ndarray], attrs: Mapping | None = None
           ) -> Graph:
    """A graph of one node; a TensorType is a graph input ``x<i>``, an array a constant."""
    builder = GraphBuilder(op)
    origin = builder.capture(op, op)
    names = [builder.add_constant(v, f"c{i}") if isinstance(v, np.ndarray)
             else builder.add_input(f"x{i}", v) for i, v in enumerate(inputs)]
    return builder.finish([builder.add(op, names, origin, dict(attrs or {}))])


def i8(*shape: int) -> np.ndarray:
    return full_range("int8", shape)


def dyadic_pair(m: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mult, shift = dyadic(m)
    return mult.reshape(shape), shift.reshape(shape)
