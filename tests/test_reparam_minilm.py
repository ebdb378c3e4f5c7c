"""Scale reparameterization passes on MiniLM (post-norm BERT): float outputs after each pass
equal torch's output on the original model to 1e-5 (relative to the output range); LayerNorms
that also feed a residual add are duplicated with their origin."""

from __future__ import annotations

import pytest

from lowbit.passes.manager import PassManager
from lowbit.passes.quantize.pipeline import CLEANUP_PASSES
from lowbit.passes.registry import PassInputs, make_passes
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error
from tests.test_reparam_bundled import bundled


@pytest.mark.parametrize("pass_name", ["smooth-quant", "awq", "repq-vit-layernorm"])
def test_pass_keeps_torch_output(pass_name: str) -> None:
    graph, calib, test, want = bundled("minilm")
    passes = make_passes(CLEANUP_PASSES + (pass_name,), PassInputs(calib))
    result, records = PassManager(passes).run(graph)
    norms = [n for n in result.nodes if n.op == "layer_norm"]
    copies = [n for n in norms if n.outputs[0] in result.metadata["scale_migrated"]]
    assert len(copies) == 12 and len(norms) == 13 + 12  # 12 feed linears and a residual add
    originals = {n.name: n.origin for n in norms}
    assert all(n.origin == originals[n.name.rsplit(".", 1)[0]] for n in copies)
    got = run_graph(result, test)
    for output, expected in want.items():
        assert relative_error(got[output], expected) < 1e-5, output
