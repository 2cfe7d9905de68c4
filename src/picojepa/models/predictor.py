"""Narrow transformer that predicts the latent features of masked tubelets from the context."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .vit import Block, gather_tokens, init_weights, sincos_3d


class Predictor(nn.Module):
    """Context tokens + learnable mask tokens at the target positions → predictions at the targets."""

    def __init__(self, cfg: ModelConfig, grid: tuple[int, int, int], out_dim: int | None = None,
                 pixel_dim: int = 0) -> None:
        super().__init__()
        dim = cfg.pred_embed_dim
        self.embed = nn.Linear(cfg.embed_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_buffer("pos_embed", sincos_3d(grid, dim)[None], persistent=False)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.pred_num_heads, cfg.mlp_ratio, cfg.qkv_bias) for _ in range(cfg.pred_depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, out_dim or cfg.embed_dim)  # out_dim: e.g. a tubelet's pixels
        # An auxiliary read-out of the masked tubelets' pixels from the same hidden states (train.pixel_weight).
        self.pixel_proj = nn.Linear(dim, pixel_dim) if pixel_dim else None
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """context (B, K, D) at positions keep (B, K); target (B, M) → predictions (B, M, out_dim)."""
        return self.proj(self.hidden(context, keep, target))

    def forward_with_pixels(self, context: torch.Tensor, keep: torch.Tensor,
                            target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictions and the auxiliary pixel read-out (B, M, pixel_dim) of the same targets."""
        if self.pixel_proj is None:
            raise ValueError("this predictor has no pixel read-out (pixel_dim=0)")
        hidden = self.hidden(context, keep, target)
        return self.proj(hidden), self.pixel_proj(hidden)

    def hidden(self, context: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The normalised hidden states at the target positions (B, M, pred_embed_dim)."""
        B, M = target.shape
        pos = self.pos_embed.expand(B, -1, -1).to(context.dtype)
        x = self.embed(context) + gather_tokens(pos, keep)
        queries = self.mask_token.to(x.dtype).expand(B, M, -1) + gather_tokens(pos, target)
        x = torch.cat([x, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, keep.shape[1]:])
