"""Frozen-encoder features: K evenly spaced clips per video through the encoder, computed once."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..config import default_cache_side
from ..data.dataset import FrameStore, eval_loader
from ..data.transforms import cached_eval_transform, centre_crop, resize_short_side
from ..models import Embedding, VideoViT


@dataclass
class Features:
    pooled: np.ndarray  # (V, K, D) float32: mean over tokens of each clip
    tokens: np.ndarray | None  # (V, K, N, D) float16, only when asked for (attentive heads)
    ok: np.ndarray  # (V,) bool: False for videos that failed to decode
    failed: list[tuple[int, str]] = field(default_factory=list)  # (video index, reason)


@torch.no_grad()
def encode_clips(encoder: VideoViT, clips: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 clips (B, T, S, S, 3) → tokens (B, N, D) float32, bf16 autocast on CUDA."""
    video = cached_eval_transform(clips.to(device, non_blocking=True), encoder.cfg.img_size)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        return encoder(video).float()


@torch.no_grad()
def embed_frames(encoder: VideoViT, frames: torch.Tensor, cache_side: int | None = None) -> Embedding:
    """Embeddings of raw uint8 frames (B, T, H, W, 3) of any size, prepared with the same geometry as
    feature extraction: shorter side resized to the clip cache's side (8/7 of the model's size unless
    ``cache_side``), centre square, centre crop at the model's size, normalised."""
    if frames.dtype != torch.uint8 or frames.ndim != 5 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames (B, T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    device = next(encoder.parameters()).device
    side = cache_side or default_cache_side(encoder.cfg.img_size)
    clips = centre_crop(resize_short_side(frames.to(device), side), side)
    square = clips.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)  # as cached: uint8 (B, T, S, S, 3)
    video = cached_eval_transform(square, encoder.cfg.img_size)
    encoder.eval()
    return encoder.embed(video)


@torch.no_grad()
def extract_features(encoder: VideoViT, store: FrameStore, num_clips: int = 4, batch_size: int = 32,
                     keep_tokens: bool = False, workers: int = 0, progress: bool = True,
                     description: str = "extracting features") -> Features:
    """Encode every video of ``store``; videos that fail to decode are marked, never filled in."""
    from ..progress import track

    device = next(encoder.parameters()).device
    encoder.eval()
    V, D, N = len(store), encoder.embed_dim, encoder.num_tokens
    pooled = np.zeros((V, num_clips, D), dtype=np.float32)
    tokens = np.zeros((V, num_clips, N, D), dtype=np.float16) if keep_tokens else None
    ok = np.zeros(V, dtype=bool)
    failed: list[tuple[int, str]] = []
    videos_per_batch = max(1, batch_size // num_clips)
    loader = eval_loader(store, encoder.cfg.num_frames, num_clips, videos_per_batch, workers)
    for items in track(loader, total=len(loader), description=description, enabled=progress):
        good = [(i, clips) for i, clips, err in items if err is None]
        failed += [(i, err) for i, clips, err in items if err is not None]
        if not good:
            continue
        index = [i for i, _ in good]
        clips = torch.from_numpy(np.concatenate([c for _, c in good]))  # (B·K, T, S, S, 3)
        out = encode_clips(encoder, clips, device).view(len(good), num_clips, N, D)
        pooled[index] = out.mean(dim=2).cpu().numpy()
        if tokens is not None:
            tokens[index] = out.half().cpu().numpy()
        ok[index] = True
    return Features(pooled, tokens, ok, failed)
