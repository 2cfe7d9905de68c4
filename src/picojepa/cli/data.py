"""``picojepa data check``, ``picojepa data kinetics`` and ``picojepa synth``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, data_app
from .common import Preset, Quiet


@data_app.command("check")
def data_check(
    path: Annotated[Path, typer.Argument(help="Class folders, a folder, a .csv manifest or a .txt list.")],
    preset: Preset = "pico",
    quiet: Quiet = False,
) -> None:
    """Open every video and report each unusable one with its reason, and bad manifest rows with their
    line numbers. Exits with status 1 when anything is unusable."""
    from ..config import preset as get_preset
    from ..data import check_videos, load_videos

    cfg = get_preset(preset)
    videos = load_videos(path)
    report = check_videos(videos, cfg.model.num_frames, cfg.data.frame_stride, cfg.data.target_fps,
                          progress=not quiet)
    typer.echo(report.summary())
    if videos.class_names:
        typer.echo(f"{len(videos.class_names)} classes: {', '.join(videos.class_names)}")
    if report.problems:
        raise typer.Exit(1)


@data_app.command("kinetics")
def data_kinetics(
    root: Annotated[Path, typer.Argument(help="Kinetics root: <root>/<split>/<label>/<id>_<start>_<end>.mp4")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the manifests.")],
    annotations: Annotated[Path | None, typer.Option(
        help="Annotation CSV (label,youtube_id,time_start,time_end,split); default: scan the folders.")] = None,
    split: Annotated[str, typer.Option(help="Kinetics split to use.")] = "train",
    pretrain_classes: Annotated[int, typer.Option(help="First C classes (alphabetical) for pretraining.")] = 10,
    labelled_classes: Annotated[int, typer.Option(help="First M of them for the labelled set.")] = 4,
    classes: Annotated[str | None, typer.Option(help="Explicit labelled classes, comma-separated.")] = None,
    check_decodable: Annotated[bool, typer.Option(help="Also open every file with PyAV.")] = False,
) -> None:
    """Build the published subsets from Kinetics-400/600/700 on disk: OUT/pretrain.csv (unlabelled, first
    C classes) and OUT/labelled.csv (video_name,label for M classes), reporting missing/unreadable files."""
    from ..datasets.kinetics import build_kinetics_subsets

    report = build_kinetics_subsets(root, out, annotations=annotations, split=split,
                                    num_pretrain_classes=pretrain_classes, num_labelled_classes=labelled_classes,
                                    labelled_classes=classes.split(",") if classes else None,
                                    check_decodable=check_decodable)
    typer.echo(report.summary())


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (folder per class).")],
    classes: Annotated[str, typer.Option(help="Number of classes (first K) or comma-separated class names.")] = "10",
    videos_per_class: Annotated[int, typer.Option("--videos-per-class", "-n")] = 40,
    size: Annotated[int, typer.Option(help="Frame side in pixels (even).")] = 96,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 32,
    fps: Annotated[int, typer.Option(help="Frames per second written in the file.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed: the data set is reproducible bit for bit from it.")] = 0,
    difficulty: Annotated[str, typer.Option(help="easy, medium or hard (nuisance strength).")] = "medium",
    overwrite: Annotated[bool, typer.Option(help="Replace a data set made with other settings.")] = False,
    domains: Annotated[str | None, typer.Option(
        help="Comma-separated difficulties (e.g. easy,medium,hard): one sub-set per difficulty, each with "
             "every class, in OUT/<difficulty>/, and OUT/videos.txt listing them all with labels; --difficulty "
             "is then unused.")] = None,
    quiet: Quiet = False,
) -> None:
    """Generate the synthetic action benchmark: real mp4 files whose classes differ by motion only.

    Writes OUT/<class>/<video>.mp4, OUT/classes.txt and OUT/meta.json; an existing set with the same
    settings is reused as is. With --domains, a set made of distinct families of scenes (see the option)."""
    from ..datasets.synth import CLASS_NAMES, generate_dataset, generate_domains, resolve_classes

    chosen = int(classes) if classes.isdigit() else resolve_classes(classes)
    if domains:
        listing = generate_domains(out, [d.strip() for d in domains.split(",")], classes=chosen,
                                   videos_per_class=videos_per_class, size=size, frames=frames, fps=fps, seed=seed,
                                   progress=not quiet, overwrite=overwrite)
        typer.echo(f"synthetic benchmark with domains in {out}: labelled list {listing}; {out} as a pool")
        return
    path = generate_dataset(out, classes=chosen, videos_per_class=videos_per_class, size=size, frames=frames,
                            fps=fps, seed=seed, difficulty=difficulty, progress=not quiet, overwrite=overwrite)
    typer.echo(f"synthetic benchmark in {path} (classes available: {', '.join(CLASS_NAMES)})")
