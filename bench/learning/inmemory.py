"""The synthetic benchmark rendered in memory, and pretraining straight from it: what the recipe sweep and the
scaling study share. No video files, so no PyAV: these scripts run on a bare GPU image."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import torch
import torch.nn.functional as F

from picojepa.config import Config
from picojepa.data.dataset import TrainBatch, clip_indices
from picojepa.datasets.synth import CLASS_NAMES, render_video
from picojepa.train.pretrain import Trainer, deterministic_kernels

RenderJob = tuple[str, int, int, int, int, str, int, int, bool, str]


def render_one(job: RenderJob) -> np.ndarray:
    """One video as the clip cache would hold it: every stride-th frame, resized to (side, side)."""
    name, index, seed, size, frames, difficulty, stride, side, actor, background = job
    torch.set_num_threads(1)
    rng = np.random.default_rng([seed, CLASS_NAMES.index(name), index])
    clip = render_video(name, rng, size, frames, difficulty, draw_actor=actor, background=background)
    clip = torch.from_numpy(clip[::stride])
    x = clip.permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def render_set(classes: tuple[str, ...], per_class: int, seed: int, size: int, frames: int, difficulty: str,
               stride: int, side: int, workers: int, actor: bool = True,
               indices: list[int] | None = None, background: str = "static") -> tuple[torch.Tensor, np.ndarray]:
    """uint8 (V, F, side, side, 3) strided frames, rendered in parallel, and labels (V,). ``indices`` picks
    videos of the (class-major) set; ``actor=False`` renders their twins without the actor."""
    jobs = [(c, i, seed, size, frames, difficulty, stride, side, actor, background)
            for c in classes for i in range(per_class)]
    labels = np.repeat(np.arange(len(classes)), per_class)
    if indices is not None:
        jobs, labels = [jobs[i] for i in indices], labels[indices]
    with mp.get_context("fork").Pool(workers) as pool:
        clips = pool.map(render_one, jobs, chunksize=8)
    return torch.from_numpy(np.stack(clips)), labels


# What a recipe must state (itself or through the base it extends): a library default of any of these may move.
STATED = {"train.regularizer", "train.targets", "train.lr", "train.reg_scale_free", "train.vicreg_std",
          "train.vicreg_cov_weight", "model.drop_path"}


def check_recipes(recipes: dict[str, list[str]], base: list[str] = ()) -> None:
    """Every recipe must state its objective in full (regulariser, targets and the settings whose defaults have
    moved), so that a change of library default can never silently change what a recipe measures."""
    for name, overrides in recipes.items():
        keys = {o.split("=", 1)[0] for o in [*base, *overrides]}
        missing = STATED - keys
        if missing:
            raise SystemExit(f"recipe {name!r} must state {', '.join(sorted(missing))} explicitly")


class ArrayStore:
    """The FrameStore interface over in-memory arrays (what feature extraction reads)."""

    def __init__(self, frames: torch.Tensor) -> None:
        self.array = frames.numpy()
        self.videos = [f"video_{i}" for i in range(len(frames))]

    def __len__(self) -> int:
        return len(self.array)

    def frames(self, index: int) -> np.ndarray:
        return self.array[index]


def pretrain_in_memory(cfg: Config, bank: torch.Tensor, steps: int, batch: int, device: torch.device,
                       readings: dict[int, object] | None = None) -> Trainer:
    """``steps`` updates of the library's Trainer on random clips of ``bank`` (uint8 (V, F, S, S, 3) on
    ``device``), fp32, CPU runs with deterministic kernels as ``picojepa pretrain`` does. ``readings`` maps a
    step count to a callable(trainer, step) run once that many steps are done (a monitor inside the run)."""
    trainer = Trainer(cfg, device, steps, amp=False)  # fp32 everywhere, so GPU findings carry to the CPU
    rng = np.random.default_rng(cfg.train.seed)
    frames_per_video, T = bank.shape[1], cfg.model.num_frames
    with deterministic_kernels(cfg.train.deterministic, device):
        for step in range(steps):
            idx = torch.from_numpy(rng.choice(len(bank), batch, replace=False)).to(bank.device)
            starts = rng.integers(0, max(1, frames_per_video - T + 1), batch)
            t = torch.from_numpy(np.stack([clip_indices(frames_per_video, T, int(s)) for s in starts])).to(bank.device)
            clips = bank[idx[:, None], t]
            trainer.step(TrainBatch(clips, trainer.masks(batch, [cfg.train.seed, 7, step]), step, []))
            if readings and step + 1 in readings:
                with torch.random.fork_rng(devices=[]):
                    readings[step + 1](trainer, step + 1)  # type: ignore[operator]
    return trainer
