"""JEPA pretraining loop: context encoder + predictor trained, target encoder follows by EMA."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ..config import BATCH_TARGET_NORMS, Config
from ..data.dataset import TrainBatch, train_loader
from ..data.device_bank import DeviceClipBank, bank_bytes, fits_on_device
from ..data.prepare import PreparedData, prepare_videos, skipped_records
from ..data.sources import VideoSet, load_videos
from ..data.transforms import random_resized_crop_params, train_transform
from ..errors import PicoJepaError
from ..masks import MaskSampler
from ..models import JEPA, VideoViT, train_flops_per_clip
from ..models.jepa import StepOutput
from ..perf import peak_flops
from ..progress import console, info, make_progress, warn
from ..utils import write_json
from . import checkpoint as ckpt
from . import distributed
from .best import BestReading, keep_best_as_encoder
from .diagnostics import effective_rank, feature_std
from .schedules import capped_momenta, cosine_increase, linear, warmup_cosine


@dataclass
class PretrainResult:
    out: Path
    steps: int
    clips_seen: int  # clip-steps: the compute measure used to compare General and ensembles
    final_loss: float
    seconds: float
    videos: int
    skipped: list[dict[str, Any]] = field(default_factory=list)


# Past this budget the default recipe's gain over random init was measured to fall on the demo's task (two seeds,
# rates 0.3 and 0.5 of stochastic depth; docs/scaling.md), so a longer run without a learning monitor is warned.
LONG_RUN_CLIP_STEPS = 80_000

# Train settings that add or freeze weights, with their defaults (what a checkpoint from before them ran with).
WEIGHT_LAYOUT_SETTINGS = {"freeze_patch_embed": False, "reg_projector": 0, "clip_reg_projector": 0,
                          "global_weight": 0.0}


def weight_layout_changes(saved_train: dict[str, Any], cfg: Config) -> list[str]:
    """Those settings on which a checkpoint's run and ``cfg`` differ in the weights they make."""
    def layout(train: dict[str, Any]) -> dict[str, Any]:
        values = {k: train.get(k, default) for k, default in WEIGHT_LAYOUT_SETTINGS.items()}
        values["global_weight"] = values["global_weight"] > 0  # its value adds no weights; being on does
        return values

    now, saved = layout(cfg.to_dict()["train"]), layout(saved_train)
    return [f"train.{k}" for k in now if now[k] != saved[k]]


def build_optimizer(model: JEPA, cfg: Config, device: torch.device, fused: bool | None = None) -> torch.optim.Optimizer:
    """AdamW; weight decay only on ≥2-D weights (matrices, conv kernels), never on norms and biases."""
    heads = [h for h in (model.reg_projector, model.clip_projector, model.global_head) if h is not None]
    modules = [model.encoder, model.predictor, *heads]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.train.weight_decay, "apply_wd": True},
        {"params": no_decay, "weight_decay": 0.0, "apply_wd": False},
    ]
    fused = device.type == "cuda" if fused is None else fused
    return torch.optim.AdamW(groups, lr=cfg.train.lr, betas=(0.9, 0.999), fused=fused or None,
                             foreach=None if fused else True)


class Schedules:
    """LR, weight decay and EMA momentum per step, laid out over ``schedule_stretch`` × the run's steps,
    with the momentum capped so the EMA encoder ends with ≤ ``ema_max_init_fraction`` of its init."""

    def __init__(self, cfg: Config, total_steps: int) -> None:
        self.cfg, self.total = cfg, total_steps
        self.span = max(1, round(cfg.train.schedule_stretch * total_steps))
        self.warmup = round(cfg.train.warmup_fraction * total_steps)
        t = cfg.train
        uncapped = [linear(s, self.span, t.ema_start, t.ema_end) for s in range(total_steps)]
        self.momenta = capped_momenta(uncapped, t.ema_max_init_fraction)

    def lr(self, step: int) -> float:
        t = self.cfg.train
        return warmup_cosine(step, self.span, t.lr, t.min_lr, self.warmup)

    def weight_decay(self, step: int) -> float:
        t = self.cfg.train
        return cosine_increase(step, self.span, t.weight_decay, t.final_weight_decay)

    def reg_weight(self, step: int) -> float:
        t = self.cfg.train
        if t.reg_weight_final < 0:
            return t.reg_weight
        return cosine_increase(step, self.span, t.reg_weight, t.reg_weight_final)

    def momentum(self, step: int) -> float:
        return self.momenta[min(step, len(self.momenta) - 1)] if self.momenta else self.cfg.train.ema_start

    def init_fraction(self) -> float:
        """Share of the EMA encoder's initial weights left after the whole run."""
        return math.prod(self.momenta)


def data_signature(prepared: PreparedData, cfg: Config) -> str:
    h = hashlib.sha1()
    for item in prepared.videos.items:
        h.update(str(item.path.resolve()).encode())
    h.update(json.dumps(cfg.to_dict()["data"], sort_keys=True, default=str).encode())
    return h.hexdigest()


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Owns the model, optimizer and schedules; ``step`` runs one JEPA update on a batch.

    The keyword switches exist so benchmarks can turn each optimisation off in turn; their defaults
    are the fast choices for the device.
    """

    def __init__(self, cfg: Config, device: torch.device, total_steps: int, *, amp: bool | None = None,
                 fused_optimizer: bool | None = None, foreach_ema: bool = True, context_only: bool = True,
                 compile_mode: str | None = None, dist: distributed.DistContext | None = None) -> None:
        self.cfg, self.device, self.total_steps = cfg, device, total_steps
        torch.manual_seed(cfg.train.seed)
        t = cfg.train
        self.model = JEPA(cfg.model, t.loss, t.regularizer, t.reg_weight, t.sigreg_directions, t.reg_on,
                          t.target_norm, t.vicreg_std, t.targets, t.reg_scale_free, t.pixel_weight,
                          vicreg_cov_weight=t.vicreg_cov_weight, reg_projector=t.reg_projector,
                          target_layers=t.target_layers, clip_reg_weight=t.clip_reg_weight,
                          clip_reg_std=t.clip_reg_std, clip_reg_projector=t.clip_reg_projector,
                          global_weight=t.global_weight).to(device)
        # The encoder's initial weights, for the pull towards them (train.init_anchor): rebuilt from the seed on
        # resume, since a run always starts from the same initialisation.
        self.anchor = ([p for p in self.model.encoder.parameters()],
                       [p.detach().clone() for p in self.model.encoder.parameters()]) if t.init_anchor > 0 else None
        if t.teacher_run:
            load_teacher(self.model, t.teacher_run)
        if t.freeze_patch_embed:  # before the optimiser is built, so it never holds them
            self.model.encoder.patch_embed.requires_grad_(False)
        self.optimizer = build_optimizer(self.model, cfg, device, fused_optimizer)
        self.schedules = Schedules(cfg, total_steps)
        self.masks = MaskSampler(self.model.encoder.grid, cfg.mask)
        amp = device.type == "cuda" if amp is None else amp  # bf16 autocast is far slower on CPU
        self.amp_dtype = torch.bfloat16 if amp else None
        self.foreach_ema, self.context_only = foreach_ema, context_only
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.clips_base, self.local_clips = 0, 0  # clips trained on: before this process, and by this rank
        if cfg.train.compile or compile_mode:
            for module in (self.model.encoder, self.model.target_encoder, self.model.predictor):
                module.compile(mode=compile_mode)
        # Data parallelism (torchrun): DDP averages gradients over ranks; a world of one runs the model as is.
        self.dist = dist or distributed.DistContext(device=device)
        self.forward: nn.Module = self.model
        if self.dist.active:
            self.model.gather_embeddings = distributed.row_gatherer(self.dist)
            self.forward = distributed.wrap(self.model, self.dist)

    def augment(self, frames: torch.Tensor, step: int, rows: list[int] | None = None,
                global_size: int | None = None) -> torch.Tensor:
        """Crops drawn for the whole global batch from the step's seed; ``rows`` are the clips of ``frames``."""
        gen = torch.Generator().manual_seed(_seed_int(self.cfg.train.seed, 11, step))
        d = self.cfg.data
        params = random_resized_crop_params(global_size or frames.shape[0], (d.min_scale, d.max_scale),
                                            (3 / 4, 4 / 3), d.hflip, gen)
        if rows is not None:
            params = params[rows]
        return train_transform(frames, self.cfg.model.img_size, params, self.amp_dtype or torch.float32)

    def drop_draws(self, step: int, rows: list[int] | None, global_size: int) -> torch.Tensor:
        """Stochastic depth's draws (depth, 2, clips of this process) for the whole global batch from the step's
        seed, like the crops: a run drops the same branches of the same clips however many processes share it."""
        gen = torch.Generator().manual_seed(_seed_int(self.cfg.train.seed, 17, step))
        draws = torch.rand(global_size, self.cfg.model.depth, 2, generator=gen)
        if rows is not None:
            draws = draws[rows]
        return draws.permute(1, 2, 0).to(self.device, non_blocking=True)

    def step(self, batch: TrainBatch) -> StepOutput:
        """One update. Returns the (device, detached) losses and the target features for diagnostics."""
        step = batch.step
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedules.lr(step)
            if group["apply_wd"]:
                group["weight_decay"] = self.schedules.weight_decay(step)
        self.model.reg_weight = self.schedules.reg_weight(step)
        frames = batch.frames.to(self.device, non_blocking=True)
        self.local_clips += frames.shape[0]
        keep = [m.keep.to(self.device, non_blocking=True) for m in batch.masks]
        target = [m.target.to(self.device, non_blocking=True) for m in batch.masks]
        video = self.augment(frames, step, batch.rows, batch.global_size)
        self.forward.train()
        if self.cfg.model.drop_path > 0:
            self.model.encoder.drop_draws = self.drop_draws(step, batch.rows, batch.global_size or frames.shape[0])
        try:
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out = self.forward(video, keep, target, context_only=self.context_only,
                                   generator=torch.Generator().manual_seed(_seed_int(self.cfg.train.seed, 13, step)))
        finally:
            self.model.encoder.drop_draws = None
        out.loss.backward()
        if self.cfg.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.params, self.cfg.train.grad_clip, foreach=True)
        self.optimizer.step()
        if self.anchor is not None:  # decoupled like AdamW's decay, but towards the initial weights
            pull = self.schedules.lr(step) * self.cfg.train.init_anchor
            with torch.no_grad():
                torch._foreach_lerp_(self.anchor[0], self.anchor[1], pull)
        self.optimizer.zero_grad(set_to_none=True)
        self.model.update_target(self.schedules.momentum(step), foreach=self.foreach_ema)
        return StepOutput(out.loss.detach(), out.targets, out.prediction_loss, out.regularizer)

    def clips_done(self) -> int:
        """Clips actually trained on since step 0, over all ranks (a collective call under DDP). Clips of
        videos that failed to decode were never trained on and are not counted."""
        local = torch.tensor([self.local_clips], dtype=torch.float64, device=self.device)
        return self.clips_base + int(distributed.all_sum(self.dist, local).item())

    def state(self, step: int, signature: str, skipped: list[dict[str, Any]], clips_done: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": step,
            "config": self.cfg.to_dict(), "rng": _rng_state(), "data_signature": signature, "skipped": skipped,
            "clips_done": clips_done,
        }

    def load_state(self, state: dict[str, Any]) -> int:
        ckpt.load_state_strict(self.model, state["model"], ckpt.CHECKPOINT_FILE)
        self.optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"])
        self.clips_base, self.local_clips = int(state.get("clips_done", 0)), 0
        return int(state["step"])


def load_teacher(model: JEPA, run_dir: str | Path) -> None:
    """Make the encoder of a finished run the frozen teacher of ``model`` (strict: same architecture)."""
    teacher_cfg = ckpt.config_from_run(run_dir)
    if teacher_cfg.model != model.cfg:
        raise PicoJepaError(f"train.teacher_run: {run_dir}'s model config differs from this run's; a frozen "
                            f"teacher must have the student's architecture")
    teacher = ckpt.load_encoder(run_dir)
    model.target_encoder.load_state_dict(teacher.state_dict())


def _seed_int(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def model_config_changes(saved: dict[str, Any], cfg: Config) -> list[str]:
    """``model.field: run's value → this call's`` for each model field a resume would change."""
    if not isinstance(saved.get("model"), dict):
        return ["the run saved no model config"]
    before = Config.from_dict({"model": saved["model"]}).model
    return [f"model.{f.name}: {getattr(before, f.name)!r} in the run, {getattr(cfg.model, f.name)!r} now"
            for f in dataclasses.fields(before) if getattr(before, f.name) != getattr(cfg.model, f.name)]


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        return
    if ckpt.has_checkpoint(out) or (out / ckpt.ENCODER_FILE).exists():
        raise PicoJepaError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def _trim_metrics(path: Path, last_step: int) -> None:
    """Drop metric rows logged after the checkpoint we resume from (they will be logged again)."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if json.loads(r).get("step", 0) <= last_step]
    path.write_text("".join(r + "\n" for r in kept))


class Monitor(Protocol):
    """What the loop calls every ``every`` steps (see :class:`picojepa.probe.monitor.ProbeMonitor`)."""

    every: int  # 0: the loop picks about five readings per run

    def __call__(self, step: int, online: VideoViT, ema: VideoViT) -> dict[str, float]:
        """``ema`` is the encoder the run saves: the EMA copy, or ``online`` itself when targets are not EMA."""
        ...


def initial_encoder(cfg: Config) -> VideoViT:
    """The encoder a run of ``cfg`` starts from — the same draws as :class:`Trainer` — in eval mode:
    the random-init baseline every evaluation compares with."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        return VideoViT(cfg.model).eval()


def save_initial_encoder(cfg: Config, out: str | Path) -> Path:
    """A finished run folder (0 steps) holding :func:`initial_encoder`, so every downstream tool treats
    the random-init baseline exactly like a pretrained encoder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    encoder = initial_encoder(cfg)
    ckpt.save_encoder(encoder, out)
    ckpt.write_run_config(out, cfg, preset=cfg.preset, kind="random_init", finished=True, steps=0, clips_seen=0,
                          videos=0, train_seconds=0.0, encoder_params=sum(p.numel() for p in encoder.parameters()))
    return out


def pretrain(cfg: Config, data: str | Path | VideoSet, out: str | Path, resume: bool = False,
             progress: bool = True, max_steps: int | None = None,
             cache_dir: str | Path | None = None, monitor: Monitor | None = None,
             trust_pickle: bool = False, keep_best: bool = False) -> PretrainResult:
    """Pretrain an encoder on the videos at ``data``; writes the run folder ``out``.

    ``trust_pickle`` lets ``resume`` load an older version's pickle checkpoint (which can run code).
    ``max_steps`` stops early (as an interruption would), leaving a checkpoint to ``--resume`` from.
    ``monitor`` (e.g. a :class:`picojepa.probe.monitor.ProbeMonitor`) is called at step 0, every
    ``monitor.every`` steps and at the end; its numbers go to ``metrics.jsonl``, and the EMA encoder of its
    best reading to ``encoder-best.safetensors``; ``keep_best`` makes that one the run's ``encoder.safetensors``
    (the final one is then ``encoder-last.safetensors``).
    Under torchrun every rank calls this; they train one model data-parallel and rank 0 alone writes
    (and alone runs the monitor: the replicas are identical).
    """
    ctx = distributed.setup(cfg.train.device)
    if keep_best and monitor is None and ctx.is_main:
        distributed.teardown(ctx)
        raise PicoJepaError("keeping the best reading needs a learning monitor (--eval-data)")
    try:
        with distributed.quiet_unless_main(ctx), deterministic_kernels(cfg.train.deterministic, ctx.device):
            result = _pretrain(cfg, data, Path(out), resume, progress and ctx.is_main, max_steps, cache_dir,
                               monitor if ctx.is_main else None, ctx, trust_pickle, keep_best)
        # Rank 0 still writes the run's files after the last step; a rank that tore the group down meanwhile
        # could abort in gloo's threads ("terminate called without an active exception").
        distributed.barrier(ctx)
        return result
    finally:
        distributed.teardown(ctx)


@contextlib.contextmanager
def deterministic_kernels(enabled: bool, device: torch.device) -> Iterator[None]:
    """torch's deterministic kernels for the duration of a CPU run, the caller's setting restored after."""
    if not enabled or device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def planned_steps(cfg: Config, steps_per_epoch: int, batch_size: int) -> int:
    """The run's optimiser steps: ``train.clip_steps`` / batch (rounded up) when set, else epochs × steps per epoch."""
    if cfg.train.clip_steps > 0:
        return -(-cfg.train.clip_steps // batch_size)
    return cfg.train.epochs * steps_per_epoch


def _pretrain(cfg: Config, data: str | Path | VideoSet, out: Path, resume: bool, progress: bool,
              max_steps: int | None, cache_dir: str | Path | None, monitor: Monitor | None,
              ctx: distributed.DistContext, trust_pickle: bool = False, keep_best: bool = False) -> PretrainResult:
    main = ctx.is_main  # the only rank that writes to the run folder
    _check_out_dir(out, resume)
    meta = ckpt.read_run_config(out) if resume and (out / ckpt.CONFIG_FILE).exists() else None
    if meta and meta.get("finished"):
        info(f"{out} is already finished ({meta.get('steps')} steps); nothing to resume")
        return _result_from_meta(out, meta)
    if resume and not ckpt.has_checkpoint(out):
        raise PicoJepaError(f"--resume: {out} has no {ckpt.CHECKPOINT_FILE} to continue from")
    if main:
        out.mkdir(parents=True, exist_ok=True)

    videos = data if isinstance(data, VideoSet) else load_videos(data)
    prepared = distributed.local_leader_first(
        ctx, lambda: prepare_videos(videos, cfg, progress=progress, cache_dir=cache_dir))
    skipped = skipped_records(prepared.skipped, "scan")
    if main:
        write_json(out / "skipped.json", skipped)

    device = ctx.device
    n = len(prepared.store)
    batch_size = min(cfg.train.batch_size, n - n % ctx.world)  # data parallel: whole clips per rank
    per_rank = distributed.split_batch(batch_size, ctx)
    if cfg.train.target_norm in BATCH_TARGET_NORMS and per_rank < 2:
        raise PicoJepaError(f"train.target_norm={cfg.train.target_norm} needs at least 2 clips per batch on each "
                            f"process; this run has {per_rank} ({n} usable videos)")
    if batch_size < cfg.train.batch_size:
        warn(f"only {n} usable videos: batch size lowered from {cfg.train.batch_size} to {batch_size}")
    steps_per_epoch = n // batch_size
    total_steps = planned_steps(cfg, steps_per_epoch, batch_size)
    signature = data_signature(prepared, cfg)
    distributed.check_same(ctx, signature, "videos or data settings")
    trainer = Trainer(cfg, device, total_steps, dist=ctx)

    start_step = 0
    best = BestReading(out) if monitor is not None else None
    if resume:
        state = ckpt.load_checkpoint(out, trust_pickle)
        if state.get("data_signature") != signature:
            raise PicoJepaError("--resume: the data or data settings differ from the interrupted run's")
        model_changes = model_config_changes(state.get("config", {}), cfg)
        if model_changes:
            raise PicoJepaError("--resume: the model config differs from the interrupted run's "
                                f"({'; '.join(model_changes)}); pass the run's values with --set")
        changed = weight_layout_changes(state.get("config", {}).get("train", {}), cfg)
        if changed:
            raise PicoJepaError(f"--resume: {', '.join(changed)} differ(s) from the interrupted run's (the model or "
                                "its optimiser would hold a different set of weights)")
        start_step = trainer.load_state(state)
        skipped = state.get("skipped", skipped)
        if main:
            _trim_metrics(out / "metrics.jsonl", start_step)
            if best is not None:
                best = BestReading.resume(out, start_step)
        info(f"resuming {out} at step {start_step}/{total_steps}")
    elif main:
        (out / "metrics.jsonl").unlink(missing_ok=True)

    run_meta = {
        "preset": cfg.preset, "data": str(videos.source), "videos": n, "batch_size": batch_size,
        "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "finished": False,
        "encoder_params": sum(p.numel() for p in trainer.model.encoder.parameters()),
        "predictor_params": sum(p.numel() for p in trainer.model.predictor.parameters()),
        "world_size": ctx.world,
    }
    if main:
        ckpt.write_run_config(out, cfg, **run_meta)
    if main and monitor is None and total_steps * batch_size > LONG_RUN_CLIP_STEPS:
        warn(f"{total_steps * batch_size:,} clip-steps: past {LONG_RUN_CLIP_STEPS // 1000}k the default recipe's gain "
             "over random init was measured to fall (docs/scaling.md); --eval-data shows the learning curve and "
             "--keep-best keeps its best reading")
    stop_at = total_steps if max_steps is None else min(total_steps, start_step + max_steps)
    loader = _batches(prepared, cfg, trainer, device, stop_at, start_step, batch_size)
    flops = train_flops_per_clip(cfg.model, cfg.mask)
    peak = peak_flops(device)
    t0 = time.perf_counter()
    loss_value, step = float("nan"), start_step
    try:
        step, loss_value = _loop(trainer, loader, out, start_step, stop_at, total_steps, steps_per_epoch,
                                 signature, skipped, flops, peak, progress, monitor, best)
    except KeyboardInterrupt:
        raise PicoJepaError(f"interrupted; the last checkpoint is in {out} — continue with --resume") from None
    seconds = time.perf_counter() - t0
    finished = step >= total_steps
    distributed.check_replicas(ctx, trainer.model)
    skipped = distributed.merge_records(ctx, skipped)
    clips = trainer.clips_done()  # counted, not steps × batch: clips of failed videos were never trained on
    if main:
        kept_best = False
        if finished:
            if keep_best and best is not None:  # the best reading becomes the encoder, the final one encoder-last
                kept_best = keep_best_as_encoder(out, best, trainer.model.evaluation_encoder, step)
            if not kept_best:
                ckpt.save_encoder(trainer.model.evaluation_encoder, out)
        ckpt.save_checkpoint(trainer.state(step, signature, skipped, clips), out)
        write_json(out / "skipped.json", skipped)
        summary = monitor_summary(out / "metrics.jsonl") if monitor is not None else None
        if summary and finished:
            info(summary["text"])
        ckpt.write_run_config(out, cfg, **{**run_meta, "finished": finished, "steps": step, "clips_seen": clips,
                                           "final_loss": loss_value, "train_seconds": seconds,
                                           "ema_init_fraction": trainer.schedules.init_fraction()
                                           if cfg.train.targets == "ema" else None,
                                           **({"monitor": summary} if summary else {}),
                                           **({"best_reading": best.record(kept_best)}
                                              if best is not None and best.step is not None else {})})
    return PretrainResult(out, step, clips, loss_value, seconds, n, skipped)


def _batches(prepared: PreparedData, cfg: Config, trainer: Trainer, device: torch.device, stop_at: int,
             start_step: int, batch_size: int) -> Iterator[TrainBatch]:
    """GPU-resident clip bank when asked for or when it fits; else DataLoader workers + pinned memory."""
    mode = cfg.data.device_cache
    use_bank = cfg.data.use_cache and device.type == "cuda" and (
        mode == "on" or (mode == "auto" and fits_on_device(prepared.store, device)))
    rank, world = trainer.dist.rank, trainer.dist.world
    if use_bank:
        info(f"clip cache on the GPU ({bank_bytes(prepared.store) / 2**30:.2f} GiB)")
        bank = DeviceClipBank(prepared.store, device, cfg.model.num_frames, cfg.train.seed)
        return bank.batches(trainer.masks, batch_size, stop_at, start_step, rank=rank, world=world)
    return iter(train_loader(prepared.store, cfg, trainer.masks, stop_at, start_step, batch_size,
                             pin_memory=device.type == "cuda", rank=rank, world=world))


def _result_from_meta(out: Path, meta: dict[str, Any]) -> PretrainResult:
    skipped_path = out / "skipped.json"
    skipped = json.loads(skipped_path.read_text()) if skipped_path.exists() else []
    return PretrainResult(out, meta.get("steps", 0), meta.get("clips_seen", 0), meta.get("final_loss", float("nan")),
                          meta.get("train_seconds", 0.0), meta.get("videos", 0), skipped)


def monitor_summary(metrics_path: Path) -> dict[str, Any] | None:
    """First (random init) and last learning-monitor readings of a run, with a one-line summary."""
    if not metrics_path.exists():
        return None
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    probes = [r for r in rows if "probe_ema" in r]
    if not probes:
        return None
    first, last = probes[0], probes[-1]
    best = max(probes, key=lambda r: r["probe_ema"])  # the first of equals, as BestReading keeps
    keys = ("probe_ema", "probe_online", "knn_ema", "knn_online")
    text = (f"learning monitor at step {last['step']}: probe EMA {last['probe_ema']:.0%}, online "
            f"{last['probe_online']:.0%} (random init at step {first['step']}: {first['probe_ema']:.0%}); "
            f"k-NN EMA {last['knn_ema']:.0%} (random init {first['knn_ema']:.0%}); "
            f"best probe EMA {best['probe_ema']:.0%} at step {best['step']}")
    return {"first_step": first["step"], "last_step": last["step"], "best_step": best["step"],
            "first": {k: first[k] for k in keys}, "last": {k: last[k] for k in keys},
            "best": {k: best[k] for k in keys}, "text": text}


def _run_monitor(monitor: Monitor, trainer: Trainer, step: int, metrics: Any,
                 best: BestReading | None = None) -> dict[str, float]:
    with torch.random.fork_rng(devices=[]):  # probes draw from the global RNG; training must not notice
        row = monitor(step, trainer.model.encoder, trainer.model.evaluation_encoder)
    metrics.write(json.dumps({"step": step, **row}) + "\n")
    metrics.flush()
    if best is not None:
        best.offer(step, row, trainer.model.evaluation_encoder)
    return row


def _loop(trainer: Trainer, loader: Iterator[TrainBatch], out: Path, start_step: int, stop_at: int,
          total_steps: int, steps_per_epoch: int, signature: str, skipped: list[dict[str, Any]],
          flops: float, peak: float | None, progress: bool, monitor: Monitor | None = None,
          best: BestReading | None = None) -> tuple[int, float]:
    cfg, ctx = trainer.cfg, trainer.dist
    log_every, ckpt_every = max(1, cfg.train.log_every), max(1, cfg.train.checkpoint_every)
    seen_failures = {s["path"] for s in skipped}
    loss_sum = torch.zeros((), device=trainer.device)
    parts_sum = torch.zeros(2, device=trainer.device)  # prediction loss, regulariser
    clips_since, steps_since, last_log = 0, 0, time.perf_counter()
    loss_value, step = float("nan"), start_step
    targets = torch.zeros(1, 1)
    bar = make_progress("{task.fields[status]}")
    task = bar.add_task("pretraining", total=total_steps, completed=start_step, status="")
    # kept open for the whole loop; rank 0 alone writes the run folder
    metrics = open(out / "metrics.jsonl", "a") if ctx.is_main else None  # noqa: SIM115
    try:
        with bar if progress else contextlib.nullcontext():
            monitor_every = (monitor.every or max(1, -(-total_steps // 5))) if monitor is not None else 0
            if monitor is not None and start_step == 0:
                bar.update(task, status="learning monitor: random init")
                _run_monitor(monitor, trainer, 0, metrics, best)
            for batch in loader:
                for path, reason in batch.failed:
                    if path not in seen_failures:
                        seen_failures.add(path)
                        skipped.append({"path": path, "reason": reason, "line": None, "stage": "train"})
                        warn(f"skipping {path}: {reason}")
                if distributed.all_agree(ctx, batch.frames.shape[0] > 0):  # DDP: all ranks step, or none
                    update = trainer.step(batch)
                    targets = update.targets
                    loss_sum += update.loss
                    parts_sum += torch.stack([update.prediction_loss, update.regularizer])
                    steps_since += 1
                    clips_since += batch.frames.shape[0]
                step = batch.step + 1
                if step % log_every == 0 or step == stop_at:
                    if trainer.device.type == "cuda":
                        torch.cuda.synchronize()
                    now = time.perf_counter()
                    # DDP: losses are each rank's mean over its slice; their mean is the global-batch mean
                    sums = distributed.all_sum(ctx, torch.cat([loss_sum.view(1), parts_sum, torch.tensor(
                        [steps_since, clips_since], dtype=loss_sum.dtype, device=loss_sum.device)]))
                    steps_all, clips_all = (int(v) for v in sums[3:].tolist())
                    loss_value = float(sums[0]) / max(steps_all, 1)
                    rate = clips_all / max(now - last_log, 1e-9)
                    prediction, regularizer = (sums[1:3] / max(steps_all, 1)).tolist()
                    row = {
                        "step": step, "epoch": (step - 1) // steps_per_epoch, "loss": loss_value,
                        "prediction_loss": prediction, "regularizer": regularizer,
                        "lr": trainer.schedules.lr(step - 1), "weight_decay": trainer.schedules.weight_decay(step - 1),
                        "reg_weight": trainer.schedules.reg_weight(step - 1),
                        "momentum": trainer.schedules.momentum(step - 1), "clips_per_s": rate,
                        "tflops": rate * flops / 1e12, "target_std": feature_std(targets),
                        "target_rank": effective_rank(targets), "time": time.time(),
                    }
                    if peak:
                        row["mfu"] = rate * flops / peak
                    if metrics is not None:
                        metrics.write(json.dumps(row) + "\n")
                        metrics.flush()
                    status = f"loss {loss_value:.4f} · {rate:.1f} clips/s · rank {row['target_rank']:.1f}"
                    bar.update(task, completed=step, status=status)
                    loss_sum.zero_()
                    parts_sum.zero_()
                    clips_since, steps_since, last_log = 0, 0, now
                else:
                    bar.update(task, completed=step)
                if monitor is not None and (step % monitor_every == 0 or step == total_steps):
                    probe = _run_monitor(monitor, trainer, step, metrics, best)
                    bar.update(task, status=f"probe EMA {probe.get('probe_ema', float('nan')):.0%}")
                if step % ckpt_every == 0 or step % steps_per_epoch == 0:
                    distributed.check_replicas(ctx, trainer.model)  # the EMA target is the same on every rank
                    skipped[:] = distributed.merge_records(ctx, skipped)
                    clips_done = trainer.clips_done()
                    if ctx.is_main:
                        ckpt.save_checkpoint(trainer.state(step, signature, skipped, clips_done), out)
    finally:
        if metrics is not None:
            metrics.close()
    if not progress:
        console.print(f"pretraining: step {step}/{total_steps}, loss {loss_value:.4f}")
    return step, loss_value


