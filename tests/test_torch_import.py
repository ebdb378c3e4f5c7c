"""Capture from torch.export against torch's own output, at a batch size other than the
export's, for CNN and transformer op families; unsupported ops are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lowbit.compiler import UnsupportedOpError
from lowbit.compiler.importers.torch_export import capture_module
from lowbit.runtime import run_graph
from lowbit.runtime.references import relative_error


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.depthwise = nn.Conv2d(8, 8, 3, stride=2, groups=8, padding=1)
        self.grouped = nn.Conv2d(8, 8, 1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8, affine=False)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn(self.conv(x)))
        y = F.relu6(self.depthwise(y))
        y = F.max_pool2d(self.bn2(self.grouped(y)), 2, ceil_mode=True)
        y = F.avg_pool2d(F.silu(y), 2, padding=1) + torch.sigmoid(y).mean((2, 3), keepdim=True)
        y = F.adaptive_avg_pool2d(torch.tanh(y) * F.gelu(y), 1).flatten(1)
        return self.fc(y)


class AttentionBlock(nn.Module):
    def __init__(self, vocab: int = 20, dim: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, 6, dim))
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.heads = heads

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.embed(ids) + self.position
        h = self.norm(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        split = lambda t: t.reshape(t.shape[0], -1, self.heads, 4).transpose(1, 2)  # noqa: E731
        q, k, v = split(q), split(k), split(v)
        bias = (1.0 - mask[:, None, None, :].to(torch.float32)) * -10000.0
        scores = torch.matmul(q, k.transpose(-1, -2)) / torch.sqrt(torch.tensor(4.0)) + bias
        attn = torch.matmul(scores.softmax(-1), v).transpose(1, 2).reshape(x.shape)
        y = x + self.out(attn)
        sdpa = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
        pooled = torch.cat([y[:, :1], y[:, 1:].pow(2).sqrt() / 2.0], dim=1).sum(1)
        return pooled, sdpa + y.select(1, 0)[:, None, :]


def _randomize_bn(model: nn.Module) -> nn.Module:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def _check(model: nn.Module, export_sample: dict, run_sample: dict, outputs: list[str]) -> None:
    graph = capture_module(model, export_sample, name="m", output_names=outputs)
    got = run_graph(graph, run_sample)
    with torch.no_grad():
        want = model(*(torch.from_numpy(a) for a in run_sample.values()))
    want = want if isinstance(want, tuple) else (want,)
    for name, reference in zip(outputs, want):
        assert relative_error(got[name], reference.numpy()) < 1e-5, name


def test_cnn_matches_torch_at_other_batch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = _randomize_bn(ConvNet())
    _check(model, {"image": rng.standard_normal((2, 3, 12, 12)).astype(np.float32)},
           {"image": rng.standard_normal((5, 3, 12, 12)).astype(np.float32)}, ["logits"])


def test_attention_block_matches_torch_at_other_batch() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def sample(batch: int) -> dict:
        mask = np.ones((batch, 6), np.int64)
        mask[0, 4:] = 0
        return {"ids": rng.integers(0, 20, (batch, 6)), "mask": mask}

    _check(AttentionBlock().eval(), sample(2), sample(3), ["pooled", "mixed"])


def test_capture_keeps_layers_whole_and_batch_symbolic() -> None:
    torch.manual_seed(0)
    graph = capture_module(_randomize_bn(ConvNet()),
                           {"image": np.zeros((2, 3, 12, 12), np.float32)}, name="cnn")
    ops = graph.op_histogram()
    assert ops["conv"] == 3 and ops["batch_norm"] == 2 and ops["linear"] == 1
    assert str(graph.types[graph.inputs[0]]) == "float32[N, 3, 12, 12]"
    assert graph.covered_origins() == set(graph.captured)


def test_unsupported_op_names_node_and_op() -> None:
    class Cumulative(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cumsum(x, dim=1)

    with pytest.raises(UnsupportedOpError) as caught:
        capture_module(Cumulative(), {"x": np.zeros((2, 4), np.float32)}, name="c")
    assert caught.value.node == "cumsum" and caught.value.op == "aten.cumsum.default"
    assert "cumsum" in str(caught.value)
