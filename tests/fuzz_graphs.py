"""Random small float graphs over the op set the integer lowering supports.

A graph is a set of independent *chains*, each from its own input to its own output, so that
one TVM build serves several random graphs (a build costs far more than a run). A chain starts
from an image ``[N, C, H, W]`` or a sequence ``[N, S, D]`` input and applies random *steps*:
each row of ``STEPS`` says on which ranks it applies and builds one op (or a small pattern,
such as a residual add) with random shapes, attributes and weights. Chain ``i`` of module
``seed`` draws from ``random.Random(f"{seed}/{i}")``; the tests draw ``seed`` with hypothesis,
and one failing chain is rebuilt alone with ``random_module(seed, only=[i])``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lowbit.compiler import Graph, GraphBuilder, Sym, TensorType

N = Sym(1)
Shape = tuple[int, ...]


@dataclass
class Chain:
    """The builder, the current value of the chain being built and its shape (no batch)."""

    builder: GraphBuilder
    rnd: random.Random
    value: str
    shape: Shape
    prefix: str

    def node(self, op: str, inputs: list[str], attrs: dict | None = None) -> str:
        origin = self.builder.capture(f"{self.prefix}{op}", op)
        return self.builder.add(op, inputs, origin, attrs or {}, hint=f"{self.prefix}{op}")

    def weight(self, *shape: int, scale: float | None = None) -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        spread = scale if scale is not None else self.rnd.uniform(0.3, 2.0) / np.sqrt(fan_in)
        rng = np.random.default_rng(self.rnd.getrandbits(32))
        array = (rng.standard_normal(shape) * spread).astype(np.float32)
        return self.builder.add_constant(array, f"{self.prefix}w")

    def set(self, value: str) -> None:
        self.value = value
        self.shape = tuple(self.builder.type_of(value).shape[1:])


@dataclass(frozen=True)
class Step:
    """One row: ranks (without batch) it applies to and the function that applies it."""

    name: str
    ranks: frozenset[int]
    apply: Callable[[Chain], None]


def _conv(chain: Chain) -> None:
    c, h, w = chain.shape
    rnd = chain.rnd
    kernel = (rnd.randint(1, min(3, h)), rnd.randint(1, min(3, w)))
    dilation = (rnd.choice((1, 2)) if (kernel[0] - 1) * 2 < h else 1,
                rnd.choice((1, 2)) if (kernel[1] - 1) * 2 < w else 1)
    pads = tuple(rnd.randint(0, k // 2) for k in kernel) * 2
    groups = rnd.choice([g for g in (1, c) if c % g == 0])
    out = rnd.randint(1, 4) * groups
    weight = chain.weight(out, c // groups, *kernel)
    bias = chain.weight(out, scale=0.5) if rnd.random() < 0.7 else ""
    chain.set(chain.node("conv", [chain.value, weight, bias],
                         {"strides": (rnd.choice((1, 2)), 1), "pads": pads,
                          "dilations": dilation, "groups": groups}))


def _pool(chain: Chain) -> None:
    c, h, w = chain.shape
    rnd = chain.rnd
    kernel = (rnd.randint(1, min(2, h)), rnd.randint(1, min(3, w)))
    strides = (rnd.randint(1, 2), rnd.randint(1, 2))
    if rnd.random() < 0.5:
        pads = tuple(rnd.randint(0, k // 2) for k in kernel) * 2
        chain.set(chain.node("max_pool", [chain.value], {"kernel": kernel, "strides": strides,
                                                          "pads": pads, "dilations": (1, 1)}))
    else:
        chain.set(chain.node("avg_pool", [chain.value], {"kernel": kernel, "strides": strides,
                                                          "pads": (0, 0, 0, 0)}))


def _linear(chain: Chain) -> None:
    features = chain.rnd.randint(2, 12)
    bias = chain.weight(features, scale=0.5) if chain.rnd.random() < 0.8 else ""
    chain.set(chain.node("linear", [chain.value, chain.weight(features, chain.shape[-1]), bias]))


def _activation(chain: Chain) -> None:
    op = chain.rnd.choice(("relu", "relu", "gelu", "sigmoid", "tanh", "silu", "clip"))
    attrs = {"min": 0.0, "max": 6.0} if op == "clip" else {}
    chain.set(chain.node(op, [chain.value], attrs))


def _residual(chain: Chain) -> None:
    """x + f(x) or x - f(x) or x * f(x) with a shape-preserving f."""
    start = chain.value
    branch = chain.rnd.choice(("relu", "tanh", "linear"))
    if branch == "linear":
        d = chain.shape[-1]
        chain.set(chain.node("linear", [start, chain.weight(d, d), ""]))
    else:
        chain.set(chain.node(branch, [start]))
    op = chain.rnd.choice(("add", "add", "sub", "mul"))
    chain.set(chain.node(op, [start, chain.value]))


def _scale(chain: Chain) -> None:
    """Elementwise with a constant: a per-channel bias or a positive multiplier (the lowering
    refuses scaling affine codes by a negative scalar)."""
    op = chain.rnd.choice(("add", "mul"))
    values = np.random.default_rng(chain.rnd.getrandbits(32)).standard_normal(chain.shape[-1])
    if op == "mul":
        values = np.abs(values) + 0.1
    constant = chain.builder.add_constant(values.astype(np.float32), f"{chain.prefix}c")
    chain.set(chain.node(op, [chain.value, constant]))


def _layer_norm(chain: Chain) -> None:
    d = chain.shape[-1]
    gamma = chain.builder.add_constant(
        (1 + 0.3 * np.random.default_rng(chain.rnd.getrandbits(32)).standard_normal(d))
        .astype(np.float32), f"{chain.prefix}gamma")
    chain.set(chain.node("layer_norm", [chain.value, gamma, chain.weight(d, scale=0.3)],
                         {"axis": -1, "eps": 1e-5}))


def _attention(chain: Chain) -> None:
    """softmax(x W_q (x W_k)^T) x W_v, single head."""
    s, d = chain.shape
    x = chain.value
    q = chain.node("linear", [x, chain.weight(d, d), ""])
    k = chain.node("linear", [x, chain.weight(d, d), ""])
    v = chain.node("linear", [x, chain.weight(d, d), ""])
    scores = chain.node("matmul", [q, chain.node("transpose", [k], {"perm": (0, 2, 1)})])
    probs = chain.node("softmax", [scores], {"axis": -1})
    chain.set(chain.node("matmul", [probs, v]))


def _mean(chain: Chain) -> None:
    rank = len(chain.shape)
    axes = (2, 3) if rank == 3 else (chain.rnd.choice((1, 2)),)
    op = chain.rnd.choice(("reduce_mean", "reduce_mean", "reduce_max"))
    chain.set(chain.node(op, [chain.value], {"axes": axes, "keepdims": False}))


def _flatten(chain: Chain) -> None:
    size = int(np.prod(chain.shape))
    chain.set(chain.node("reshape", [chain.value], {"shape": (N, size)}))


def _transpose(chain: Chain) -> None:
    chain.set(chain.node("transpose", [chain.value], {"perm": (0, 2, 1)}))


def _slice(chain: Chain) -> None:
    """A contiguous, possibly strided, part of the last axis. (``concat`` is left out: the
    lowering refuses concatenating affine parts whose codes differ from the output's.)"""
    rank, d = len(chain.shape), chain.shape[-1]
    start = chain.rnd.randint(0, d - 2)
    end = chain.rnd.randint(start + 1, d)
    chain.set(chain.node("slice", [chain.value], {"axes": (rank,), "starts": (start,),
                                                  "ends": (end,), "steps": (chain.rnd.choice((1, 2)),)}))


STEPS: tuple[Step, ...] = (
    Step("conv", frozenset({3}), _conv),
    Step("pool", frozenset({3}), _pool),
    Step("linear", frozenset({1, 2}), _linear),
    Step("activation", frozenset({1, 2, 3}), _activation),
    Step("residual", frozenset({1, 2, 3}), _residual),
    Step("scale", frozenset({1, 2}), _scale),
    Step("layer_norm", frozenset({1, 2}), _layer_norm),
    Step("attention", frozenset({2}), _attention),
    Step("mean", frozenset({2, 3}), _mean),
    Step("flatten", frozenset({2, 3}), _flatten),
    Step("transpose", frozenset({2}), _transpose),
    Step("slice", frozenset({1, 2}), _slice),
)


def _applicable(chain: Chain) -> list[Step]:
    rank = len(chain.shape)
    steps = [s for s in STEPS if rank in s.ranks]
    if rank == 3 and min(chain.shape[1:]) < 2:
        steps = [s for s in steps if s.name not in ("conv", "pool")]
    if chain.shape[-1] < 2:
        steps = [s for s in steps if s.name != "slice"]
    return steps


def add_chain(builder: GraphBuilder, rnd: random.Random, index: int) -> str:
    """One random chain; returns its output value."""
    prefix = f"g{index}_"
    if rnd.random() < 0.5:
        shape: Shape = (rnd.randint(1, 3), rnd.randint(3, 8), rnd.randint(3, 8))
    else:
        shape = (rnd.randint(2, 6), rnd.randint(2, 12))
    value = builder.add_input(f"{prefix}x", TensorType("float32", (N, *shape)))
    chain = Chain(builder, rnd, value, shape, prefix)
    for _ in range(rnd.randint(1, 3)):
        rnd.choice(_applicable(chain)).apply(chain)
    return chain.value


def chain_random(seed: int, index: int) -> random.Random:
    """Chain ``index`` of module ``seed`` draws from its own stream, so any one chain can be
    rebuilt alone (``random_module(seed, only=[index])``): the minimal reproducer."""
    return random.Random(f"{seed}/{index}")


def random_module(seed: int, chains: int = 1, only: list[int] | None = None) -> Graph:
    builder = GraphBuilder(f"fuzz{seed}", metadata={"source": "fuzz"})
    indices = range(chains) if only is None else only
    outputs = [add_chain(builder, chain_random(seed, i), i) for i in indices]
    return builder.finish(outputs)


def chain_of(value: str) -> int:
    """The chain index of a graph input or output name (``g<index>_...``)."""
    return int(value[1:value.index("_")])


def _shape(graph: Graph, name: str, samples: int) -> tuple[int, ...]:
    return tuple(samples if isinstance(d, Sym) else d for d in graph.types[name].shape)


def random_inputs(graph: Graph, seed: int, samples: int) -> dict[str, np.ndarray]:
    """Normal inputs with a scale and offset per graph input (fixed by the input's name, so
    calibration and test inputs share a distribution); ``seed`` picks the samples."""
    feeds = {}
    for name in graph.inputs:
        spread = random.Random(f"{graph.name}/{name}").uniform(0.2, 4.0)
        offset = random.Random(f"{graph.name}/{name}/offset").uniform(-1.0, 1.0)
        rng = np.random.default_rng(random.Random(f"{name}/{seed}").getrandbits(32))
        feeds[name] = (rng.standard_normal(_shape(graph, name, samples)) * spread
                       + offset).astype(np.float32)
    return feeds


def extreme_inputs(graph: Graph, calibration: dict[str, np.ndarray], seed: int,
                   samples: int) -> dict[str, np.ndarray]:
    """Inputs at and past the calibrated extremes: each element is the calibration minimum or
    maximum, 1.5 times either (clamped by the input quantization), zero or a value between."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in graph.inputs:
        low, high = float(calibration[name].min()), float(calibration[name].max())
        shape = _shape(graph, name, samples)
        choices = np.stack([np.full(shape, low), np.full(shape, high), np.full(shape, 1.5 * low),
                            np.full(shape, 1.5 * high), np.zeros(shape),
                            rng.uniform(low, high, shape)])
        pick = rng.integers(0, len(choices), shape)
        feeds[name] = np.take_along_axis(choices, pick[None], 0)[0].astype(np.float32)
    return feeds
