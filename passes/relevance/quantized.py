"""Relevance of a compiled integer program, reported on the user's captured nodes.

An integer program computes with codes, int32 accumulators and dyadic rescales, none of which
the rules can read as real numbers on their own. So the explanation borrows the structure of
the float graph it was lowered from (``float.lowbit`` in the compile directory) and only the
activations of the integer program:

1. the integer program runs forward (reference interpreter, every value kept);
2. every float value that lowering mapped (``metadata["quantized_values"]``: float value name ->
   integer codes, scale, zero point) is dequantized, ``real = scale * (codes - zero_point)``;
   the graph outputs are taken as the integer program outputs them;
3. relevance propagates over the float graph, with its float weights and the composite's
   rules, while the forward is the float graph's with each mapped value replaced by its
   dequantized integer value as soon as it is defined (``engine.forward``). Values the program
   never materialises (the int32 sum before a fused ReLU, a LayerNorm output whose codes are
   smoothed per consumer) are thereby recomputed from the integer program's operands;
4. the explained score is read from the replaced output, so with no ``--target-class`` the
   explained class is the integer program's prediction. An ``auto`` objective is resolved on
   the float graph's output (one more float forward): the integer program's embeddings are
   unit-norm only up to quantization error, and both explanations must explain the same thing;
5. provenance is the float graph's ``origin``, so relevance lands on captured nodes exactly as
   for a float explanation.

Integer values of the float graph (token ids) are mapped exactly and keep their values.

Where an output is replaced, a rule divides by the integer program's value while it recomputes
the terms with float weights; they differ by the quantization error, so the conservation
report of a quantized explanation shows deviations of that order (reported, not hidden).

Fidelity is measured against the float explanation of the same graph, inputs and objective:
``rank_agreement`` is Spearman's rank correlation of the flattened input relevance, per sample,
and its mean.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from lowbit.compiler.artifact import FLOAT_GRAPH, INTEGER_GRAPH, read_manifest
from lowbit.compiler.errors import LowbitError
from lowbit.compiler.ir import Graph
from lowbit.compiler.serialize import load_graph
from lowbit.compiler.types import FLOAT_DTYPES
from lowbit.passes.manager import PassManager
from lowbit.passes.quantize.pipeline import CLEANUP_PASSES
from lowbit.passes.registry import PassInputs, make_passes
from lowbit.passes.relevance.attribution import Explanation, explain
from lowbit.passes.relevance.composites import Composite
from lowbit.passes.relevance.objectives import Objective
from lowbit.runtime.interpreter import run_graph

VALUE_MAP = "quantized_values"
GRAPH_FILES = {"float": FLOAT_GRAPH, "integer": INTEGER_GRAPH}


@dataclass(frozen=True)
class CompiledModel:
    """What ``--after DIR`` reads from a compile directory."""

    directory: Path
    manifest: dict[str, Any]
    float_graph: Graph
    integer_graph: Graph

    @property
    def float_path(self) -> Path:
        return _graph_path(self.directory, self.manifest, "float")

    @property
    def integer_path(self) -> Path:
        return _graph_path(self.directory, self.manifest, "integer")


def _graph_path(directory: Path, manifest: Mapping[str, Any], key: str) -> Path:
    return directory / manifest.get("files", {}).get(key, GRAPH_FILES[key])


def load_compiled(directory: str | os.PathLike[str]) -> CompiledModel:
    manifest = read_manifest(directory)
    graphs = []
    for key in ("float", "integer"):
        path = _graph_path(Path(directory), manifest, key)
        if not path.is_file():
            raise LowbitError(f"the compile directory has no {key} graph", file=str(path))
        graphs.append(load_graph(path))
    compiled = CompiledModel(Path(directory), manifest, *graphs)
    if VALUE_MAP not in compiled.integer_graph.metadata:
        raise LowbitError("the integer program has no map from float values to codes; "
                          "recompile with this lowbit", file=str(compiled.integer_path))
    return compiled


def check_source(model: Graph, compiled: CompiledModel, model_label: str) -> None:
    """The compile directory's float graph must be ``model`` after the compile's clean-up passes
    (same inputs, outputs, ops and weights); raises naming ``float.lowbit`` otherwise."""
    cleaned, _ = PassManager(make_passes(CLEANUP_PASSES, PassInputs())).run(model)
    difference = _difference(cleaned, compiled.float_graph)
    if difference:
        raise LowbitError(f"this compile directory was made from "
                          f"{compiled.manifest.get('source', '?')!r}, not from MODEL "
                          f"{model_label!r}: {difference}", file=str(compiled.float_path))


def _difference(model: Graph, compiled: Graph) -> str | None:
    for what, ours, theirs in (
            ("inputs", [(n, str(model.types[n])) for n in model.inputs],
             [(n, str(compiled.types[n])) for n in compiled.inputs]),
            ("outputs", [(n, str(model.types[n])) for n in model.outputs],
             [(n, str(compiled.types[n])) for n in compiled.outputs]),
            ("ops", [n.op for n in model.nodes], [n.op for n in compiled.nodes]),
            ("constants", sorted(model.constants), sorted(compiled.constants))):
        if ours != theirs:
            return f"their {what} differ"
    for name, array in model.constants.items():
        other = compiled.constants[name]
        if array.shape != other.shape or not np.array_equal(array, other):
            return f"constant {name!r} differs"
    return None


def dequantized_activations(float_graph: Graph, integer_graph: Graph,
                            feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float value name -> the integer program's value as real numbers, for every mapped float
    value of ``float_graph`` and its outputs."""
    values = run_graph(integer_graph, feeds, keep=True)
    real: dict[str, np.ndarray] = {}
    for name, entry in integer_graph.metadata[VALUE_MAP].items():
        if name not in float_graph.types:
            raise LowbitError(f"the integer program maps a value {name!r} that the float graph "
                              "does not have; the two graphs come from different compiles")
        if float_graph.types[name].dtype not in FLOAT_DTYPES:
            continue  # integer values are carried exactly
        codes = values[entry["codes"]].astype(np.float64)
        real[name] = np.asarray(entry["scale"], np.float64) * (codes - entry["zero_point"])
    for name in float_graph.outputs:
        real[name] = values[name]
    return real


def explain_quantized(float_graph: Graph, integer_graph: Graph,
                      feeds: Mapping[str, np.ndarray], composite: Composite,
                      objective: Objective) -> Explanation:
    """Relevance of ``integer_graph`` on ``float_graph``'s structure (see the module doc)."""
    if objective.kind == "auto" and objective.target_class is None:
        float_values = run_graph(float_graph, feeds)
        objective = Objective(objective.seed(float_graph, float_values).kind)
    return explain(float_graph, feeds, composite, objective,
                   dequantized_activations(float_graph, integer_graph, feeds))


@dataclass(frozen=True)
class RankAgreement:
    per_sample: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.per_sample))


def rank_agreement(explained: Explanation, reference: Explanation) -> RankAgreement:
    """Spearman rank correlation of the two explanations' input relevance, per sample, over
    the inputs that receive relevance in either (an attention mask's zeros would only add
    ties), each sample flattened. A sample whose relevance is constant in either explanation
    has no rank order: NaN."""
    if set(explained.inputs) != set(reference.inputs):
        raise LowbitError("the two explanations are of different inputs")
    names = sorted(name for name in explained.inputs
                   if explained.inputs[name].any() or reference.inputs[name].any())
    batch = explained.propagation.batch
    ours, theirs = _flat(explained, names, batch), _flat(reference, names, batch)
    per_sample = []
    for a, b in zip(ours, theirs):
        constant = a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0
        per_sample.append(float("nan") if constant else float(spearmanr(a, b).statistic))
    return RankAgreement(tuple(per_sample))


def _flat(explanation: Explanation, names: list[str], batch: int) -> np.ndarray:
    return np.concatenate([explanation.inputs[name].reshape(batch, -1) for name in names]
                          + [np.zeros((batch, 0))], axis=1)
