"""pico-JEPA: ultra-light V-JEPA video self-supervised learning and ensembles of small models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import Config
    from .models import VideoViT


def load_encoder(run_dir: Any, device: Any = "cpu") -> VideoViT:
    """The pretrained encoder of a run folder, in eval mode (strict: every tensor must match)."""
    from .train.checkpoint import load_encoder as _load

    return _load(run_dir, device)


def load_config(preset_name: str = "pico", yaml_path: Any = None, overrides: list[str] | None = None) -> Config:
    from .config import load_config as _load

    return _load(preset_name, yaml_path, overrides)


__all__ = ["__version__", "load_config", "load_encoder"]
