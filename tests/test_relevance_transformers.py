"""AttnLRP on the bundled digits ViT and MiniLM, against LXT (2.1); conservation; text CLI.

LXT's automatic patching cannot run in this environment: importing ``lxt.efficient`` (its
efficient mode, ``monkey_patch``) fails because ``lxt/efficient/models/bert.py`` imports
``find_pruneable_heads_and_indices`` from ``transformers.pytorch_utils``, which transformers 5
removed, and the package ``__init__`` imports every model patch eagerly; the explicit mode's
``Composite.register`` imports ``transformers.utils.fx.HFTracer``, also gone in transformers 5.
LXT's rules themselves (``lxt.explicit.functional``: ``linear_epsilon``, ``matmul``,
``softmax``, ``layer_norm``, ``add2``, ``mul2``, ``mean``, ``normalize`` and
``lxt.explicit.rules.identity``) import fine, so each model's forward is restated below with
them, on the module's own weights; a test first checks that the restatement reproduces the
torch module's output. Relevance is then read where LXT reads it: at the patch tokens (ViT)
and at the word embeddings (MiniLM), summed over features.
"""

from __future__ import annotations

import json

import lxt.explicit.functional as lf
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lxt.explicit.rules import identity
from scipy.stats import spearmanr

from lowbit.cli import explain_cmd
from lowbit.cli.main import main
from lowbit.compiler.importers.sources import capture_bundled
from lowbit.models import get_model
from lowbit.models.minilm import MASK_BIAS
from lowbit.passes.relevance import Objective, composite_named, explain


def frozen(name: str) -> torch.nn.Module:
    module = get_model(name).load()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


def lxt_vit(model: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DigitsViT's forward with LXT's AttnLRP rules; returns (patch tokens, logits)."""
    tokens = model.patch(image).flatten(2).transpose(1, 2).detach().requires_grad_()
    hidden = lf.add2(tokens, model.position)
    for block in model.blocks:
        attn = block.attn

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(x.shape[0], -1, attn.heads, attn.head_dim).permute(0, 2, 1, 3)

        normed = lf.layer_norm(hidden, block.attn_norm.weight, block.attn_norm.bias,
                               block.attn_norm.eps)
        q, k, v = (heads(lf.linear_epsilon(normed, layer.weight, layer.bias))
                   for layer in (attn.q, attn.k, attn.v))
        weights = lf.softmax(lf.mul2(lf.matmul(q, k.transpose(-2, -1)), attn.scale), -1)
        mixed = lf.matmul(weights, v).permute(0, 2, 1, 3).reshape(hidden.shape)
        hidden = lf.add2(hidden, lf.linear_epsilon(mixed, attn.out.weight, attn.out.bias))
        normed = lf.layer_norm(hidden, block.mlp_norm.weight, block.mlp_norm.bias,
                               block.mlp_norm.eps)
        up = identity(F.gelu, lf.linear_epsilon(normed, block.mlp[0].weight, block.mlp[0].bias))
        hidden = lf.add2(hidden, lf.linear_epsilon(up, block.mlp[2].weight, block.mlp[2].bias))
    hidden = lf.layer_norm(hidden, model.norm.weight, model.norm.bias, model.norm.eps)
    return tokens, lf.linear_epsilon(lf.mean(hidden, 1, False), model.head.weight, model.head.bias)


def lxt_minilm(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """SentenceEmbedder's forward (BERT, mean pooling, L2 norm) with LXT's AttnLRP rules;
    returns (word embeddings, sentence embedding)."""
    bert, emb = model.bert, model.bert.embeddings
    heads = bert.config.num_attention_heads
    size = bert.config.hidden_size // heads
    words = emb.word_embeddings(ids).detach().requires_grad_()
    kinds = emb.token_type_embeddings(model.token_type_ids.expand(ids.shape[0], -1))
    hidden = lf.add2(lf.add2(words, kinds), emb.position_embeddings(model.position_ids))
    hidden = lf.layer_norm(hidden, emb.LayerNorm.weight, emb.LayerNorm.bias, emb.LayerNorm.eps)
    bias = ((1.0 - mask.float()) * MASK_BIAS)[:, None, None, :]

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, heads, size).permute(0, 2, 1, 3)

    for layer in bert.encoder.layer:
        own, out = layer.attention.self, layer.attention.output
        q, k, v = (split(lf.linear_epsilon(hidden, p.weight, p.bias))
                   for p in (own.query, own.key, own.value))
        scores = lf.add2(lf.mul2(lf.matmul(q, k.transpose(-2, -1)), size**-0.5), bias)
        mixed = lf.matmul(lf.softmax(scores, -1), v).permute(0, 2, 1, 3).reshape(hidden.shape)
        hidden = lf.layer_norm(lf.add2(lf.linear_epsilon(mixed, out.dense.weight, out.dense.bias),
                                       hidden), out.LayerNorm.weight, out.LayerNorm.bias,
                               out.LayerNorm.eps)
        dense = layer.intermediate.dense
        up = identity(F.gelu, lf.linear_epsilon(hidden, dense.weight, dense.bias))
        out = layer.output
        hidden = lf.layer_norm(lf.add2(lf.linear_epsilon(up, out.dense.weight, out.dense.bias),
                                       hidden), out.LayerNorm.weight, out.LayerNorm.bias,
                               out.LayerNorm.eps)
    weights = mask.float().unsqueeze(-1)
    pooled = lf.mul2(lf.mean(lf.mul2(hidden, weights), 1, False),
                     ids.shape[1] / weights.sum(1).clamp(min=1e-9))
    return words, lf.normalize(pooled, p=2.0, dim=-1)


@pytest.fixture(scope="module")
def vit():
    graph, feeds = capture_bundled("digits-vit"), get_model("digits-vit").sample_inputs(8, "test")
    return graph, feeds, explain(graph, feeds, composite_named("attnlrp"), Objective())


@pytest.fixture(scope="module")
def minilm():
    graph, feeds = capture_bundled("minilm"), get_model("minilm").sample_inputs(3, "test")
    return graph, feeds, explain(graph, feeds, composite_named("attnlrp"), Objective())


def test_vit_token_relevance_ranks_like_lxt(vit) -> None:
    graph, feeds, explanation = vit
    model = frozen("digits-vit")
    image = torch.from_numpy(feeds["image"])
    tokens, logits = lxt_vit(model, image)
    with torch.no_grad():
        assert (logits - model(image)).abs().max() < 1e-4
    picked = F.one_hot(logits.argmax(1), logits.shape[1]).to(logits) * logits.detach()
    logits.backward(picked)
    theirs = tokens.grad.sum(-1).numpy()
    ours = explanation.propagation.relevance["permute"].sum(-1)  # the patch tokens
    for n in range(len(ours)):
        rho = spearmanr(theirs[n], ours[n]).statistic
        print(f"vit sample {n}: spearman {rho:.5f}")
        assert rho >= 0.99


def test_minilm_token_relevance_ranks_like_lxt(minilm) -> None:
    graph, feeds, explanation = minilm
    model = frozen("minilm")
    ids, mask = (torch.from_numpy(feeds[name]) for name in ("input_ids", "attention_mask"))
    words, embedding = lxt_minilm(model, ids, mask)
    with torch.no_grad():
        assert (embedding - model(ids, mask)).abs().max() < 1e-5
    embedding.backward(embedding.detach() ** 2)  # the self-similarity objective
    theirs = words.grad.sum(-1).numpy()
    assert explanation.propagation.seed.kind == "self"
    ours = explanation.inputs["input_ids"]
    assert ours.shape == feeds["input_ids"].shape
    for n in range(len(ours)):
        real = feeds["attention_mask"][n] == 1
        rho = spearmanr(theirs[n][real], ours[n][real]).statistic
        print(f"minilm sample {n} ({real.sum()} tokens): spearman {rho:.5f}")
        assert rho >= 0.99
    np.testing.assert_array_equal(explanation.inputs["attention_mask"], 0.0)


@pytest.mark.parametrize("name", ["attnlrp", "cp-lrp"])
def test_vit_layers_conserve_relevance_except_the_softmax(vit, name: str) -> None:
    graph, feeds, attnlrp = vit
    explanation = attnlrp if name == "attnlrp" else explain(graph, feeds, composite_named(name),
                                                            Objective())
    worst = explanation.worst_layer()
    print(f"vit {name}: worst layer {worst.node} ({worst.rule}) {worst.deviation:.1e}")
    assert explanation.violations() == []
    unchecked = {c.rule for c in explanation.checks if c.tolerance is None}
    assert unchecked == ({"softmax-taylor"} if name == "attnlrp" else set())
    positional = explanation.positional["add_13"]
    assert positional.shape == (8, 16)


def test_cp_lrp_sends_no_relevance_through_queries_and_keys(vit) -> None:
    graph, feeds, _ = vit
    relevance = explain(graph, feeds, composite_named("cp-lrp"), Objective()).propagation.relevance
    queries_keys = {"linear", "linear_1", "matmul", "softmax"}  # block 0's q, k, q k^T, softmax
    assert not queries_keys & set(relevance)
    assert "linear_2" in relevance  # the values


def test_minilm_conserves_and_reports_positions(minilm) -> None:
    _, feeds, explanation = minilm
    worst = explanation.worst_layer()
    print(f"minilm attnlrp: worst layer {worst.node} ({worst.rule}) {worst.deviation:.1e}")
    assert explanation.violations() == []
    (positions,) = explanation.positional.values()
    assert positions.shape == feeds["input_ids"].shape


def test_cli_colours_tokens(minilm, tmp_path, capsys, monkeypatch) -> None:
    graph, feeds, _ = minilm
    monkeypatch.setattr(explain_cmd, "capture", lambda model: graph)
    np.savez(tmp_path / "x.npz", **{k: v[:1] for k, v in feeds.items()})
    code = main(["explain", "minilm", "--input", str(tmp_path / "x.npz"),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 0 and "'attnlrp'" in err and "<y, y>" in err
    page = (tmp_path / "out" / "tokens.html").read_text()
    assert "[CLS]" in page and "[PAD]" not in page and "PA-LRP" in page
    with np.load(tmp_path / "out" / "relevance.npz") as saved:
        assert saved["input_ids"].shape == feeds["input_ids"][:1].shape
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["objective"] == "self" and summary["targets"] is None
    assert summary["conservation"]["not_conservative_by_design"] == ["softmax-taylor"]
