"""pico-JEPA: ultra-light V-JEPA video self-supervised learning and ensembles of small models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import torch

    from .config import Config
    from .models import Embedding, VideoViT


def load_encoder(run_dir: Any, device: Any = "cpu") -> VideoViT:
    """The pretrained encoder of a run folder, in eval mode (strict: every tensor must match)."""
    from .train.checkpoint import load_encoder as _load

    return _load(run_dir, device)


def embed_frames(encoder: VideoViT, frames: torch.Tensor) -> Embedding:
    """Pooled and grid embeddings of raw uint8 frames (B, T, H, W, 3) of any size, prepared exactly as
    feature extraction prepares clips (see :func:`picojepa.probe.features.embed_frames`)."""
    from .probe.features import embed_frames as _embed

    return _embed(encoder, frames)


def load_config(preset_name: str = "pico", yaml_path: Any = None, overrides: list[str] | None = None) -> Config:
    from .config import load_config as _load

    return _load(preset_name, yaml_path, overrides)


__all__ = ["__version__", "embed_frames", "load_config", "load_encoder"]
