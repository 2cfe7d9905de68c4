"""Run folders: ``encoder.safetensors`` + ``config.json`` for use, ``checkpoint.pt`` for resuming.

Everything is written atomically (temp file + rename): an interrupted run never leaves a half-written
checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import Config, validate
from ..errors import CheckpointError, ConfigError
from ..models import VideoViT
from ..utils import atomic_write, write_json

ENCODER_FILE = "encoder.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"


def save_encoder(encoder: torch.nn.Module, out: Path) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    atomic_write(out / ENCODER_FILE, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))


def save_checkpoint(state: dict[str, Any], out: Path) -> None:
    atomic_write(out / CHECKPOINT_FILE, lambda p: torch.save(state, p))


def load_checkpoint(out: Path) -> dict[str, Any]:
    path = out / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"no {CHECKPOINT_FILE} in {out}: nothing to resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a damaged pickle raises anything from EOFError to UnpicklingError
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from e


def write_run_config(out: Path, cfg: Config, **meta: Any) -> None:
    write_json(out / CONFIG_FILE, {"config": cfg.to_dict(), **meta})


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise CheckpointError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {CONFIG_FILE}: is it a pico-JEPA run folder?")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def config_from_run(run_dir: str | Path) -> Config:
    meta = read_run_config(run_dir)
    if "config" not in meta:
        raise CheckpointError(f"{Path(run_dir) / CONFIG_FILE} has no 'config' entry")
    try:
        cfg = Config.from_dict(meta["config"])
        validate(cfg)
    except ConfigError as e:
        raise CheckpointError(f"{Path(run_dir) / CONFIG_FILE} holds an invalid config: {e}") from e
    return cfg


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Load every tensor or fail, listing missing, unexpected and mis-shaped ones."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:5])}")
        if shapes:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}" for k in shapes[:5]))
        raise CheckpointError(f"{source} does not match the model in its config.json: " + "; ".join(parts))
    module.load_state_dict(tensors, strict=True)


def load_encoder(run_dir: str | Path, device: str | torch.device = "cpu") -> VideoViT:
    """The pretrained (EMA target) encoder of a run folder, in eval mode.

    Fails loudly if the weights do not match the architecture stored in ``config.json``.
    """
    run_dir = Path(run_dir)
    cfg = config_from_run(run_dir)
    path = run_dir / ENCODER_FILE
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no {ENCODER_FILE} (was the run finished?)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from e
    encoder = VideoViT(cfg.model)
    load_state_strict(encoder, tensors, str(path))
    return encoder.to(device).eval()
