"""Video Vision Transformer encoder over space-time tubelets.

Token order is time-major: index = t·H'·W' + h·W' + w, for a grid of (T', H', W') tubelets.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions → (N, dim) sine/cosine features, dim even."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.double()[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed 3-D sin-cos position table (T'·H'·W', dim), rows in time-major token order."""
    t_dim = (dim // 4) // 2 * 2
    hw_dim = ((dim - t_dim) // 2) // 2 * 2
    gt, gh, gw = grid
    t, h, w = torch.meshgrid(torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij")
    table = torch.cat(
        [sincos_1d(t.flatten(), t_dim), sincos_1d(h.flatten(), hw_dim), sincos_1d(w.flatten(), hw_dim)], dim=1
    )
    return F.pad(table, (0, dim - table.shape[1]))


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, N, D), index (B, K) → (B, K, D)."""
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


class Attention(nn.Module):
    use_sdpa = True  # False: plain softmax(QKᵀ)V, kept for benchmarks and numerical checks

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, D = x.shape
        qkv = self.qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, head_dim)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, D))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def drop_branch(branch: torch.Tensor, rate: float, training: bool, draw: torch.Tensor | None = None) -> torch.Tensor:
    """Stochastic depth: in training, zero a residual branch for a random ``rate`` of the clips (rescaling the
    rest so its expectation is unchanged); the identity otherwise. ``draw``: the clips' uniform draws (B,), when
    the caller makes them (pretraining does, so that they do not depend on how a batch is split over processes)."""
    if rate <= 0.0 or not training:
        return branch
    if draw is None:
        draw = torch.rand(branch.shape[0], device=branch.device)
    keep = (draw >= rate).view(-1, *([1] * (branch.dim() - 1)))
    return branch * keep.to(branch.dtype) / (1.0 - rate)


class Block(nn.Module):
    """Pre-LayerNorm transformer block, with stochastic depth (``drop_path``) on both branches in training."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool = True,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor, draws: torch.Tensor | None = None) -> torch.Tensor:
        """``draws`` (2, B): stochastic depth's draws for the attention and MLP branches (see ``drop_branch``)."""
        attn_draw, mlp_draw = (None, None) if draws is None else (draws[0], draws[1])
        x = x + drop_branch(self.attn(self.norm1(x)), self.drop_path, self.training, attn_draw)
        return x + drop_branch(self.mlp(self.norm2(x)), self.drop_path, self.training, mlp_draw)


class Embedding(NamedTuple):
    pooled: torch.Tensor  # (B, D) mean over all tokens
    grid: torch.Tensor  # (B, T', H', W', D)


def init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VideoViT(nn.Module):
    """Encoder: tubelet embedding → positions → (optional token dropping) → transformer → LayerNorm."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.tubelet = (cfg.tubelet_size, cfg.patch_size, cfg.patch_size)
        self.grid = (cfg.num_frames // cfg.tubelet_size, cfg.img_size // cfg.patch_size,
                     cfg.img_size // cfg.patch_size)
        self.num_tokens = math.prod(self.grid)
        self.embed_dim = cfg.embed_dim
        self.patch_embed = nn.Conv3d(cfg.in_chans, cfg.embed_dim, kernel_size=self.tubelet, stride=self.tubelet)
        if cfg.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, cfg.embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.register_buffer("pos_embed", sincos_3d(self.grid, cfg.embed_dim)[None], persistent=False)
        # Stochastic depth rising linearly from 0 at the first block to drop_path at the last (DeiT's rule).
        rates = [cfg.drop_path * i / max(cfg.depth - 1, 1) for i in range(cfg.depth)]
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias, rate) for rate in rates
        )
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.apply(init_weights)
        # Stochastic depth's draws (depth, 2, B) for the next training forward passes, set by the trainer; when
        # None, each block draws its own from torch's generator.
        self.drop_draws: torch.Tensor | None = None

    def patchify(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, C, T, H, W) → flattened tubelets (B, N, C·t·p·p), in time-major token order."""
        expected = (self.cfg.in_chans, self.cfg.num_frames, self.cfg.img_size, self.cfg.img_size)
        if tuple(video.shape[1:]) != expected:
            raise ValueError(f"expected a video of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(video.shape)}")
        B, C = video.shape[:2]
        (gt, gh, gw), (t, p, _) = self.grid, self.tubelet
        x = video.view(B, C, gt, t, gh, p, gw, p).permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(B, gt * gh * gw, C * t * p * p)

    def tokenize(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tubelet embedding plus positions (B, N, D), or only the ``keep`` (B, K) tokens (B, K, D).

        The Conv3d's weights are applied as a matrix product to the flattened tubelets, so masked
        tubelets are dropped before any computation touches them.
        """
        patches = self.patchify(video)
        pos = self.pos_embed.to(video.dtype).expand(video.shape[0], -1, -1)
        if keep is not None:
            patches, pos = gather_tokens(patches, keep), gather_tokens(pos, keep)
        weight = self.patch_embed.weight.flatten(1)  # (D, C·t·p·p), same layout as patchify
        return F.linear(patches, weight.to(patches.dtype), self.patch_embed.bias) + pos

    def forward(self, video: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (B, N, D); with ``keep`` (B, K), only those tokens are embedded and encoded → (B, K, D)."""
        x = self.tokenize(video, keep)
        for i, block in enumerate(self.blocks):
            x = block(x, None if self.drop_draws is None else self.drop_draws[i])
        return self.norm(x)

    @torch.no_grad()
    def embed(self, video: torch.Tensor) -> Embedding:
        """Pooled clip embedding (B, D) and token grid (B, T', H', W', D) of a normalised float clip
        (B, C, T, H, W) at the model's size. Raw uint8 frames go through :func:`picojepa.embed_frames`,
        which prepares them exactly as feature extraction does."""
        if video.dtype == torch.uint8:
            raise TypeError("embed() takes a normalised float clip (B, C, T, H, W); for raw uint8 frames "
                            "(B, T, H, W, 3) use picojepa.embed_frames(encoder, frames)")
        tokens = self.forward(video)
        return Embedding(tokens.mean(dim=1), tokens.view(tokens.shape[0], *self.grid, self.embed_dim))
