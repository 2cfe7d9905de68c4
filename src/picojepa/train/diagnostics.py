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
