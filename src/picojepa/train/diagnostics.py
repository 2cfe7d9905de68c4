"""Collapse diagnostics: if every clip maps to the same features, std → 0 and effective rank → 1."""

from __future__ import annotations

import torch


@torch.no_grad()
def feature_std(features: torch.Tensor) -> float:
    """Mean over dimensions of the per-dimension std across all tokens/clips of a batch."""
    flat = features.reshape(-1, features.shape[-1]).float()
    return float(flat.std(dim=0).mean()) if flat.shape[0] > 1 else 0.0


@torch.no_grad()
def effective_rank(features: torch.Tensor, max_rows: int = 4096) -> float:
    """exp(entropy) of the normalised singular values of the centred feature matrix (Roy & Vetterli)."""
    flat = features.reshape(-1, features.shape[-1]).float()[:max_rows]
    if flat.shape[0] < 2:
        return 0.0
    s = torch.linalg.svdvals(flat - flat.mean(dim=0))
    p = s / s.sum().clamp_min(1e-12)
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return float(torch.exp(entropy))


@torch.no_grad()
def local_share(tokens: torch.Tensor) -> float:
    """Share of token variance that is neither the clip's mean token nor the position's mean over clips.

    tokens (V, N, D) for V clips of N tokens. About 0 when every token of a clip is alike (the collapse a
    JEPA falls into on simple scenes: the background's look copied everywhere) or when tokens only encode
    their position; large when tokens carry what happens at their place in their clip.
    """
    x = tokens.float()
    if x.shape[0] < 2 or x.shape[1] < 2:
        return 0.0
    residual = x - x.mean(dim=1, keepdim=True) - x.mean(dim=0, keepdim=True) + x.mean(dim=(0, 1), keepdim=True)
    total = (x - x.mean(dim=(0, 1), keepdim=True)).pow(2).mean()
    return float(residual.pow(2).mean() / total.clamp_min(1e-12))


@torch.no_grad()
def position_share(tokens: torch.Tensor) -> float:
    """Share of token variance that is the position's mean over clips: what tells a reader *where* a token is.

    tokens (V, N, D). With :func:`local_share` and the clip share it splits the variance three ways; an
    attentive probe has no positions of its own, so it reads a token's place from this part alone.
    """
    x = tokens.float()
    if x.shape[0] < 2 or x.shape[1] < 2:
        return 0.0
    position = x.mean(dim=0, keepdim=True) - x.mean(dim=(0, 1), keepdim=True)
    total = (x - x.mean(dim=(0, 1), keepdim=True)).pow(2).mean()
    return float(position.pow(2).mean() / total.clamp_min(1e-12))
