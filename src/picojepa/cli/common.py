"""What the command groups share: option types, help texts, the config builder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PicoJepaError

HEAD_HELP = ("attentive (default; V-JEPA's frozen evaluation: a learned query cross-attends to all tokens), "
             "linear or mlp (on mean-pooled tokens).")
# picojepa.probe.classifier.PROBE_GRID in words (the CLI module does not import torch for --help; a test
# checks that the two agree).
PROBE_GRID_HELP = "heads at learning rates 3e-4 and 1e-3 × weight decays 0.05 and 0.5"
INITS_HELP = ("Heads per (learning rate, weight decay), each from its own initialisation; all are averaged. "
              "More lifts both encoders (a head's seed alone moves it by several points) at a linear cost.")


def counts(text: str, option: str) -> tuple[int, ...]:
    """"5,10,25" → (5, 10, 25); a clear error for anything else."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise PicoJepaError(f"{option} takes comma-separated whole numbers such as 5,10,25, got {text!r}") from None



def shares(text: str, option: str, count: int) -> tuple[float, ...]:
    """"0.5,0.1,0.4" → (0.5, 0.1, 0.4): ``count`` positive numbers summing to 1, or a clear error."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if len(values) != count or any(v <= 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise PicoJepaError(f"{option} takes {count} positive comma-separated shares summing to 1, such as "
                            f"0.6,0.2,0.2; got {text!r}")
    return values


# Shared option types -------------------------------------------------------------------------
Preset = Annotated[str, typer.Option("--preset", "-p", help="Named config: pico (224 px), pico-112, tiny.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file with config sections.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any config field, e.g. --set model.depth=4 --set mask.type=tube (repeatable).")]
Epochs = Annotated[int | None, typer.Option(help="Pretraining epochs (passes over the videos).")]
ClipSteps = Annotated[int | None, typer.Option(
    "--clip-steps", min=1, help="Pretraining length in clips (steps × batch size), instead of --epochs: the same "
                                "budget on any number of videos. The default's gain held from 20000 to 80000 and fell "
                                "past 80000 (docs/scaling.md); pretrain warns past that without --eval-data.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", "-b", help="Clips per step.")]
Device = Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")]
Seed = Annotated[int | None, typer.Option(help="Random seed (data order, masks, init).")]
Decoder = Annotated[str | None, typer.Option(help="Video decoder: auto, pyav or torchcodec.")]
CacheDir = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Clip cache folder (default ~/.cache/picojepa/clips or $PICOJEPA_CACHE).")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Decode videos on every access instead of caching.")]
Workers = Annotated[int | None, typer.Option(help="DataLoader worker processes.")]
MaxBad = Annotated[float | None, typer.Option(
    "--max-bad-fraction", help="Refuse to train when more than this fraction of videos is unusable.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def one_length(epochs: int | None, clip_steps: int | None) -> None:
    """--epochs and --clip-steps both set a run's length: refuse both rather than silently prefer one."""
    if epochs is not None and clip_steps is not None:
        raise PicoJepaError("--epochs and --clip-steps both set the pretraining length; give one of them")


def build_config(preset: str, config: Path | None, overrides: list[str] | None, **fields: object):
    """Preset → YAML → --set → explicit flags (flags win). ``fields`` maps section.field → value or None."""
    from ..config import load_config, set_field, validate

    cfg = load_config(preset, config, overrides)
    for key, value in fields.items():
        if value is not None:
            set_field(cfg, key.replace("__", "."), value)
    validate(cfg)
    return cfg
