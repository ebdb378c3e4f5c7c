"""Measured latency of one layer's integer program built by TVM (HAWQ-V3's latency cost, which
HAWQ measured per layer on a T4; here on the chosen ``tvm_build`` target).

Each layer shape is lowered on its own: a float graph holding only that conv/linear (random
weights of its shape; latency does not depend on their values) is calibrated, lowered with the
given weight and activation bits and built with ``tvm_build.build``. Its latency is the median
over ``repeats`` timings of ``number`` batch-1 calls each (``time_evaluator``), so it includes
the program's boundary quantize/dequantize, equally at every bit width.

Results are cached as JSON in ``$LOWBIT_CACHE_DIR/mixed_latency.json`` (default
``~/.cache/lowbit``), keyed by the TVM target as TVM prints it (with the host CPU for
``llvm``), the layer shape and the bits, so a shape is built and timed once per machine.
A target whose device this machine lacks (``cuda`` without a GPU, cross-compiled ``aarch64``)
is used from the cache only; a missing entry is a ``LowbitError`` naming it.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from lowbit.compiler.builder import GraphBuilder
from lowbit.compiler.dims import Sym
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.compiler.types import TensorType
from lowbit.models.cache import cache_dir
from lowbit.passes.mixed_precision.layers import QuantLayer
from lowbit.passes.quantize.pipeline import CompileOptions, compile_graph

CACHE_FILE = "mixed_latency.json"
CALIBRATION_SAMPLES = 4


def single_layer_graph(layer: QuantLayer, seed: int = 0) -> Graph:
    """A float graph ``x -> layer -> y`` with the layer's shapes and random weights."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder(f"latency_{layer.op}")
    node_id = builder.capture(layer.name, layer.op)
    x = builder.add_input("x", TensorType("float32", (Sym(1), *layer.input_shape[1:])))
    fan_in = max(1, int(np.prod(layer.weight_shape[1:])))
    weight = builder.add_constant(
        (rng.standard_normal(layer.weight_shape) / np.sqrt(fan_in)).astype(np.float32), "w")
    bias = builder.add_constant(rng.standard_normal(layer.weight_shape[0]).astype(np.float32),
                                "b") if layer.has_bias else ""
    y = builder.add(layer.op, [x, weight, bias], node_id, dict(layer.attrs), hint="layer")
    return builder.finish([y])


def measure_latency(layer: QuantLayer, bits: int, target: str, activation_bits: int = 8,
                    number: int = 20, repeats: int = 15) -> float:
    """Median seconds of one batch-1 call of the layer's integer program built for ``target``."""
    import tvm

    from lowbit.compiler.codegen.tvm_build import build
    from lowbit.runtime.tvm_backend import load_tvm

    graph = single_layer_graph(layer)
    rng = np.random.default_rng(1)
    calib = {"x": rng.standard_normal((CALIBRATION_SAMPLES, *layer.input_shape[1:]))
             .astype(np.float32)}
    program = compile_graph(graph, calib, CompileOptions(
        bits=bits, activation_bits=activation_bits, progress=False)).integer_graph
    loaded = load_tvm(build(program, target))
    feed = tvm.runtime.tensor(calib["x"][:1], loaded.device)
    timer = loaded.vm.time_evaluator("main", loaded.device, number=number, repeat=repeats)
    return float(np.median(timer(feed).results))


def target_key(target: str) -> str:
    """The target as TVM describes it (``llvm`` includes this host's CPU)."""
    from lowbit.compiler.codegen.tvm_build import target_spec

    return str(target_spec(target).make())


def measurable_here(target: str) -> bool:
    from lowbit.compiler.codegen.tvm_build import target_spec

    spec = target_spec(target)
    return spec.device == "cpu" and spec.cross_compiler is None


class LatencyTable:
    """The JSON cache of measured layer latencies: ``{target: {"shape | wBaA": seconds}}``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_dir() / CACHE_FILE
        self.entries: dict[str, dict[str, float]] = (
            json.loads(self.path.read_text()) if self.path.is_file() else {})

    @staticmethod
    def key(layer: QuantLayer, bits: int, activation_bits: int) -> str:
        return f"{layer.shape_key()} | w{bits}a{activation_bits}"

    def costs(self, layers: Sequence[QuantLayer], bits: Sequence[int], target: str,
              activation_bits: int = 8, progress: bool = True) -> np.ndarray:
        """``[layers, bits]`` seconds, measuring (and saving) what the cache lacks."""
        column = self.entries.setdefault(target_key(target), {})
        wanted = {self.key(layer, b, activation_bits): (layer, b)
                  for layer in layers for b in bits}
        missing = [key for key in wanted if key not in column]
        if missing and not measurable_here(target):
            raise LowbitError(f"no cached latency for {len(missing)} layer shape(s) on target "
                              f"{target!r} (first: {missing[0]}), and this machine cannot run "
                              "that target; measure it where it runs, or budget size or bops")
        for key in tqdm(missing, desc=f"TVM latency ({target})", unit="kernel",
                        file=sys.stderr, disable=not progress or not missing):
            layer, b = wanted[key]
            column[key] = measure_latency(layer, b, target, activation_bits)
        if missing:
            self._save()
        return np.array([[column[self.key(layer, b, activation_bits)] for b in bits]
                         for layer in layers], dtype=np.float64)

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".json")
        with os.fdopen(handle, "w") as stream:
            json.dump(self.entries, stream, indent=1, sort_keys=True)
        os.replace(temporary, self.path)
