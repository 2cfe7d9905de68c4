"""``picojepa predict`` and ``picojepa export``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PicoJepaError
from .app import app
from .common import Device, Quiet


@app.command(help=(
    "Classify videos with one model or an ensemble: each model is loaded once and every video decoded once. "
    "The CSV has one row per (video, model) and one per video for the ensemble, with probabilities. Unusable "
    "videos are listed in OUT.skipped.json, never guessed. Hard vote: each member votes for its top class; ties "
    "go to the larger summed probability among the tied classes, then to the lower class index. With --stream, "
    "one long video is decoded once and every window of --window-seconds, every --hop-seconds, is predicted "
    "(OUT: .csv or .jsonl, with times). --runtime onnx runs a folder written by picojepa export."))
def predict(
    models: Annotated[list[Path], typer.Option("--models", "-m", help="Classifier folders or experiment "
                                               "folders (--runtime onnx: an export folder); repeat the option, or "
                                               "list several after one --models. With several, every General "
                                               "and Partial is a model and the Partials vote together.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV to write (--stream: .csv or .jsonl).")],
    videos: Annotated[Path | None, typer.Option("--videos", "-v", help="Videos: folder, class folders or "
                                                "manifest.")] = None,
    stream: Annotated[Path | None, typer.Option("--stream", help="One (long) video to predict window by "
                                                "window, decoding it once.")] = None,
    window_seconds: Annotated[float, typer.Option("--window-seconds", help="--stream: window length.")] = 4.0,
    hop_seconds: Annotated[float | None, typer.Option("--hop-seconds", help="--stream: time between window "
                                                      "starts (default: the window length).")] = None,
    aggregate: Annotated[str | None, typer.Option(help=(
        "vote, soft, weighted or stack (the last two need one experiment folder, alone, whose weights were "
        "fitted on its validation split), or route (one --mode domains experiment folder; --videos with the "
        "torch runtime only); default vote, or the exported one with --runtime onnx."))] = None,
    runtime: Annotated[str, typer.Option(help="torch, or onnx (ONNX Runtime on an export folder).")] = "torch",
    int8: Annotated[bool, typer.Option("--int8", help="--runtime onnx: run the int8 graphs.")] = False,
    batch_size: Annotated[int, typer.Option(help="Videos per batch.")] = 8,
    workers: Annotated[int, typer.Option(help="Decode worker processes (decoding overlaps compute).")] = 2,
    device: Device = "auto",
    quiet: Quiet = False,
    more_models: Annotated[list[Path] | None, typer.Argument(
        help="More model folders (so that --models A B C works).", metavar="MODEL_DIR", show_default=False)] = None,
) -> None:
    from ..experiment.predict import predict as run

    model_paths = [*models, *(more_models or [])]
    if (videos is None) == (stream is None):
        raise PicoJepaError("give either --videos (a set of videos) or --stream (one long video)")
    if stream is not None:
        return _predict_stream(model_paths, stream, out, window_seconds, hop_seconds or window_seconds, aggregate,
                               runtime, int8, device, quiet)
    if runtime == "torch" and not int8:
        summary = run(model_paths, videos, out, aggregate or "vote", device, batch_size, workers, progress=not quiet)
    else:
        from ..deploy.batch import predict_videos
        from ..deploy.scoring import make_scorer

        scorer = make_scorer(runtime, model_paths, aggregate, device, int8)
        summary = predict_videos(scorer, videos, out, batch_size, workers, progress=not quiet)
    rate = summary.videos / summary.seconds if summary.seconds > 0 else float("nan")
    typer.echo(f"{summary.videos} videos → {summary.out} in {summary.seconds:.1f} s ({rate:.1f} videos/s); "
               f"{len(summary.skipped)} skipped")
    for problem in summary.skipped:
        typer.echo(f"  ✗ {problem}")
    for name, acc in summary.accuracy.items():
        typer.echo(f"  accuracy {name}: {acc:.3f}")


def _predict_stream(model_paths: list[Path], video: Path, out: Path, window: float, hop: float,
                    aggregate: str | None, runtime: str, int8: bool, device: str, quiet: bool) -> None:
    import time

    from ..deploy.scoring import make_scorer
    from ..deploy.stream import stream_predict, write_stream

    scorer = make_scorer(runtime, model_paths, aggregate, device, int8)
    t0 = time.perf_counter()
    count = write_stream(out, scorer, stream_predict(scorer, video, window, hop, progress=not quiet))
    typer.echo(f"{count} windows of {window:g} s every {hop:g} s → {out} in {time.perf_counter() - t0:.1f} s")


@app.command(help=(
    "Export models and whole ensembles to ONNX: one graph per model (normalised clips → class probabilities) "
    "and one for the ensemble (every member plus the aggregation, fitted weights or stacker and the vote tie rule "
    "included), checked against torch, with manifest.json (classes, input size, frames, sampling, "
    "normalisation, input and output names). Opset 17; input 'clips' float32 (videos, clips per video, 3, "
    "frames, size, size); outputs 'probabilities' (videos, classes), and for the ensemble also 'prediction' "
    "(videos,) and 'member_probabilities' (members, videos, classes)."))
def export(
    models: Annotated[list[Path], typer.Option("--models", "-m", help="An experiment folder or classifier "
                                               "folders; repeat the option, or list several after one --models.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to write.")],
    fmt: Annotated[str, typer.Option("--format", help="onnx (the only format so far).")] = "onnx",
    int8: Annotated[bool, typer.Option("--int8", help="Also write int8 graphs (ONNX Runtime dynamic "
                                                      "quantisation).")] = False,
    members: Annotated[str, typer.Option(help="all (the General model and the ensemble members) or a "
                                              "comma-separated list of model names.")] = "all",
    aggregate: Annotated[str, typer.Option(help="The ensemble graph's aggregation: vote, soft, weighted or stack "
                                                "(the last two need an experiment folder); route is not exported "
                                                "yet (serve it with predict).")] = "vote",
    quiet: Quiet = False,
    more_models: Annotated[list[Path] | None, typer.Argument(
        help="More model folders (so that --models A B C works).", metavar="MODEL_DIR", show_default=False)] = None,
) -> None:
    from ..deploy.export import export_onnx

    summary = export_onnx([*models, *(more_models or [])], out, aggregate, members, int8, fmt, progress=not quiet)
    typer.echo(f"{len(summary.files)} graphs → {summary.out} in {summary.seconds:.1f} s "
               f"(largest |torch - ONNX Runtime| {summary.max_difference:.1e}; ensemble: {summary.ensemble or 'none'})")
    for file, size in summary.files.items():
        typer.echo(f"  {file}  {size / 1e6:.2f} MB")
