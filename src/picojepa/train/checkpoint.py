"""Run folders: ``encoder.safetensors`` + ``config.json`` for use, ``checkpoint.safetensors`` for resuming.

The resume checkpoint holds no pickle: its tensors (model, optimiser state, torch RNG states) are safetensors,
everything else (step, config, optimiser settings, NumPy and Python RNG states, skipped videos) is JSON in the
same file's metadata, so one atomic rename writes both and loading can never run code. The ``checkpoint.pt``
pickles of older versions are refused unless the caller says it trusts the file.

Everything is written atomically (temp file + rename): an interrupted run never leaves a half-written
checkpoint behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..config import Config, validate
from ..errors import CheckpointError, ConfigError
from ..models import VideoViT
from ..utils import atomic_write, write_json

ENCODER_FILE = "encoder.safetensors"
BEST_ENCODER_FILE = "encoder-best.safetensors"  # the learning monitor's best reading (see pretrain --keep-best)
LAST_ENCODER_FILE = "encoder-last.safetensors"  # the final encoder, kept beside a best one that replaced it
CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.safetensors"
LEGACY_CHECKPOINT_FILE = "checkpoint.pt"  # a pickle: loaded only when the caller trusts it
CHECKPOINT_FORMAT = "picojepa-checkpoint-1"


def save_encoder(encoder: torch.nn.Module, out: Path, name: str = ENCODER_FILE,
                 info: dict[str, Any] | None = None) -> None:
    """Write an encoder's weights; ``info`` (JSON) goes to the file's metadata, read by :func:`encoder_info`."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    metadata = {"format": "pt", **({"picojepa": json.dumps(info)} if info else {})}
    atomic_write(out / name, lambda p: save_file(tensors, str(p), metadata=metadata))


def encoder_info(path: Path) -> dict[str, Any] | None:
    """The ``info`` an encoder file was saved with; None when it has none or cannot be read."""
    try:
        with safe_open(str(path), framework="pt") as f:
            blob = (f.metadata() or {}).get("picojepa")
        return json.loads(blob) if blob else None
    except (SafetensorError, OSError, json.JSONDecodeError):
        return None


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a resume checkpoint, in this format or the older pickle."""
    return (out / CHECKPOINT_FILE).is_file() or (out / LEGACY_CHECKPOINT_FILE).is_file()


def save_checkpoint(state: dict[str, Any], out: Path) -> None:
    """Write a :meth:`Trainer.state` dict as one safetensors file (tensors) with JSON metadata (the rest)."""
    tensors, meta = _flatten_state(state)
    blob = json.dumps(meta)
    atomic_write(out / CHECKPOINT_FILE, lambda p: save_file(tensors, str(p), metadata={"picojepa": blob}))
    (out / LEGACY_CHECKPOINT_FILE).unlink(missing_ok=True)  # a resumed old run now has the safe format


def load_checkpoint(out: Path, trust_pickle: bool = False) -> dict[str, Any]:
    """The state dict :func:`save_checkpoint` wrote, loaded without unpickling anything. An older
    ``checkpoint.pt`` (a pickle, which can run code when loaded) is refused unless ``trust_pickle``."""
    path = out / CHECKPOINT_FILE
    if path.is_file():
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="pt") as f:
                meta = json.loads((f.metadata() or {})["picojepa"])
        except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} has format {meta.get('format')!r}; this version reads {CHECKPOINT_FORMAT}")
        return _unflatten_state(tensors, meta)
    legacy = out / LEGACY_CHECKPOINT_FILE
    if legacy.is_file():
        if not trust_pickle:
            raise CheckpointError(
                f"{legacy} is a pickle checkpoint from an older pico-JEPA, and loading a pickle can run arbitrary "
                f"code. If you made this file yourself or trust its source, resume with --trust-pickle-checkpoint "
                f"(the run then continues in the safe format)")
        try:
            return torch.load(legacy, map_location="cpu", weights_only=False)
        except Exception as e:  # a damaged pickle raises anything from EOFError to UnpicklingError
            raise CheckpointError(f"{legacy} is unreadable ({type(e).__name__}: {e})") from e
    raise CheckpointError(f"no {CHECKPOINT_FILE} in {out}: nothing to resume")


def _flatten_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"model/{k}": v.detach().cpu().contiguous() for k, v in state["model"].items()}
    optimizer = state["optimizer"]
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in optimizer["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    rng = state["rng"]
    tensors["rng/torch"] = rng["torch"]
    for i, cuda_state in enumerate(rng.get("cuda", [])):
        tensors[f"rng/cuda/{i}"] = cuda_state
    name, keys, pos, has_gauss, cached = rng["numpy"]
    version, mt, gauss_next = rng["python"]
    meta = {
        "format": CHECKPOINT_FORMAT,
        **{k: v for k, v in state.items() if k not in ("model", "optimizer", "rng")},
        "optimizer": {"param_groups": optimizer["param_groups"], "scalars": scalars},
        "rng": {"numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)],
                "python": [version, list(mt), gauss_next], "cuda_devices": len(rng.get("cuda", []))},
    }
    return tensors, meta


def _unflatten_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, name = key.split("/", 2)
            opt_state.setdefault(int(index), {})[name] = value
    for index, values in meta["optimizer"]["scalars"].items():
        opt_state.setdefault(int(index), {}).update(values)
    groups = meta["optimizer"]["param_groups"]
    for group in groups:  # JSON turned tuples into lists; torch's optimisers expect the tuples back
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    name, keys, pos, has_gauss, cached = meta["rng"]["numpy"]
    version, mt, gauss_next = meta["rng"]["python"]
    rng = {"torch": tensors["rng/torch"], "numpy": (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached),
           "python": (version, tuple(mt), gauss_next)}
    if meta["rng"]["cuda_devices"]:
        rng["cuda"] = [tensors[f"rng/cuda/{i}"] for i in range(meta["rng"]["cuda_devices"])]
    rest = {k: v for k, v in meta.items() if k not in ("format", "optimizer", "rng")}
    return {**rest, "model": model, "optimizer": {"state": opt_state, "param_groups": groups}, "rng": rng}


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
