"""``picojepa viz``: mask views, t-SNE maps and pretraining curves as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import DataError

viz_app = typer.Typer(
    no_args_is_help=True,
    help="Pictures: mask views, t-SNE maps of embeddings, pretraining curves (PNG; .pdf/.svg also work).",
)

Out = Annotated[Path, typer.Option("--out", "-o", help="Image file to write (.png; .pdf or .svg also work).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@viz_app.command("masks")
def masks(
    video: Annotated[Path, typer.Argument(help="Any video file (any size or length; its centred clip is shown).")],
    out: Out,
    preset: Annotated[str, typer.Option("--preset", "-p", help="Config giving frame size, tubelets and mask ratio: "
                                        "pico, pico-112 or tiny.")] = "pico",
    run: Annotated[Path | None, typer.Option(
        "--run", help="Take the config from this pretraining run folder instead of --preset.")] = None,
    mask: Annotated[str | None, typer.Option(
        "--mask", "-m", help="Mask type: tube, multiblock or future (default: the config's).")] = None,
    future_slices: Annotated[int | None, typer.Option(
        "--future-slices", help="Last time slices predicted whole (default: the config's; 1 for --mask future).",
        min=0)] = None,
    seed: Annotated[int, typer.Option(help="Seed of the drawn mask.")] = 0,
) -> None:
    """Show the centred clip of VIDEO with the masked tubelets shaded, one row per time slice.

    The encoder sees only the context; the predictor predicts the representation of each shaded tubelet.

    Example: picojepa viz masks clip.mp4 --out masks.png --mask tube
    """
    from ..viz.masks import plot_masks

    cfg = _config(preset, run)
    path = plot_masks(video, out, cfg, mask_type=mask, seed=seed, future_slices=future_slices)
    typer.echo(f"wrote {path}")


@viz_app.command("tsne")
def tsne(
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled videos: class folders or a manifest with "
                                       "labels.")],
    out: Out,
    models: Annotated[list[Path] | None, typer.Option(
        "--models", "-m", help="Model folder: a pretraining run or a classifier folder. Repeat it, or list "
        "several folders after one --models.")] = None,
    more_models: Annotated[list[Path] | None, typer.Argument(
        help="More model folders (so that --models A B C works).", metavar="MODEL_DIR",
        show_default=False)] = None,
    videos_per_class: Annotated[int, typer.Option(
        "--videos-per-class", "-n", help="Videos drawn at random from each class.")] = 20,
    num_clips: Annotated[int, typer.Option(help="Evenly spaced clips per video, embeddings averaged.")] = 2,
    seed: Annotated[int, typer.Option(help="Seed of the video sample and of t-SNE.")] = 0,
    device: Annotated[str, typer.Option(help="auto (CUDA if available), cpu or cuda.")] = "auto",
    cache_dir: Annotated[Path | None, typer.Option(
        "--cache-dir", help="Clip cache folder (default ~/.cache/picojepa/clips or $PICOJEPA_CACHE).")] = None,
    quiet: Quiet = False,
) -> None:
    """t-SNE map of each model's clip embeddings, one panel per model, coloured by class.

    Panel titles give the silhouette of the classes in the embedding space (cosine; higher = better separated).

    Example: picojepa viz tsne --models runs/general runs/partial_1 --data videos/ --out tsne.png
    """
    from ..utils import resolve_device
    from ..viz.tsne import embed_videos, plot_tsne

    dirs = [*(models or []), *(more_models or [])]
    if not dirs:
        raise DataError("give at least one model folder: --models RUN_DIR [RUN_DIR ...]")
    if videos_per_class < 1 or num_clips < 1:
        raise DataError("--videos-per-class and --num-clips must be ≥ 1")
    dev = str(resolve_device(device))
    panels, class_names = [], []
    for title, model_dir in zip(_titles(dirs), dirs, strict=True):
        X, y, class_names = embed_videos(model_dir, data, videos_per_class, seed, progress=not quiet,
                                         cache_dir=cache_dir, num_clips=num_clips, device=dev)
        panels.append((title, X, y))
    scores = plot_tsne(panels, class_names, out, seed=seed, progress=not quiet)
    for title, score in scores.items():
        typer.echo(f"{title}: silhouette {score:+.3f} (embedding space, cosine)")
    typer.echo(f"wrote {out}")


@viz_app.command("curves")
def curves(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="One or more pretraining run folders (with metrics.jsonl).", metavar="RUN_DIR")],
    out: Out,
    labels: Annotated[list[str] | None, typer.Option(
        "--label", "-l", help="Legend name per run, in order (repeatable; default: folder names).")] = None,
) -> None:
    """Pretraining loss, schedules and collapse diagnostics against step, several runs overlaid.

    Panels: loss, learning rate, weight decay, EMA momentum, target feature std, effective rank.

    Folders named general or partial_<k> get their fixed report colours.

    Example: picojepa viz curves exp/encoders/general exp/encoders/partial_1 --out curves.png
    """
    from ..viz.curves import plot_curves

    path = plot_curves(run_dirs, out, labels=labels or None)
    typer.echo(f"wrote {path}")


def _config(preset: str, run: Path | None):
    if run is not None:
        from ..train.checkpoint import config_from_run

        return config_from_run(run)
    from ..config import preset as get_preset

    return get_preset(preset)


def _titles(dirs: list[Path]) -> list[str]:
    from ..viz.curves import default_labels
    from ..viz.style import label_name

    titles = [label_name(name) for name in default_labels(dirs)]
    # The same folder given twice still gets two panels, told apart by their position.
    return [f"{t} (#{k + 1})" if titles.count(t) > 1 else t for k, t in enumerate(titles)]
