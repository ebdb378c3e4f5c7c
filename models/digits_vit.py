"""digits-vit: a two-block pre-norm vision transformer for the 8x8 digits.

Attention is written out with explicit linear/view/permute/matmul/softmax ops (no fused attention
kernels), and every reshape keeps the batch dimension symbolic for `torch.export`.
"""

import torch
from torch import nn

from lowbit.models.digits_bundle import digits_model
from lowbit.models.training import TrainConfig

DIM = 48
HEADS = 4
MLP_DIM = 96
DEPTH = 2
PATCH = 2
TOKENS = (8 // PATCH) ** 2
TRAIN_CONFIG = TrainConfig(
    epochs=30, batch_size=32, lr=3e-3, weight_decay=5e-2, seed=0, label_smoothing=0.1
)


class SelfAttention(nn.Module):
    """Multi-head self-attention over [N, S, dim] tokens."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.q(x))
        k = self._split_heads(self.k(x))
        v = self._split_heads(self.v(x))
        weights = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        mixed = torch.matmul(weights, v).permute(0, 2, 1, 3)
        return self.out(mixed.reshape(x.shape[0], -1, self.heads * self.head_dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.mlp_norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class DigitsViT(nn.Module):
    """2x2 patches -> 16 tokens + positions -> blocks -> LayerNorm -> token mean -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, DIM, PATCH, stride=PATCH)
        self.position = nn.Parameter(torch.randn(1, TOKENS, DIM) * 0.02)
        self.blocks = nn.Sequential(*(Block(DIM, HEADS, MLP_DIM) for _ in range(DEPTH)))
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 10)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(image).flatten(2).transpose(1, 2) + self.position
        tokens = self.norm(self.blocks(tokens))
        return self.head(tokens.mean(dim=1))


MODEL = digits_model(
    "digits-vit",
    "two-block vision transformer (2x2 patches, explicit multi-head attention) on 8x8 digits",
    DigitsViT,
    TRAIN_CONFIG,
)
