"""Command line: ``picojepa <command> --help`` describes each command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .errors import PicoJepaError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="pico-JEPA: ultra-light V-JEPA video self-supervised learning, and ensembles of small models.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect data and build manifests.")
app.add_typer(data_app, name="data")


def _mount_viz() -> None:
    from .viz.cli import viz_app

    app.add_typer(viz_app, name="viz", help="Pictures: mask views, t-SNE maps, training curves.")


try:
    _mount_viz()
except ImportError:  # the viz package is being written; the other commands work without it
    pass

# Shared option types -------------------------------------------------------------------------
Preset = Annotated[str, typer.Option("--preset", "-p", help="Named config: pico (224 px), pico-112, tiny.")]
ConfigFile = Annotated[Path | None, typer.Option("--config", "-c", help="YAML file with config sections.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="Override any config field, e.g. --set model.depth=4 --set mask.type=tube (repeatable).")]
Epochs = Annotated[int | None, typer.Option(help="Pretraining epochs (passes over the videos).")]
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


def build_config(preset: str, config: Path | None, overrides: list[str] | None, **fields: object):
    """Preset → YAML → --set → explicit flags (flags win). ``fields`` maps section.field → value or None."""
    from .config import load_config, set_field, validate

    cfg = load_config(preset, config, overrides)
    for key, value in fields.items():
        if value is not None:
            set_field(cfg, key.replace("__", "."), value)
    validate(cfg)
    return cfg


@app.command()
def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="Videos: class folders, folder, .csv or .txt list.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    preset: Preset = "pico",
    config: ConfigFile = None,
    overrides: Overrides = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    device: Device = "auto",
    seed: Seed = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out.")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (CUDA: faster).")] = False,
    decoder: Decoder = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    workers: Workers = None,
    max_bad_fraction: MaxBad = None,
    quiet: Quiet = False,
) -> None:
    """Pretrain a pico-JEPA encoder on a folder or list of videos (no labels needed).

    Writes OUT/encoder.safetensors (the EMA target encoder), config.json, checkpoint.pt (for
    --resume), metrics.jsonl and skipped.json (unusable videos with reasons).
    """
    from .train import pretrain as run

    cfg = build_config(
        preset, config, overrides, train__epochs=epochs, train__batch_size=batch_size, train__lr=lr,
        train__device=device, train__seed=seed, train__compile=compile or None, data__decoder=decoder,
        data__use_cache=False if no_cache else None, data__num_workers=workers,
        data__max_bad_fraction=max_bad_fraction,
    )
    result = run(cfg, data, out, resume=resume, progress=not quiet, cache_dir=cache_dir)
    typer.echo(f"pretrained {result.steps} steps on {result.videos} videos in {result.seconds:.1f} s "
               f"(final loss {result.final_loss:.4f}); skipped {len(result.skipped)}; run folder: {result.out}")


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="Class folders, a folder, a .csv manifest or a .txt list.")],
    preset: Preset = "pico",
    quiet: Quiet = False,
) -> None:
    """Open every video and report each unusable one with its reason, and bad manifest rows with their
    line numbers. Exits with status 1 when anything is unusable."""
    from .config import preset as get_preset
    from .data import check_videos, load_videos

    cfg = get_preset(preset)
    videos = load_videos(path)
    report = check_videos(videos, cfg.model.num_frames, cfg.data.frame_stride, cfg.data.target_fps,
                          progress=not quiet)
    typer.echo(report.summary())
    if videos.class_names:
        typer.echo(f"{len(videos.class_names)} classes: {', '.join(videos.class_names)}")
    if report.problems:
        raise typer.Exit(1)


@app.command()
def presets(name: Annotated[str | None, typer.Argument(help="Show one preset in full.")] = None) -> None:
    """List the named configs, or print one as YAML (a starting point for --config)."""
    import yaml

    from .config import PRESETS
    from .config import preset as get_preset
    from .models import train_flops_per_clip

    if name:
        typer.echo(yaml.safe_dump(get_preset(name).to_dict(), sort_keys=False))
        return
    for key in PRESETS:
        cfg = get_preset(key)
        m = cfg.model
        typer.echo(f"{key:10s} {m.embed_dim}-d × {m.depth} blocks, {m.num_frames} frames at {m.img_size} px, "
                   f"tubelets {m.tubelet_size}×{m.patch_size}×{m.patch_size}, mask {cfg.mask.type} "
                   f"{cfg.mask.ratio:.2f}, {train_flops_per_clip(m, cfg.mask.ratio) / 1e9:.2f} GFLOP/clip/step")


def main() -> None:
    try:
        app()
    except PicoJepaError as e:
        typer.secho(f"error: {e}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.RED, err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
