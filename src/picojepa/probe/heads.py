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
        x = self.query[:, 0] + self.attend(self.norm_in(tokens))
        x = x + self.mlp(self.norm_mlp(x))
        return self.fc(self.norm_out(x))

    def forward_unfolded(self, tokens: torch.Tensor) -> torch.Tensor:
        """The same head as V-JEPA writes it, ``nn.MultiheadAttention`` projecting every token: the reference
        that tests and ``bench/speed/probe_head.py`` hold :meth:`forward` to."""
        kv = self.norm_in(tokens)
        query = self.query.expand(tokens.shape[0], -1, -1)
        attended, _ = self.attn(self.norm_q(query), kv, kv, need_weights=False)
        x = query + attended
        x = x + self.mlp(self.norm_mlp(x))
        return self.fc(self.norm_out(x[:, 0]))

    def attend(self, kv: torch.Tensor) -> torch.Tensor:
        """``self.attn`` with the one learned query, (B, N, D) → (B, D), computed without projecting every
        token. The query is the same for every clip, so its score against a token's key is a dot product
        of the token with one folded vector per head (the key bias adds a constant the softmax ignores),
        and the value projection commutes with the attention-weighted sum: 3.5× faster per training step
        (bench/speed/probe_head.py), equal to ``nn.MultiheadAttention`` up to float rounding (tested)."""
        B, _, D = kv.shape
        H = self.attn.num_heads
        w_q, w_k, w_v = self.attn.in_proj_weight.view(3, H, D // H, D).unbind(0)
        b_q, _, b_v = self.attn.in_proj_bias.view(3, H, D // H).unbind(0)
        q = torch.einsum("hed,d->he", w_q, self.norm_q(self.query)[0, 0]) + b_q
        folded = torch.einsum("he,hed->hd", q, w_k) * (D // H) ** -0.5
        weights = torch.softmax(kv @ folded.T, dim=1)  # (B, N, H)
        pooled = torch.einsum("bnh,bnd->bhd", weights, kv)
        values = torch.einsum("bhd,hed->bhe", pooled, w_v) + b_v
        return self.attn.out_proj(values.reshape(B, D))


class HeadEnsemble(nn.Module):
    """Heads of one kind trained with different hyper-parameters, averaged: returns the log of their mean
    probabilities, so a softmax downstream gives the mean probabilities exactly."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    @staticmethod
    def _mean_log_probs(logits: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([x.float().softmax(dim=-1) for x in logits]).mean(dim=0).clamp_min(1e-12).log()

    def pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        return self._mean_log_probs([m.pooled(pooled) for m in self.members])

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._mean_log_probs([m(tokens) for m in self.members])


def make_head(kind: str, dim: int, num_classes: int, members: int = 1) -> nn.Module:
    """A head of ``kind``; with ``members`` > 1, a :class:`HeadEnsemble` of that many."""
    if members > 1:
        return HeadEnsemble([make_head(kind, dim, num_classes) for _ in range(members)])
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
