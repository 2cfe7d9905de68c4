"""``picojepa probe``, ``picojepa experiment`` and ``picojepa demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PicoJepaError
from .app import app
from .common import (
    HEAD_HELP,
    INITS_HELP,
    PROBE_GRID_HELP,
    BatchSize,
    CacheDir,
    ClipSteps,
    ConfigFile,
    Device,
    Epochs,
    MaxBad,
    Overrides,
    Preset,
    Quiet,
    counts,
    one_length,
    shares,
)


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
                                           "each Partial pretrains its own encoder on its shard; deep: each "
                                           "Partial pretrains its own encoder on the whole pool with its own "
                                           "seed, and its head trains on every training label; "
                                           "compute-matched: deep, and General pretrains N× longer (N = "
                                           "--members) so its pretraining compute equals the ensemble's; "
                                           "domains: the pool is clustered (k-means on the random-init "
                                           "encoder's clip features, never labels) into N domains, each "
                                           "Partial pretrains on one and trains its head on every label, and "
                                           "the route aggregation mixes them by distance to the domains."
                                      )] = "shared",
    heterogeneous: Annotated[bool, typer.Option(help="Members differ: seeds and head types, and in every mode "
                                                     "but shared also width/depth and mask ratio.")] = False,
    head: Annotated[str, typer.Option(help=HEAD_HELP)] = "attentive",
    epochs: Epochs = None,
    clip_steps: ClipSteps = None,
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
    folds: Annotated[int, typer.Option(help="For small sets: cut the labelled videos into this many folds and run "
                                            "once per fold, testing each fold once (train/val from the others in "
                                            "the --fractions ratio); the report pools every video's test "
                                            "prediction. 1: one split.", min=1)] = 1,
    allow_eval_in_pretrain: Annotated[bool, typer.Option(
        help="Let validation/test videos into the pretraining pool (off: they are removed).")] = False,
    fractions: Annotated[str, typer.Option(
        help="Train, validation and test shares of the labelled videos, stratified by class (with --folds "
             "the test split is the fold, and the rest is split in the train:validation ratio).")] = "0.6,0.2,0.2",
    group_by: Annotated[str | None, typer.Option(
        "--group-by", help="Regular expression naming each video's group in its path (its first capture group, "
                           r"else the match), e.g. '_g(\d+)_' for UCF101 subjects: no group is ever on both sides "
                           "of a split, and the pool loses held-out groups' videos too.")] = None,
    allow_small_fits: Annotated[bool, typer.Option(
        "--allow-small-fits", help="Fit head epochs, weights, stacker and the best single member even when a "
                                   "validation half has fewer than 2 videos of some class; such results are "
                                   "marked ⚠ in every table and chart (off: they are not fitted, and the report "
                                   "says why).")] = False,
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
    """General vs N Partials vs their aggregations (vote, soft, weighted, stack; route in --mode domains),
    scored on a test split that nothing else ever sees. Writes report.md, report.json, predictions.csv,
    splits.json, figures/ (and domains.json in --mode domains).

    Aggregations: vote = hard majority vote; soft = mean probability; weighted = soft vote with fitted
    weights; stack = logistic regression on the members' log-probabilities; route = each test video's
    mixture of the domain members, weighted softmax(-d²/τ) by its distance to each domain. Validation is
    cross-fitted: heads choose their epoch on one half, weights, stacker and the best single member are
    fitted on the other. Hard vote: each member votes for its top class; ties go to the larger summed probability among
    the tied classes, then to the lower class index. The report starts with the pretraining gain: the
    General against the same architecture at initialisation (same seed, head and splits)."""
    from ..experiment.backends import make_backend
    from ..experiment.run import ExperimentSettings, run_experiment
    from ..train.distributed import env_world_size

    if env_world_size() > 1:
        raise PicoJepaError("experiment does not run under torchrun (every rank would run all of it); spread its "
                            "members with --backend ray, and use torchrun for one pretraining run")
    one_length(epochs, clip_steps)
    extra = list(overrides or [])
    if epochs is not None:
        extra.append(f"train.epochs={epochs}")
    if clip_steps is not None:  # every encoder's own budget (each Partial's too, on its shard in independent mode)
        extra.append(f"train.clip_steps={clip_steps}")
    if batch_size is not None:
        extra.append(f"train.batch_size={batch_size}")
    settings = ExperimentSettings(
        data=str(data), pretrain_data=str(pretrain_data) if pretrain_data else None, preset=preset,
        config=str(config) if config else None, overrides=extra, members=members, mode=mode,
        heterogeneous=heterogeneous, seed=seed, device=device, head=head, probe_epochs=probe_epochs,
        probe_grid=probe_grid, probe_inits=probe_inits, num_clips=num_clips, bootstrap=bootstrap,
        allow_eval_in_pretrain=allow_eval_in_pretrain, low_shot=counts(low_shot, "--low-shot"),
        fractions=shares(fractions, "--fractions", 3), group_by=group_by, allow_small_fits=allow_small_fits)
    with make_backend(backend, address=ray_address, cpus_per_member=cpus_per_member,
                      gpus_per_member=gpus_per_member, progress=not quiet) as jobs:
        if folds > 1 and repeats > 1:
            raise PicoJepaError("--folds and --repeats are two designs; choose one")
        if folds > 1:
            from ..experiment.folds import run_folds

            run_folds(settings, out, folds, cache_dir=cache_dir, progress=not quiet, quiet_tables=quiet,
                      backend=jobs)
            typer.echo((out / "folds.md").read_text())
            typer.echo(f"pooled report: {out / 'folds.md'}; each fold in {out}/fold_<k>/")
            return
        if repeats > 1:
            from ..experiment.repeats import format_repeats, run_repeats

            summary = run_repeats(settings, out, repeats, cache_dir=cache_dir, progress=not quiet,
                                  quiet_tables=quiet, backend=jobs)
            typer.echo(format_repeats(summary))
            typer.echo(f"summary: {out / 'repeats.md'}; each run in {out}/seed_<seed>/")
            return
        result = run_experiment(settings, out, cache_dir=cache_dir, progress=not quiet, backend=jobs)
    typer.echo(f"report: {result.out / 'report.md'} ({result.seconds:.0f} s)")


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
