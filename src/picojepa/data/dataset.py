"""Clip datasets and loaders.

Randomness is a function of (seed, epoch, step, index) only, never of worker scheduling, so a run
resumed at step s sees exactly the batches an uninterrupted run would have seen. Under data parallelism
each rank loads a contiguous slice of every global batch and keeps the matching rows of the masks drawn
for the whole global batch, so no clip's data depends on the number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..config import Config, cache_size
from ..masks import MaskBatch, MaskSampler
from .cache import CacheSettings, ClipCache
from .decode import VideoError, choose_decoder, decode_strided


def clip_indices(num_available: int, num_frames: int, start: int) -> np.ndarray:
    """Frame indices of one clip; videos shorter than a clip repeat their last frame."""
    return np.minimum(np.arange(start, start + num_frames), num_available - 1)


def eval_starts(num_available: int, num_frames: int, num_clips: int) -> list[int]:
    """Starts of ``num_clips`` evenly spaced clips (one clip: centred)."""
    last = max(0, num_available - num_frames)
    if num_clips == 1:
        return [last // 2]
    return [round(x) for x in np.linspace(0, last, num_clips)]


class FrameStore:
    """All strided frames of each video: from the clip cache, or decoded on every access."""

    def __init__(self, videos: Sequence[Path], settings: CacheSettings, cache: ClipCache | None) -> None:
        self.videos = list(videos)
        self.settings = settings
        self.cache = cache

    def __len__(self) -> int:
        return len(self.videos)

    def frames(self, index: int) -> np.ndarray:
        video = self.videos[index]
        if self.cache is not None:
            return self.cache.load(video)
        s = self.settings
        return decode_strided(video, s.side, s.frame_stride, s.target_fps, s.max_frames, s.decoder)


def cache_settings(cfg: Config) -> CacheSettings:
    d = cfg.data
    return CacheSettings(cache_size(cfg), d.frame_stride, d.target_fps, d.cache_max_frames, choose_decoder(d.decoder))


@dataclass
class TrainBatch:
    frames: torch.Tensor  # (B, T, S, S, 3) uint8
    masks: list[MaskBatch]  # one per mask generator
    step: int
    failed: list[tuple[str, str]]  # videos that failed to decode in this batch: (path, reason)
    # Rows of the global batch these clips are (None: all of it, in order); per-clip randomness such as
    # crops is drawn for ``global_size`` clips and these rows are kept.
    rows: list[int] | None = None
    global_size: int | None = None

    def pin_memory(self) -> TrainBatch:
        return TrainBatch(self.frames.pin_memory(), [m.pin_memory() for m in self.masks], self.step, self.failed,
                          self.rows, self.global_size)


class TrainClips(Dataset):
    """Item (index, epoch, step) → one random-start clip, uint8 (T, S, S, 3), or the failure reason."""

    def __init__(self, store: FrameStore, num_frames: int, seed: int) -> None:
        self.store = store
        self.num_frames = num_frames
        self.seed = seed

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[np.ndarray | None, int, str | None]:
        index, epoch, step = key
        try:
            frames = self.store.frames(index)
        except VideoError as e:
            return None, step, f"{e.path}\t{e.reason}"
        rng = np.random.default_rng([self.seed, epoch, index])
        start = int(rng.integers(0, max(1, len(frames) - self.num_frames + 1)))
        return np.ascontiguousarray(frames[clip_indices(len(frames), self.num_frames, start)]), step, None


class EpochBatchSampler(Sampler):
    """Yields batches of (index, epoch, step) from ``start_step`` on; a seeded permutation per epoch.

    ``batch_size`` is the global batch; rank ``rank`` of ``world`` gets its contiguous slice of it, so
    across ranks every clip is seen once per epoch, as in a single process.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} does not split over {world} ranks")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.steps_per_epoch = max(1, num_items // batch_size)
        self.total_steps, self.start_step = total_steps, start_step
        self.local = batch_size // world
        self.offset = rank * self.local

    def __len__(self) -> int:
        return self.total_steps - self.start_step

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        for step in range(self.start_step, self.total_steps):
            epoch, pos = divmod(step, self.steps_per_epoch)
            order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            chunk = order[pos * self.batch_size: (pos + 1) * self.batch_size]
            yield [(int(i), epoch, step) for i in chunk[self.offset: self.offset + self.local]]


class MaskingCollator:
    """Stacks clips and draws the masks of the whole global batch on the loading side, seeded by (seed, step);
    keeps the rows of the clips it holds (``offset`` is this rank's first row)."""

    def __init__(self, masks: MaskSampler, seed: int, global_size: int | None = None, offset: int = 0) -> None:
        self.masks = masks
        self.seed = seed
        self.global_size, self.offset = global_size, offset

    def __call__(self, items: list[tuple[np.ndarray | None, int, str | None]]) -> TrainBatch:
        step = items[0][1]
        failed = [tuple(err.split("\t", 1)) for _, _, err in items if err is not None]
        clips = [c for c, _, _ in items if c is not None]
        # numpy stacks without torch's intra-op thread pool, which stalls on a busy 2-core machine
        frames = torch.from_numpy(np.stack(clips)) if clips else torch.empty(0, dtype=torch.uint8)
        size = self.global_size or len(items)
        rows = global_rows([self.offset + j for j, (c, _, _) in enumerate(items) if c is not None], size)
        masks = select_rows(self.masks(size, [self.seed, 7, step]), rows)
        return TrainBatch(frames, masks, step, failed, rows, size)  # type: ignore[arg-type]


def global_rows(rows: list[int], size: int) -> list[int] | None:
    """None when ``rows`` are the whole global batch in order (one process, nothing failed)."""
    return None if rows == list(range(size)) else rows


def select_rows(masks: list[MaskBatch], rows: list[int] | None) -> list[MaskBatch]:
    return masks if rows is None else [m.take(rows) for m in masks]


def train_loader(store: FrameStore, cfg: Config, masks: MaskSampler, total_steps: int, start_step: int,
                 batch_size: int, pin_memory: bool = False, rank: int = 0, world: int = 1) -> DataLoader:
    """Batches of this rank's slice of each global batch of ``batch_size`` clips."""
    dataset = TrainClips(store, cfg.model.num_frames, cfg.train.seed)
    sampler = EpochBatchSampler(len(store), batch_size, cfg.train.seed, total_steps, start_step, rank, world)
    collate = MaskingCollator(masks, cfg.train.seed, batch_size, sampler.offset)
    workers = cfg.data.num_workers
    return DataLoader(
        dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
        pin_memory=pin_memory, persistent_workers=False, prefetch_factor=4 if workers > 0 else None,
        multiprocessing_context="spawn" if workers > 0 else None,
    )


class EvalClips(Dataset):
    """Item i → the K evenly spaced clips of video i, uint8 (K, T, S, S, 3), or the failure reason."""

    def __init__(self, store: FrameStore, num_frames: int, num_clips: int) -> None:
        self.store, self.num_frames, self.num_clips = store, num_frames, num_clips

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            frames = self.store.frames(index)
        except VideoError as e:
            return index, None, e.reason
        starts = eval_starts(len(frames), self.num_frames, self.num_clips)
        return index, np.stack([frames[clip_indices(len(frames), self.num_frames, s)] for s in starts]), None


def _eval_collate(items: list) -> list:
    return items


def eval_loader(store: FrameStore, num_frames: int, num_clips: int, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(
        EvalClips(store, num_frames, num_clips), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_eval_collate, multiprocessing_context="spawn" if workers > 0 else None,
    )
