"""Space-time masks for JEPA pretraining, generated on the data-loading side.

Both mask types choose a set of *spatial* positions and mask them in every time slice, so a masked
tubelet cannot be recovered by copying the same place from a neighbouring frame:

- ``tube``: a random subset of spatial positions (VideoMAE-style tubes);
- ``multiblock``: the union of random rectangles with random scale and aspect ratio (V-JEPA-style),
  extended over all time slices;
- ``future``: no spatial mask; the context is every tubelet of the first slices and the target every
  tubelet of the last ``future_slices`` (a past → future split: the predictor must extrapolate the motion).

Every ``tube`` or ``multiblock`` mask masks exactly ``round(ratio · H'·W')`` spatial positions (``future``
masks none), so within a generator every clip has the same context and target sizes and the index tensors
stack without padding. Indices follow the encoder's time-major token order
``t·H'·W' + h·W' + w`` and are sorted.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch

from .config import MaskConfig


@dataclass
class MaskBatch:
    keep: torch.Tensor  # (B, K) context token indices
    target: torch.Tensor  # (B, M) masked token indices
    spatial: torch.Tensor  # (B, H'·W') bool, True where masked

    def pin_memory(self) -> MaskBatch:
        return MaskBatch(self.keep.pin_memory(), self.target.pin_memory(), self.spatial.pin_memory())

    def take(self, rows: list[int]) -> MaskBatch:
        """The masks of some clips of the batch (a data-parallel rank's slice, or the clips that decoded)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return MaskBatch(self.keep[index], self.target[index], self.spatial[index])


def num_masked(spatial_size: int, ratio: float) -> int:
    return min(max(round(ratio * spatial_size), 1), spatial_size - 1)


def context_tokens(grid: tuple[int, int, int], cfg: MaskConfig) -> int:
    """How many tokens the context encoder sees per clip under one generator's config (its long-range
    companion, if any, is a config of its own: see :func:`mask_configs`)."""
    grid_t, grid_h, grid_w = grid
    spatial = grid_h * grid_w
    visible = spatial if cfg.type == "future" else spatial - num_masked(spatial, cfg.ratio)
    return (grid_t - cfg.future_slices) * visible


def spatial_to_indices(spatial: np.ndarray, grid_t: int, future: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(B, S) spatial masks → keep (B, K) and target (B, M) token indices over all time slices.

    With ``future`` = k > 0 the last k time slices are targets in full: the context then only holds the
    unmasked positions of the earlier slices, and predicting the rest needs the motion seen so far.
    """
    batch, size = spatial.shape
    past = grid_t - future
    offsets = (np.arange(grid_t) * size)[None, :, None]
    # nonzero() walks row-major, so each row's positions come out sorted; every row has the same count.
    keep_s = np.nonzero(~spatial)[1].reshape(batch, 1, -1)
    target_s = np.nonzero(spatial)[1].reshape(batch, 1, -1)
    keep = (keep_s + offsets[:, :past]).reshape(batch, -1)
    if not future:
        return keep, (target_s + offsets).reshape(batch, -1)
    masked_past = (target_s + offsets[:, :past]).reshape(batch, -1)
    whole_future = np.broadcast_to(np.arange(past * size, grid_t * size), (batch, future * size))
    return keep, np.concatenate([masked_past, whole_future], axis=1)


def draw_blocks(batch: int, grid_hw: tuple[int, int], scale: tuple[float, float], aspect: tuple[float, float],
                rng: np.random.Generator, max_blocks: int = 32) -> tuple[np.ndarray, ...]:
    """Random rectangles (top, left, height, width), each (B, max_blocks): area a ``scale`` fraction of the
    grid, aspect ratio (height / width) log-uniform in ``aspect``, rounded to whole positions."""
    gh, gw = grid_hw
    area = rng.uniform(*scale, size=(batch, max_blocks)) * gh * gw
    log_aspect = rng.uniform(math.log(aspect[0]), math.log(aspect[1]), size=(batch, max_blocks))
    h = np.clip(np.rint(np.sqrt(area * np.exp(log_aspect))), 1, gh).astype(int)
    w = np.clip(np.rint(np.sqrt(area / np.exp(log_aspect))), 1, gw).astype(int)
    top = (rng.random((batch, max_blocks)) * (gh - h + 1)).astype(int)
    left = (rng.random((batch, max_blocks)) * (gw - w + 1)).astype(int)
    return top, left, h, w


def multiblock_batch(batch: int, grid_hw: tuple[int, int], ratio: float, scale: tuple[float, float],
                     aspect: tuple[float, float], rng: np.random.Generator, max_blocks: int = 32) -> np.ndarray:
    """Vectorised :func:`multiblock_mask` for a whole batch: (B, H'·W') bool, same rules, no Python loop
    over clips (a batch of 256 takes about a millisecond)."""
    gh, gw = grid_hw
    size, goal = gh * gw, num_masked(gh * gw, ratio)
    top, left, h, w = draw_blocks(batch, grid_hw, scale, aspect, rng, max_blocks)
    row_in = (np.arange(gh) >= top[..., None]) & (np.arange(gh) < (top + h)[..., None])  # (B, blocks, H')
    col_in = (np.arange(gw) >= left[..., None]) & (np.arange(gw) < (left + w)[..., None])  # (B, blocks, W')
    mask = np.zeros((batch, size), dtype=bool)
    count = np.zeros(batch, dtype=int)
    for j in range(max_blocks):
        active = count < goal
        if not active.any():
            break
        block = (row_in[:, j, :, None] & col_in[:, j, None, :]).reshape(batch, size)
        new = block & ~mask & active[:, None]
        # The last block is cut in raster order so every mask has exactly `goal` positions.
        mask |= new & (np.cumsum(new, axis=1) <= (goal - count)[:, None])
        count = mask.sum(axis=1)
    for i in np.flatnonzero(mask.sum(axis=1) < goal):  # pathological settings: top up at random
        free = np.flatnonzero(~mask[i])
        mask[i, rng.choice(free, goal - mask[i].sum(), replace=False)] = True
    return mask


def tube_batch(batch: int, grid_hw: tuple[int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    size = grid_hw[0] * grid_hw[1]
    ranks = np.argsort(rng.random((batch, size)), axis=1)
    return ranks < num_masked(size, ratio)


class MaskGenerator:
    """Draws batched masks for an encoder grid (T', H', W'); deterministic given a seed."""

    def __init__(self, grid: tuple[int, int, int], cfg: MaskConfig) -> None:
        self.grid = grid
        self.cfg = cfg

    def spatial(self, rng: np.random.Generator, batch: int = 1) -> np.ndarray:
        """(batch, H'·W') boolean spatial masks."""
        hw = self.grid[1:]
        if self.cfg.type == "tube":
            return tube_batch(batch, hw, self.cfg.ratio, rng)
        if self.cfg.type == "future":  # nothing hidden in the past: the future slices are the whole target
            return np.zeros((batch, hw[0] * hw[1]), dtype=bool)
        return multiblock_batch(batch, hw, self.cfg.ratio, self.cfg.block_scale, self.cfg.block_aspect, rng)

    def __call__(self, batch_size: int, seed: int | np.random.Generator | list[int]) -> MaskBatch:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        spatial = self.spatial(rng, batch_size)
        keep, target = spatial_to_indices(spatial, self.grid[0], self.cfg.future_slices)
        return MaskBatch(torch.from_numpy(keep), torch.from_numpy(target), torch.from_numpy(spatial))


def mask_configs(cfg: MaskConfig) -> list[MaskConfig]:
    """The generators a config asks for: itself, then V-JEPA's long-range one when enabled."""
    configs = [dataclasses.replace(cfg, long_range=False)]
    if cfg.long_range:
        configs.append(dataclasses.replace(cfg, type="multiblock", ratio=cfg.long_ratio,
                                           block_scale=cfg.long_block_scale, long_range=False))
    return configs


class MaskSampler:
    """One :class:`MaskBatch` per generator of a config, each from its own seeded stream; the first one
    is exactly what a lone :class:`MaskGenerator` with the same seed would draw."""

    def __init__(self, grid: tuple[int, int, int], cfg: MaskConfig) -> None:
        self.grid = grid
        self.generators = [MaskGenerator(grid, c) for c in mask_configs(cfg)]

    def __call__(self, batch_size: int, seed: int | list[int]) -> list[MaskBatch]:
        base = [seed] if isinstance(seed, int) else list(seed)
        return [gen(batch_size, base if g == 0 else [*base, 1000 + g]) for g, gen in enumerate(self.generators)]
