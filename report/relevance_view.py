"""One sample's relevance in the compile report: LRP of the integer program, attached to the
float graph's nodes (``lowbit.passes.relevance.quantized``), drawn as an image heatmap (PNG) or
as coloured tokens (HTML), whichever the model's input is."""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping

import numpy as np

from lowbit.compiler.ir import Graph
from lowbit.passes.relevance.composites import composite_named, default_rule
from lowbit.passes.relevance.objectives import Objective
from lowbit.passes.relevance.quantized import explain_quantized
from lowbit.passes.relevance.render import heatmap_png, token_names, tokens_line

MASK_INPUT = "attention_mask"


def relevance_html(float_graph: Graph, integer_graph: Graph,
                   sample: Mapping[str, np.ndarray]) -> tuple[str, str]:
    """(rule name, an HTML fragment) for the first sample of ``sample``."""
    one = {name: value[:1] for name, value in sample.items()}
    rule = default_rule(float_graph)
    explanation = explain_quantized(float_graph, integer_graph, one, composite_named(rule),
                                    Objective())
    fragments = []
    for name, relevance in explanation.inputs.items():
        value = one[name]
        if value.dtype.kind == "f" and value.ndim == 4:
            png = heatmap_png(value, relevance, [name])
            fragments.append(f"<img alt='relevance of {html.escape(name)}' "
                             f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        elif value.dtype.kind in "iu" and value.ndim == 2 and name != MASK_INPUT:
            keep = (one[MASK_INPUT][0] != 0 if MASK_INPUT in one
                    else np.ones(value.shape[1], bool))
            words = token_names(float_graph.metadata.get("bundled_model"), value)[0]
            fragments.append(f"<div class='line'>"
                             f"{tokens_line([w for w, k in zip(words, keep) if k], relevance[0][keep])}"
                             "</div>")
    return rule, "\n".join(fragments)
