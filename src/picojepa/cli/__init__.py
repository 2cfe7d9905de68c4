"""Command line: ``picojepa <command> --help`` describes each command."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import PicoJepaError

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="pico-JEPA: ultra-light V-JEPA video self-supervised learning, and ensembles of small models.",
)
data_app = typer.Typer(no_args_is_help=True, help="Inspect data and build manifests.")
app.add_typer(data_app, name="data")


HEAD_HELP = ("attentive (default; V-JEPA's frozen evaluation: a learned query cross-attends to all tokens), "
             "linear or mlp (on mean-pooled tokens).")
# picojepa.probe.classifier.PROBE_GRID in words (the CLI module does not import torch for --help; a test
# checks that the two agree).
PROBE_GRID_HELP = "heads at learning rates 3e-4 and 1e-3 × weight decays 0.05 and 0.5"
INITS_HELP = ("Heads per (learning rate, weight decay), each from its own initialisation; all are averaged. "
              "More lifts both encoders (a head's seed alone moves it by several points) at a linear cost.")


def _counts(text: str, option: str) -> tuple[int, ...]:
    """"5,10,25" → (5, 10, 25); a clear error for anything else."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise PicoJepaError(f"{option} takes comma-separated whole numbers such as 5,10,25, got {text!r}") from None


def _mount_viz() -> None:
    from .viz import viz_app

    app.add_typer(viz_app, name="viz", help="Pictures: mask views, t-SNE maps, training curves.")


_mount_viz()

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
    from ..config import load_config, set_field, validate

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
    trust_pickle_checkpoint: Annotated[bool, typer.Option(
        "--trust-pickle-checkpoint", help="With --resume: load an older version's checkpoint.pt, a pickle that "
                                          "can run code when loaded. Only for files you made or trust.")] = False,
    max_steps: Annotated[int | None, typer.Option(
        "--max-steps", help="Stop after this many steps in this call, leaving a checkpoint for --resume "
                            "(e.g. to fit a cluster's time limit).")] = None,
    eval_data: Annotated[Path | None, typer.Option(
        help="Labelled videos for the learning monitor: every --eval-every steps a small attentive probe and "
             "a k-NN classifier score the online and EMA encoders (step 0 = random init), logged to "
             "metrics.jsonl and plotted by 'viz curves'. Keep your test videos out of it.")] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between monitor readings (0: about five per run).",
                                            min=0)] = 0,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model (CUDA: faster).")] = False,
    decoder: Decoder = None,
    cache_dir: CacheDir = None,
    no_cache: NoCache = False,
    workers: Workers = None,
    max_bad_fraction: MaxBad = None,
    quiet: Quiet = False,
) -> None:
    """Pretrain a pico-JEPA encoder on a folder or list of videos (no labels needed).

    Writes OUT/encoder.safetensors (the EMA target encoder, or the context encoder when the targets
    are not an EMA copy), config.json, checkpoint.safetensors (for --resume; no pickle), metrics.jsonl
    and skipped.json (unusable videos with reasons). Under torchrun
    (torchrun --nproc-per-node K -m picojepa pretrain ...) the K processes train one encoder
    data-parallel: --batch-size is the global batch, split over the ranks; rank 0 writes the run folder.
    """
    from ..train import pretrain as run
    from ..train.distributed import env_rank

    cfg = build_config(
        preset, config, overrides, train__epochs=epochs, train__batch_size=batch_size, train__lr=lr,
        train__device=device, train__seed=seed, train__compile=compile or None, data__decoder=decoder,
        data__use_cache=False if no_cache else None, data__num_workers=workers,
        data__max_bad_fraction=max_bad_fraction,
    )
    if max_steps is not None and max_steps < 1:
        raise PicoJepaError("--max-steps must be at least 1")
    monitor = None
    if eval_data is not None and env_rank() == 0:  # under torchrun rank 0 alone runs the monitor
        from ..probe.monitor import build_monitor

        monitor = build_monitor(cfg, eval_data, eval_every, cache_dir=cache_dir, progress=not quiet)
    result = run(cfg, data, out, resume=resume, progress=not quiet, cache_dir=cache_dir, max_steps=max_steps,
                 monitor=monitor, trust_pickle=trust_pickle_checkpoint)
    if env_rank() != 0:
        return
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


@app.command()
def presets(name: Annotated[str | None, typer.Argument(help="Show one preset in full.")] = None) -> None:
    """List the named configs, or print one as YAML (a starting point for --config)."""
    import yaml

    from ..config import PRESETS
    from ..config import preset as get_preset
    from ..models import train_flops_per_clip

    if name:
        typer.echo(yaml.safe_dump(get_preset(name).to_dict(), sort_keys=False))
        return
    for key in PRESETS:
        cfg = get_preset(key)
        m = cfg.model
        typer.echo(f"{key:10s} {m.embed_dim}-d × {m.depth} blocks, {m.num_frames} frames at {m.img_size} px, "
                   f"tubelets {m.tubelet_size}×{m.patch_size}×{m.patch_size}, mask {cfg.mask.type} "
                   f"{cfg.mask.ratio:.2f}, {train_flops_per_clip(m, cfg.mask.ratio) / 1e9:.2f} GFLOP/clip/step")


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
    quiet: Quiet = False,
) -> None:
    """Generate the synthetic action benchmark: real mp4 files whose classes differ by motion only.

    Writes OUT/<class>/<video>.mp4, OUT/classes.txt and OUT/meta.json; an existing set with the same
    settings is reused as is."""
    from ..datasets.synth import CLASS_NAMES, generate_dataset, resolve_classes

    chosen = int(classes) if classes.isdigit() else resolve_classes(classes)
    path = generate_dataset(out, classes=chosen, videos_per_class=videos_per_class, size=size, frames=frames,
                            fps=fps, seed=seed, difficulty=difficulty, progress=not quiet, overwrite=overwrite)
    typer.echo(f"synthetic benchmark in {path} (classes available: {', '.join(CLASS_NAMES)})")


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
def probe(
    encoder: Annotated[Path, typer.Option("--encoder", "-e", help="Pretraining run folder.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled videos (class folders or manifest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Classifier folder to write.")],
    head: Annotated[str, typer.Option(help=HEAD_HELP)] = "attentive",
    epochs: Annotated[int, typer.Option(help="Head training epochs (the best on validation is kept).")] = 60,
    lr: Annotated[float | None, typer.Option(help=f"Train one head at this learning rate (weight decay 0.05) "
                                                  f"instead of the default: {PROBE_GRID_HELP}, averaged. "
                                                  "Fine-tuning: default 1e-3.")] = None,
    inits: Annotated[int, typer.Option(help=INITS_HELP)] = 1,
    finetune: Annotated[bool, typer.Option("--finetune", help="Also train a copy of the encoder.")] = False,
    num_clips: Annotated[int, typer.Option(help="Evenly spaced clips per video at evaluation.")] = 4,
    splits: Annotated[Path | None, typer.Option(help="Reuse a splits.json (default: a new seeded split).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    max_bad_fraction: MaxBad = None,
    baseline: Annotated[bool, typer.Option(help="Also train the same head on the encoder's random "
                                                "initialisation (same seed) and report the gain.")] = True,
    quiet: Quiet = False,
) -> None:
    """Train a classification head on a pretrained encoder: frozen features are computed once, the head
    trains on the training split and the epoch is chosen by validation accuracy; the same head on the
    random-init encoder gives the pretraining gain (paired bootstrap CI). Unreadable videos are skipped and
    listed. Writes OUT/classifier.safetensors, config.json, probe.json, report.md, splits.json, skipped.json."""
    from ..probe.classifier import PROBE_GRID, ProbeConfig
    from ..probe.run import run_probe

    cfg = ProbeConfig(head=head, epochs=epochs, lr=1e-3 if lr is None else lr, num_clips=num_clips,
                      finetune=finetune, seed=seed, grid=PROBE_GRID if lr is None and not finetune else (),
                      inits=inits)
    summary = run_probe(encoder, data, out, cfg, splits, device, cache_dir, progress=not quiet,
                        max_bad_fraction=max_bad_fraction, baseline=baseline)
    text = (f"classifier in {out}: validation accuracy {summary['val_accuracy']:.3f}, test accuracy "
            f"{summary['test_accuracy']:.3f} ({summary['test']} test videos, {summary['skipped']} skipped)")
    if "pretraining_gain" in summary:
        gain = summary["pretraining_gain"]
        text += (f"; random-init encoder {summary['random_init_test_accuracy']:.3f}, pretraining gain "
                 f"{100 * gain['mean']:+.1f} pp [95 % CI {100 * gain['ci95'][0]:+.1f}, {100 * gain['ci95'][1]:+.1f}]")
    typer.echo(text)


@app.command()
def experiment(
    data: Annotated[Path, typer.Option("--data", "-d", help="Labelled videos (class folders or manifest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Experiment folder (re-running reuses stages).")],
    pretrain_data: Annotated[Path | None, typer.Option(
        "--pretrain-data", help="Unlabelled pretraining pool (default: the training split).")] = None,
    preset: Preset = "pico-112",
    config: ConfigFile = None,
    overrides: Overrides = None,
    members: Annotated[int, typer.Option(help="Number of Partial models (shards).")] = 4,
    mode: Annotated[str, typer.Option(help="shared: one encoder for all (published protocol); independent: "
                                           "each Partial pretrains its own encoder on its shard.")] = "shared",
    heterogeneous: Annotated[bool, typer.Option(help="Members differ: seeds, head types, width/depth, mask "
                                                     "ratio (independent mode).")] = False,
    head: Annotated[str, typer.Option(help=HEAD_HELP)] = "attentive",
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    probe_epochs: Annotated[int, typer.Option(help="Head training epochs.")] = 60,
    probe_grid: Annotated[bool, typer.Option("--probe-grid/--single-head", help=(
        f"Each head is the mean of {PROBE_GRID_HELP}, each at its own epoch chosen on validation (default), or "
        "one head at learning rate 1e-3 and weight decay 0.05."))] = True,
    probe_inits: Annotated[int, typer.Option(help=INITS_HELP)] = 1,
    num_clips: Annotated[int, typer.Option(help="Evenly spaced clips per video at evaluation.")] = 4,
    bootstrap: Annotated[int, typer.Option(help="Paired bootstrap resamples for the CIs (≥ 2000).")] = 2000,
    low_shot: Annotated[str, typer.Option(help="Comma-separated labelled videos per class for a low-shot table "
                                               "of General vs random init, e.g. 5,10,25 (empty: none).")] = "",
    repeats: Annotated[int, typer.Option(help="Run the whole design this many times with seeds seed, seed+1, … "
                                              "(new splits, shards, inits) and report each gap's mean ± spread.",
                                         min=1)] = 1,
    allow_eval_in_pretrain: Annotated[bool, typer.Option(
        help="Let validation/test videos into the pretraining pool (off: they are removed).")] = False,
    seed: Annotated[int, typer.Option()] = 0,
    device: Device = "auto",
    cache_dir: CacheDir = None,
    backend: Annotated[str, typer.Option(help="local: every job here, one after another; ray: each encoder's "
                                              "pretraining and each member's head as a Ray task.")] = "local",
    ray_address: Annotated[str | None, typer.Option(
        "--ray-address", help="Ray cluster to join (auto, host:port or ray://host:port); default: start a local "
                              "Ray instance for this run and stop it afterwards.")] = None,
    gpus_per_member: Annotated[float | None, typer.Option(
        "--gpus-per-member", help="GPUs each Ray task reserves; fractions (0.25) share one GPU between members. "
                                  "Default: 1 when the cluster has GPUs, else 0.")] = None,
    cpus_per_member: Annotated[float | None, typer.Option(
        "--cpus-per-member", help="CPU cores each job reserves on Ray (default 1) and torch threads it uses "
                                  "(local default: all).")] = None,
    quiet: Quiet = False,
) -> None:
    """General vs N Partials vs their aggregations (vote, soft, weighted, stack), scored on a test split
    that nothing else ever sees. Writes report.md, report.json, predictions.csv, splits.json, figures/.

    Aggregations: vote = hard majority vote; soft = mean probability; weighted = soft vote with fitted
    weights; stack = logistic regression on the members' log-probabilities. Validation is cross-fitted:
    heads choose their epoch on one half, weights, stacker and the best single member are fitted on the
    other. Hard vote: each member votes for its top class; ties go to the larger summed probability among
    the tied classes, then to the lower class index. The report starts with the pretraining gain: the
    General against the same architecture at initialisation (same seed, head and splits)."""
    from ..experiment.backends import make_backend
    from ..experiment.run import ExperimentSettings, run_experiment
    from ..train.distributed import env_world_size

    if env_world_size() > 1:
        raise PicoJepaError("experiment does not run under torchrun (every rank would run all of it); spread its "
                            "members with --backend ray, and use torchrun for one pretraining run")
    extra = list(overrides or [])
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if batch_size is not None:
        extra.append(f"train.batch_size={batch_size}")
    settings = ExperimentSettings(
        data=str(data), pretrain_data=str(pretrain_data) if pretrain_data else None, preset=preset,
        config=str(config) if config else None, overrides=extra, members=members, mode=mode,
        heterogeneous=heterogeneous, seed=seed, device=device, head=head, probe_epochs=probe_epochs,
        probe_grid=probe_grid, probe_inits=probe_inits, num_clips=num_clips, bootstrap=bootstrap,
        allow_eval_in_pretrain=allow_eval_in_pretrain, low_shot=_counts(low_shot, "--low-shot"))
    with make_backend(backend, address=ray_address, cpus_per_member=cpus_per_member,
                      gpus_per_member=gpus_per_member, progress=not quiet) as jobs:
        if repeats > 1:
            from ..experiment.repeats import format_repeats, run_repeats

            summary = run_repeats(settings, out, repeats, cache_dir=cache_dir, progress=not quiet,
                                  quiet_tables=quiet, backend=jobs)
            typer.echo(format_repeats(summary))
            typer.echo(f"summary: {out / 'repeats.md'}; each run in {out}/seed_<seed>/")
            return
        result = run_experiment(settings, out, cache_dir=cache_dir, progress=not quiet, backend=jobs)
    typer.echo(f"report: {result.out / 'report.md'} ({result.seconds:.0f} s)")


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
        "fitted on its validation split); default vote, or the exported one with --runtime onnx."))] = None,
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
                                                "(the last two need an experiment folder).")] = "vote",
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


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for data, runs and reports.")] = Path(
        "picojepa-demo"),
    quick: Annotated[bool, typer.Option("--quick", help="Small data and model (≈2 minutes on 2 CPU cores).")] = False,
    device: Device = "auto",
    quiet: Quiet = False,
) -> None:
    """The whole job on the embedded synthetic benchmark: a 10-class unlabelled pool and a 4-class labelled
    set; General vs 4 Partials vs every aggregation, in the shared and the independent protocol; tables
    printed, reports and figures written under OUT."""
    from ..experiment.demo import run_demo

    run_demo(out, quick=quick, device=device, progress=not quiet)


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
