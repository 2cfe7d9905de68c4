"""``picojepa pretrain`` and ``picojepa presets``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import PicoJepaError
from .app import app
from .common import (
    BatchSize,
    CacheDir,
    ClipSteps,
    ConfigFile,
    Decoder,
    Device,
    Epochs,
    MaxBad,
    NoCache,
    Overrides,
    Preset,
    Quiet,
    Seed,
    Workers,
    build_config,
    one_length,
)


@app.command()
def pretrain(
    data: Annotated[Path, typer.Option("--data", "-d", help="Videos: class folders, folder, .csv or .txt list.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write.")],
    preset: Preset = "pico",
    config: ConfigFile = None,
    overrides: Overrides = None,
    epochs: Epochs = None,
    clip_steps: ClipSteps = None,
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
    keep_best: Annotated[bool, typer.Option(
        "--keep-best", help="With --eval-data: make the monitor's best reading (its attentive probe of the EMA "
                            "encoder) the run's encoder.safetensors; the final one is kept as "
                            "encoder-last.safetensors. Without it the best is still saved, as "
                            "encoder-best.safetensors. Gains fall past 80k clip-steps (docs/scaling.md).")] = False,
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
    and skipped.json (unusable videos with reasons); with --eval-data also encoder-best.safetensors. Under torchrun
    (torchrun --nproc-per-node K -m picojepa pretrain ...) the K processes train one encoder
    data-parallel: --batch-size is the global batch, split over the ranks; rank 0 writes the run folder.
    """
    from ..train import pretrain as run
    from ..train.distributed import env_rank

    one_length(epochs, clip_steps)
    cfg = build_config(
        preset, config, overrides, train__epochs=epochs, train__clip_steps=clip_steps, train__batch_size=batch_size,
        train__lr=lr,
        train__device=device, train__seed=seed, train__compile=compile or None, data__decoder=decoder,
        data__use_cache=False if no_cache else None, data__num_workers=workers,
        data__max_bad_fraction=max_bad_fraction,
    )
    if max_steps is not None and max_steps < 1:
        raise PicoJepaError("--max-steps must be at least 1")
    if keep_best and eval_data is None:
        raise PicoJepaError("--keep-best needs --eval-data: the best reading is the learning monitor's")
    monitor = None
    if eval_data is not None and env_rank() == 0:  # under torchrun rank 0 alone runs the monitor
        from ..probe.monitor import build_monitor

        monitor = build_monitor(cfg, eval_data, eval_every, cache_dir=cache_dir, progress=not quiet)
    result = run(cfg, data, out, resume=resume, progress=not quiet, cache_dir=cache_dir, max_steps=max_steps,
                 monitor=monitor, trust_pickle=trust_pickle_checkpoint, keep_best=keep_best)
    if env_rank() != 0:
        return
    typer.echo(f"pretrained {result.steps} steps on {result.videos} videos in {result.seconds:.1f} s "
               f"(final loss {result.final_loss:.4f}); skipped {len(result.skipped)}; run folder: {result.out}")
    if keep_best:
        from ..train.checkpoint import read_run_config

        best = read_run_config(result.out).get("best_reading")
        if best:
            kept = "is now encoder.safetensors" if best["kept_as_encoder"] else "is the final encoder"
            typer.echo(f"best monitor reading: step {best['step']} (probe EMA {best['probe_ema']:.0%}); it {kept}")


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
        mask = (f"last {cfg.mask.future_slices} slice(s)" if cfg.mask.type == "future"
                else f"{cfg.mask.ratio:.2f}")
        typer.echo(f"{key:10s} {m.embed_dim}-d × {m.depth} blocks, {m.num_frames} frames at {m.img_size} px, "
                   f"tubelets {m.tubelet_size}×{m.patch_size}×{m.patch_size}, mask {cfg.mask.type} "
                   f"{mask}, {train_flops_per_clip(m, cfg.mask) / 1e9:.2f} GFLOP/clip/step")
