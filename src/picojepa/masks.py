"""Space-time masks for JEPA pretraining, generated on the data-loading side.

Both mask types choose a set of *spatial* positions and mask them in every time slice, so a masked
tubelet cannot be recovered by copying the same place from a neighbouring frame:

- ``tube``: a random subset of spatial positions (VideoMAE-style tubes);
- ``multiblock``: the union of random rectangles with random scale and aspect ratio (V-JEPA-style),
  extended over all time slices.

Every mask in a batch masks exactly ``round(ratio · H'·W')`` spatial positions, so context and target
index tensors stack without padding. Indices follow the encoder's time-major token order
``t·H'·W' + h·W' + w`` and are sorted.
"""

from __future__ import annotations

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


def num_masked(spatial_size: int, ratio: float) -> int:
    return min(max(round(ratio * spatial_size), 1), spatial_size - 1)


def tube_mask(grid_hw: tuple[int, int], ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean (H'·W',) spatial mask with a random subset of positions masked."""
    size = grid_hw[0] * grid_hw[1]
    mask = np.zeros(size, dtype=bool)
    mask[rng.permutation(size)[: num_masked(size, ratio)]] = True
    return mask


def multiblock_mask(grid_hw: tuple[int, int], ratio: float, scale: tuple[float, float],
                    aspect: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Boolean (H'·W',) spatial mask: union of random blocks, trimmed to exactly the target count."""
    gh, gw = grid_hw
    size, goal = gh * gw, num_masked(gh * gw, ratio)
    mask = np.zeros((gh, gw), dtype=bool)
    count = 0
    for _ in range(1000):
        if count >= goal:
            break
        area = rng.uniform(*scale) * size
        log_aspect = rng.uniform(math.log(aspect[0]), math.log(aspect[1]))
        h = min(max(round(math.sqrt(area * math.exp(log_aspect))), 1), gh)
        w = min(max(round(math.sqrt(area / math.exp(log_aspect))), 1), gw)
        top, left = rng.integers(0, gh - h + 1), rng.integers(0, gw - w + 1)
        block = np.zeros_like(mask)
        block[top: top + h, left: left + w] = True
        new = np.flatnonzero(block & ~mask)
        # The last block is cut (raster order) so every mask in a batch has the same size.
        new = new[: goal - count]
        mask.flat[new] = True
        count += len(new)
    if count < goal:  # pathological scale settings: top up at random rather than loop forever
        free = np.flatnonzero(~mask)
        mask.flat[rng.choice(free, goal - count, replace=False)] = True
    return mask.reshape(-1)


def spatial_to_indices(spatial: np.ndarray, grid_t: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, S) spatial masks → keep (B, K) and target (B, M) token indices over all time slices."""
    full = np.tile(spatial, (1, grid_t))  # (B, T'·S): time-major, the same mask in every slice
    order = np.argsort(full, axis=1, kind="stable")  # unmasked first, each part in ascending order
    n_keep = int((~full[0]).sum())
    return order[:, :n_keep], order[:, n_keep:]


class MaskGenerator:
    """Draws batched masks for an encoder grid (T', H', W'); deterministic given a seed."""

    def __init__(self, grid: tuple[int, int, int], cfg: MaskConfig) -> None:
        self.grid = grid
        self.cfg = cfg

    def spatial(self, rng: np.random.Generator) -> np.ndarray:
        hw = self.grid[1:]
        if self.cfg.type == "tube":
            return tube_mask(hw, self.cfg.ratio, rng)
        return multiblock_mask(hw, self.cfg.ratio, self.cfg.block_scale, self.cfg.block_aspect, rng)

    def __call__(self, batch_size: int, seed: int | np.random.Generator | list[int]) -> MaskBatch:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        spatial = np.stack([self.spatial(rng) for _ in range(batch_size)])
        keep, target = spatial_to_indices(spatial, self.grid[0])
        return MaskBatch(torch.from_numpy(keep), torch.from_numpy(target), torch.from_numpy(spatial))
