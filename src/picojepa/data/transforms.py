"""Clip transforms in plain torch, batched, on any device; frames stay uint8 until the last step.

Inputs are uint8 frames (B, T, H, W, C) as decoded; outputs are normalised float clips
(B, C, T, S, S) as the encoder expects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def normalize(clips: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, C, T, H, W) float in [0, 255] → normalised, in ``dtype``."""
    mean = torch.tensor(MEAN, device=clips.device, dtype=torch.float32).view(1, -1, 1, 1, 1) * 255
    std = torch.tensor(STD, device=clips.device, dtype=torch.float32).view(1, -1, 1, 1, 1) * 255
    return ((clips.float() - mean) / std).to(dtype)


def to_channels_first(frames: torch.Tensor) -> torch.Tensor:
    """(B, T, H, W, C) → (B, C, T, H, W)."""
    return frames.permute(0, 4, 1, 2, 3)


def resize_short_side(frames: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 (B, T, H, W, C) → float (B, C, T, h, w) with min(h, w) = side, antialiased."""
    B, T, H, W, C = frames.shape
    h, w = (side, max(side, round(W * side / H))) if H <= W else (max(side, round(H * side / W)), side)
    x = frames.permute(0, 1, 4, 2, 3).reshape(B * T, C, H, W).float()
    if (h, w) != (H, W):
        x = F.interpolate(x, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
    return x.view(B, T, C, h, w).transpose(1, 2)


def centre_crop(clips: torch.Tensor, side: int) -> torch.Tensor:
    H, W = clips.shape[-2:]
    top, left = (H - side) // 2, (W - side) // 2
    return clips[..., top: top + side, left: left + side]


def eval_transform(frames: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Any-size uint8 frames → resize the shorter side to ``size``, centre crop, normalise."""
    return normalize(centre_crop(resize_short_side(frames, size), size), dtype)


def cached_eval_transform(frames: torch.Tensor, size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Square cached frames (B, T, S, S, C) → centre crop of ``size`` (S = 8/7·size gives the usual
    "resize 256, crop 224" evaluation), normalise."""
    clips = to_channels_first(frames)
    side = min(clips.shape[-2:])
    if side < size:
        return eval_transform(frames, size, dtype)
    return normalize(centre_crop(clips, size), dtype)


def random_resized_crop_params(batch: int, scale: tuple[float, float], ratio: tuple[float, float],
                               hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-clip affine parameters (B, 4): centre x, centre y, half-width, half-height in [-1, 1]
    coordinates, the width signed negative for a horizontal flip."""
    area = torch.empty(batch).uniform_(scale[0], scale[1], generator=generator)
    log_r = torch.empty(batch).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = log_r.exp()
    half_w = (area * aspect).sqrt().clamp(max=1.0)  # fractions of the frame's half-size
    half_h = (area / aspect).sqrt().clamp(max=1.0)
    cx = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - half_w)
    cy = (torch.rand(batch, generator=generator) * 2 - 1) * (1 - half_h)
    flip = (torch.rand(batch, generator=generator) < 0.5) if hflip else torch.zeros(batch, dtype=torch.bool)
    return torch.stack([cx, cy, torch.where(flip, -half_w, half_w), half_h], dim=1)


def train_transform(frames: torch.Tensor, size: int, params: torch.Tensor,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Batched random resized crop + flip + normalise, one ``grid_sample`` for the whole batch.

    frames: uint8 (B, T, H, W, C) on any device; params from :func:`random_resized_crop_params`.
    """
    B, T, H, W, C = frames.shape
    params = params.to(frames.device, torch.float32)
    theta = torch.zeros(B, 2, 3, device=frames.device)
    theta[:, 0, 0], theta[:, 0, 2] = params[:, 2], params[:, 0]
    theta[:, 1, 1], theta[:, 1, 2] = params[:, 3], params[:, 1]
    grid = F.affine_grid(theta, [B, C * T, size, size], align_corners=False)
    x = frames.permute(0, 4, 1, 2, 3).reshape(B, C * T, H, W).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return normalize(out.view(B, C, T, size, size), dtype)
