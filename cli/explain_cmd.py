"""``lowbit explain MODEL --input X.npz --out DIR [--rule R] [--target-class K] [--override N=R]``.

Explains the first output of MODEL on the inputs in X.npz with layer-wise relevance propagation
(``lowbit.passes.relevance``) and writes into DIR, each file atomically:

- ``relevance.npz``: the input relevance keyed by input name, shaped like the input (token ids
  get the relevance of their embedding lookups summed over the feature axis);
- ``node_relevance.json``: keyed by captured node name: relevance per sample, source op, the IR
  nodes that carry it and their rules (fused nodes report on each of their captured nodes);
- ``summary.json``: rule, objective and targets, totals per sample, PA-LRP positional
  relevance, and the conservation check;
- ``heatmap.png`` for image inputs (float ``[N, C, H, W]``), ``tokens.html`` for token inputs.

``--rule``: ``epsilon``, ``gamma``, ``zplus`` or ``alphabeta`` puts that rule on every
conv/linear/matmul; a composite name (``epsilon-plus-flat``, ``attnlrp``, ``cp-lrp``, ...)
applies that preset. Default: ``attnlrp`` when the graph has a softmax (attention), else
``epsilon-plus-flat``. ``--override NODE=RULE`` (repeatable) gives one node, by IR or captured
name, another rule. The explained score is the predicted class (argmax of the first output)
unless ``--target-class`` is given; an embedding model without classes (unit-norm output rows,
e.g. minilm) is explained through its self-similarity ``<y, y>``. Progress and the conservation
report go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lowbit.cli.command import Command
from lowbit.compiler.errors import InputError, LowbitError
from lowbit.compiler.fileio import write_atomically, write_text_atomically
from lowbit.compiler.importers import capture
from lowbit.compiler.ir import Graph
from lowbit.passes.relevance import (NAMED_RULES, Composite, Entry, Explanation, Objective,
                                     composite_named, explain)
from lowbit.passes.relevance.render import heatmap_png, tokens_html
from lowbit.runtime.npz import load_npz, save_npz

MASK_INPUT = "attention_mask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="a .lowbit graph, .onnx file or bundled name")
    parser.add_argument("--input", required=True, metavar="X.npz",
                        help="one array per graph input, keyed by input name")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write into")
    parser.add_argument("--rule", metavar="R",
                        help="epsilon|gamma|zplus|alphabeta on every conv/linear/matmul, or a "
                             "composite (epsilon-plus-flat, attnlrp, cp-lrp, ...)")
    parser.add_argument("--target-class", type=int, metavar="K",
                        help="explain output entry K instead of the predicted class")
    parser.add_argument("--override", action="append", default=[], metavar="NODE=RULE",
                        help=f"rule for one node; RULE in {', '.join(sorted(NAMED_RULES))}")


def _say(message: str) -> None:
    print(f"explain: {message}", file=sys.stderr)


def default_rule(graph: Graph) -> str:
    return "attnlrp" if any(node.op == "softmax" for node in graph.nodes) else "epsilon-plus-flat"


def _composite(name: str, overrides: list[str], graph: Graph) -> Composite:
    composite = composite_named(name)
    known = {n.name for n in graph.nodes} | {c.name for c in graph.captured.values()}
    entries = []
    for text in overrides:
        node, _, rule = text.partition("=")
        if rule not in NAMED_RULES:
            raise LowbitError(f"--override {text!r}: rule must be one of "
                              f"{', '.join(sorted(NAMED_RULES))}")
        if node not in known:
            raise LowbitError(f"--override {text!r}: no node or captured node named {node!r}")
        entries.append(Entry(NAMED_RULES[rule], nodes=frozenset({node})))
    return composite.with_overrides(*entries)


def run(args: argparse.Namespace) -> int:
    _say(f"capturing {args.model}")
    graph = capture(args.model)
    feeds = load_npz(args.input)
    composite = _composite(args.rule or default_rule(graph), args.override, graph)
    _say(f"running {graph.name} forward, then relevance with {composite.name!r} "
         f"({len(graph.nodes)} nodes)")
    try:
        explanation = explain(graph, feeds, composite, Objective(target_class=args.target_class))
    except InputError as err:
        raise err.located(file=args.input) from None
    out = Path(args.out)
    for path in _write(explanation, feeds, graph, out):
        _say(f"wrote {path}")
    _report(explanation)
    return 0


def _captions(explanation: Explanation) -> list[str]:
    seed = explanation.propagation.seed
    if seed.targets is None:
        return [f"sample {n}: <y, y>" for n in range(explanation.propagation.batch)]
    return [f"sample {n}: class {k}" for n, k in enumerate(seed.targets)]


def _write(explanation: Explanation, feeds: dict[str, np.ndarray], graph: Graph,
           out: Path) -> list[Path]:
    written = [out / "relevance.npz", out / "node_relevance.json", out / "summary.json"]
    save_npz(written[0], explanation.inputs)
    write_text_atomically(written[1], json.dumps(_nodes_json(explanation), indent=1) + "\n")
    write_text_atomically(written[2], json.dumps(_summary_json(explanation), indent=1) + "\n")
    captions = _captions(explanation)
    images = [name for name in graph.inputs
              if np.ndim(feeds[name]) == 4 and np.issubdtype(feeds[name].dtype, np.floating)]
    for name in images:
        path = out / ("heatmap.png" if len(images) == 1 else f"heatmap_{name}.png")
        png = heatmap_png(feeds[name], explanation.inputs[name], captions)
        write_atomically(path, lambda handle, data=png: handle.write(data))
        written.append(path)
    token_inputs = sorted(set(explanation.propagation.sources.values()) & set(graph.inputs))
    for name in token_inputs:
        path = out / ("tokens.html" if len(token_inputs) == 1 else f"tokens_{name}.html")
        write_text_atomically(path, _tokens_page(explanation, feeds, graph, name, captions))
        written.append(path)
    return written


def _tokens_page(explanation: Explanation, feeds: dict[str, np.ndarray], graph: Graph,
                 name: str, captions: list[str]) -> str:
    ids = feeds[name]
    keep = (feeds[MASK_INPUT] != 0 if MASK_INPUT in feeds and feeds[MASK_INPUT].shape == ids.shape
            else np.ones(ids.shape, bool))
    words = _decode(graph, ids)
    relevance = explanation.inputs[name]
    positional = [p for p in explanation.positional.values() if p.shape == ids.shape]
    total = sum(positional) if positional else None
    return tokens_html(f"{graph.name}: relevance of {name} ({explanation.composite})",
                       [[w for w, k in zip(row, mask) if k] for row, mask in zip(words, keep)],
                       [r[k] for r, k in zip(relevance, keep)],
                       None if total is None else [p[k] for p, k in zip(total, keep)], captions)


def _decode(graph: Graph, ids: np.ndarray) -> list[list[str]]:
    if graph.metadata.get("bundled_model") == "minilm":
        from lowbit.models.minilm import _tokenizer

        return [_tokenizer().convert_ids_to_tokens(row.tolist()) for row in ids]
    return [[f"#{i}" for i in row] for row in ids.tolist()]


def _floats(values: np.ndarray | None) -> list[float] | None:
    return None if values is None else [float(v) for v in np.ravel(values)]


def _nodes_json(explanation: Explanation) -> dict[str, object]:
    return {name: {"source_op": node.source_op, "relevance": _floats(node.relevance),
                   "ir_nodes": list(node.ir_nodes), "rules": list(node.rules)}
            for name, node in explanation.nodes.items()}


def _summary_json(explanation: Explanation) -> dict[str, object]:
    prop = explanation.propagation
    worst = explanation.worst_layer()
    stabilized = explanation.most_stabilized()
    unchecked = sorted({c.rule for c in explanation.checks if c.tolerance is None})
    return {
        "model": prop.graph.name,
        "composite": explanation.composite,
        "objective": prop.seed.kind,
        "targets": None if prop.seed.targets is None else list(prop.seed.targets),
        "explained": _floats(prop.seed.total()),
        "inputs": {name: _floats(r.reshape(r.shape[0], -1).sum(axis=1))
                   for name, r in explanation.inputs.items()},
        "positional": {name: [_floats(row) for row in r]
                       for name, r in explanation.positional.items()},
        "conservation": {
            "worst_layer": None if worst is None else {
                "node": worst.node, "captured": list(worst.captured), "op": worst.op,
                "rule": worst.rule, "relative_deviation": worst.deviation,
                "tolerance": worst.tolerance},
            "largest_stabilizer_share": None if stabilized is None else {
                "node": stabilized.node, "rule": stabilized.rule,
                "share": stabilized.stabilizer_share},
            "out_of_tolerance": [{"node": c.node, "rule": c.rule, "relative_deviation": c.deviation,
                                  "tolerance": c.tolerance} for c in explanation.violations()],
            "not_conservative_by_design": unchecked,
        },
    }


def _report(explanation: Explanation) -> None:
    prop = explanation.propagation
    explained = prop.seed.total()
    inputs = sum(r.reshape(r.shape[0], -1).sum(axis=1) for r in explanation.inputs.values())
    positional = sum((p.sum(axis=-1) for p in explanation.positional.values()),
                     np.zeros(prop.batch))
    for n, caption in enumerate(_captions(explanation)):
        _say(f"{caption}: explained {explained[n]:.6g} = inputs {inputs[n]:.6g} + positional "
             f"{positional[n]:.6g} + kept by biases, stabilizers and non-conservative rules "
             f"{explained[n] - inputs[n] - positional[n]:.6g}")
    worst = explanation.worst_layer()
    if worst is not None:
        _say(f"conservation: worst layer {worst.node} ({', '.join(worst.captured)}; {worst.op}, "
             f"{worst.rule}): relative deviation {worst.deviation:.2e}, tolerance "
             f"{worst.tolerance:.0e}")
    stabilized = explanation.most_stabilized()
    if stabilized is not None:
        _say(f"largest stabilizer share: {stabilized.node} ({stabilized.rule}) kept "
             f"{stabilized.stabilizer_share:.1e} of its relevance")
    for check in explanation.violations():
        _say(f"warning: layer {check.node} ({check.rule}) deviates {check.deviation:.2e}, "
             f"beyond its tolerance {check.tolerance:.0e}")


COMMAND = Command("explain", "explain a model's prediction with layer-wise relevance propagation",
                  add_arguments, run)
