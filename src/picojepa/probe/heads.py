"""Classification heads on encoder tokens (B, N, D) → logits (B, C)."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

HEAD_TYPES = ("linear", "attentive", "mlp")


class LinearHead(nn.Module):
    """Mean-pool the tokens, standardise with training-set statistics, one linear layer."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.fc = nn.Linear(dim, num_classes)

    def pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc((pooled - self.mean) / self.std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pooled(tokens.mean(dim=1))


class MLPHead(LinearHead):
    """Mean-pool, standardise, one hidden layer."""

    def __init__(self, dim: int, num_classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__(dim, num_classes)
        self.fc = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class AttentiveHead(nn.Module):
    """V-JEPA's frozen-evaluation probe: a learned query cross-attends to all tokens (with the query as a
    residual), then an MLP residual and a linear classifier."""

    def __init__(self, dim: int, num_classes: int, num_heads: int = 4) -> None:
        super().__init__()
        if dim % num_heads:
            num_heads = 1
        self.query = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_in = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.norm_out = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        kv = self.norm_in(tokens)
        query = self.query.expand(tokens.shape[0], -1, -1)
        attended, _ = self.attn(self.norm_q(query), kv, kv, need_weights=False)
        x = query + attended
        x = x + self.mlp(self.norm_mlp(x))
        return self.fc(self.norm_out(x[:, 0]))


def make_head(kind: str, dim: int, num_classes: int) -> nn.Module:
    if kind == "linear":
        return LinearHead(dim, num_classes)
    if kind == "mlp":
        return MLPHead(dim, num_classes)
    if kind == "attentive":
        return AttentiveHead(dim, num_classes)
    raise ConfigError(f"unknown head {kind!r}; choose one of: {', '.join(HEAD_TYPES)}")


def uses_pooled_features(kind: str) -> bool:
    """Linear and MLP heads only need the mean token, so their cached features are tiny."""
    return kind in ("linear", "mlp")
