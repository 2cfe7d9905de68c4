"""Anti-collapse terms on a batch of embeddings (N, D): each is one function, testable on its own.

- ``sigreg``: LeJEPA's Sketched Isotropic Gaussian Regulariser (Balestriero & LeCun, 2025). Random 1-D
  projections of the embeddings are compared with a standard normal through the Epps–Pulley statistic:
  the weighted squared distance between their empirical characteristic function and exp(−t²/2).
  Near 0 for isotropic Gaussian samples, large for collapsed ones.
- ``vicreg``: variance hinge (every dimension's std ≥ 1) plus the squared off-diagonal covariances,
  as in VICReg / C-JEPA.
"""

from __future__ import annotations

import torch


def epps_pulley(samples: torch.Tensor, knots: int = 17, t_max: float = 3.0) -> torch.Tensor:
    """Epps–Pulley statistic of each column of ``samples`` (N, M) against N(0, 1) → (M,).

    N · ∫₀^t_max |φ̂(t) − e^{−t²/2}|² e^{−t²/2} dt, with φ̂ the empirical characteristic function; the
    integrand is even in t, so integrating over [0, t_max] (trapezoid rule) covers both halves.
    """
    t = torch.linspace(0.0, t_max, knots, device=samples.device, dtype=torch.float32)
    phase = samples.float()[..., None] * t  # (N, M, K)
    real, imag = phase.cos().mean(0), phase.sin().mean(0)  # (M, K)
    gauss = torch.exp(-0.5 * t * t)
    integrand = ((real - gauss) ** 2 + imag**2) * gauss
    return samples.shape[0] * torch.trapezoid(integrand, t, dim=-1)


def sigreg(embeddings: torch.Tensor, num_directions: int = 256,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Mean Epps–Pulley statistic of ``num_directions`` random unit projections of (N, D) embeddings."""
    flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
    directions = torch.randn(flat.shape[-1], num_directions, generator=generator, device="cpu").to(flat.device)
    directions = directions / directions.norm(dim=0, keepdim=True)
    return epps_pulley(flat @ directions).mean()


def vicreg(embeddings: torch.Tensor, std_target: float = 1.0, eps: float = 1e-4,
           cov_weight: float = 1.0) -> torch.Tensor:
    """Variance hinge (every dimension's std ≥ ``std_target``) + ``cov_weight`` × covariance penalty of (N, D)
    embeddings (the two VICReg terms; VICReg itself weights them 25:1, i.e. ``cov_weight`` 0.04)."""
    flat = embeddings.reshape(-1, embeddings.shape[-1]).float()
    centred = flat - flat.mean(dim=0)
    std = torch.sqrt(centred.var(dim=0) + eps)
    variance = torch.relu(std_target - std).mean()
    cov = centred.T @ centred / max(flat.shape[0] - 1, 1)
    off_diagonal = cov - torch.diag(torch.diag(cov))
    return variance + cov_weight * (off_diagonal**2).sum() / flat.shape[-1]


def content_residual(tokens: torch.Tensor, positions: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Tokens (B, K, D) at token positions (B, K) → (B·K, D) minus the batch mean at each position.

    Regularising raw tokens does not stop the collapse that matters here: an encoder whose output depends
    on the position alone has diverse, full-rank tokens, yet every clip looks the same. What is left after
    removing each position's mean is what varies between clips: the content.
    """
    flat = tokens.reshape(-1, tokens.shape[-1]).float()
    pos = positions.reshape(-1)
    sums = torch.zeros(num_positions, flat.shape[-1], device=flat.device).index_add_(0, pos, flat)
    counts = torch.bincount(pos, minlength=num_positions).clamp_min(1).to(flat.dtype)
    return flat - (sums / counts[:, None])[pos]


def local_residual(tokens: torch.Tensor, positions: torch.Tensor, num_positions: int) -> torch.Tensor:
    """Tokens (B, K, D) → (B·K, D) minus their clip's mean token and their position's batch mean (plus the
    grand mean): the part of a token that is neither the same all over its clip (e.g. the background's
    colour) nor the same at its place in every clip (its position). A JEPA on simple scenes collapses to
    the first kind — every token of a clip alike — and a term on raw tokens cannot see it."""
    flat = tokens.reshape(-1, tokens.shape[-1]).float()
    clip_means = tokens.float().mean(dim=1, keepdim=True).expand_as(tokens).reshape(flat.shape)
    return content_residual(tokens, positions, num_positions) - clip_means + flat.mean(dim=0, keepdim=True)


def regularizer_loss(kind: str, embeddings: torch.Tensor, num_directions: int = 256,
                     generator: torch.Generator | None = None, vicreg_std: float = 1.0,
                     vicreg_cov_weight: float = 1.0) -> torch.Tensor:
    if kind == "sigreg":
        return sigreg(embeddings, num_directions, generator)
    if kind == "vicreg":
        return vicreg(embeddings, vicreg_std, cov_weight=vicreg_cov_weight)
    raise ValueError(f"unknown regularizer {kind!r}")
