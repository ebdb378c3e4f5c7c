"""``lowbit explain MODEL --input X.npz --out DIR [--rule R] [--target-class K] [--override N=R]
[--after COMPILE_DIR]``.

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

``--after COMPILE_DIR`` (written by ``lowbit compile MODEL``) explains the integer program
instead, on the same captured nodes (``lowbit.passes.relevance.quantized``): its dequantized
activations drive the rules on the float graph's structure, and the explained class is its
prediction. The summary's ``after`` entry (and stderr) add the Spearman rank correlation of the
input relevance with the float explanation of the same graph and inputs, per sample and mean.
MODEL must be the model the directory was compiled from.
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
from lowbit.passes.relevance.composites import default_rule
from lowbit.passes.relevance.quantized import (CompiledModel, RankAgreement, check_source,
                                               explain_quantized, load_compiled, rank_agreement)
from lowbit.passes.relevance.render import heatmap_png, token_names, tokens_html
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
    parser.add_argument("--after", metavar="COMPILE_DIR",
                        help="explain the integer program that `lowbit compile MODEL` wrote "
                             "there, and compare with the float explanation")


def _say(message: str) -> None:
    print(f"explain: {message}", file=sys.stderr)


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
    compiled = None
    if args.after:
        compiled = load_compiled(args.after)
        check_source(graph, compiled, args.model)
        graph = compiled.float_graph
    feeds = load_npz(args.input)
    composite = _composite(args.rule or default_rule(graph), args.override, graph)
    objective = Objective(target_class=args.target_class)
    reference = agreement = None
    try:
        if compiled is None:
            _say(f"running {graph.name} forward, then relevance with {composite.name!r} "
                 f"({len(graph.nodes)} nodes)")
            explanation = explain(graph, feeds, composite, objective)
        else:
            _say(f"running the integer program {compiled.integer_path} forward, then relevance "
                 f"with {composite.name!r} on {compiled.float_path} ({len(graph.nodes)} nodes)")
            explanation = explain_quantized(graph, compiled.integer_graph, feeds, composite,
                                            objective)
            _say("explaining the float graph too, for comparison")
            reference = explain(graph, feeds, composite, objective)
            agreement = rank_agreement(explanation, reference)
    except InputError as err:
        raise err.located(file=args.input) from None
    after = None
    if compiled is not None and reference is not None and agreement is not None:
        after = _after_json(compiled, reference, agreement)
    for path in _write(explanation, feeds, graph, Path(args.out), after):
        _say(f"wrote {path}")
    _report(explanation, quantized=compiled is not None)
    if reference is not None and agreement is not None:
        _report_agreement(explanation, reference, agreement)
    return 0


def _captions(explanation: Explanation) -> list[str]:
    seed = explanation.propagation.seed
    if seed.targets is None:
        return [f"sample {n}: <y, y>" for n in range(explanation.propagation.batch)]
    return [f"sample {n}: class {k}" for n, k in enumerate(seed.targets)]


def _write(explanation: Explanation, feeds: dict[str, np.ndarray], graph: Graph,
           out: Path, after: dict[str, object] | None = None) -> list[Path]:
    written = [out / "relevance.npz", out / "node_relevance.json", out / "summary.json"]
    save_npz(written[0], explanation.inputs)
    write_text_atomically(written[1], json.dumps(_nodes_json(explanation), indent=1) + "\n")
    summary = _summary_json(explanation)
    if after is not None:
        summary["after"] = after
    write_text_atomically(written[2], json.dumps(summary, indent=1) + "\n")
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
    words = token_names(graph.metadata.get("bundled_model"), ids)
    relevance = explanation.inputs[name]
    positional = [p for p in explanation.positional.values() if p.shape == ids.shape]
    total = sum(positional) if positional else None
    return tokens_html(f"{graph.name}: relevance of {name} ({explanation.composite})",
                       [[w for w, k in zip(row, mask) if k] for row, mask in zip(words, keep)],
                       [r[k] for r, k in zip(relevance, keep)],
                       None if total is None else [p[k] for p, k in zip(total, keep)], captions)


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


def _targets(explanation: Explanation) -> list[int] | None:
    targets = explanation.propagation.seed.targets
    return None if targets is None else list(targets)


def _correlation(value: float) -> float | None:
    return None if np.isnan(value) else value


def _after_json(compiled: CompiledModel, reference: Explanation,
                agreement: RankAgreement) -> dict[str, object]:
    return {
        "directory": str(compiled.directory),
        "integer_program": str(compiled.integer_path),
        "float_graph": str(compiled.float_path),
        "float_targets": _targets(reference),
        "rank_correlation": {
            "method": "spearman over the flattened input relevance, per sample; quantized vs "
                      "float explanation",
            "per_sample": [_correlation(c) for c in agreement.per_sample],
            "mean": _correlation(agreement.mean),
        },
    }


def _report_agreement(explanation: Explanation, reference: Explanation,
                      agreement: RankAgreement) -> None:
    per_sample = ", ".join(f"{c:.3f}" for c in agreement.per_sample)
    _say(f"rank correlation with the float explanation (Spearman, input relevance): mean "
         f"{agreement.mean:.4f} (per sample {per_sample})")
    ours, theirs = _targets(explanation), _targets(reference)
    if ours is not None and theirs is not None and ours != theirs:
        differ = [n for n, (a, b) in enumerate(zip(ours, theirs)) if a != b]
        _say(f"the integer program predicts another class than the float graph for sample(s) "
             f"{differ}; those explanations explain different classes")


def _report(explanation: Explanation, quantized: bool = False) -> None:
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
    violations = explanation.violations()
    if quantized and violations:
        _say(f"{len(violations)} layer(s) deviate beyond their float tolerance, by at most "
             f"{max(c.deviation for c in violations):.2e}: their rules divide by the integer "
             "program's outputs, which differ from the float-weight terms by the quantization "
             "error (listed in summary.json)")
        return
    for check in violations:
        _say(f"warning: layer {check.node} ({check.rule}) deviates {check.deviation:.2e}, "
             f"beyond its tolerance {check.tolerance:.0e}")


COMMAND = Command("explain", "explain a model's prediction with layer-wise relevance propagation",
                  add_arguments, run)
