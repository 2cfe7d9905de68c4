"""Masks: the same spatial mask in every time slice, exact ratio, determinism, index layout."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from picojepa.config import MaskConfig
from picojepa.masks import MaskGenerator, MaskSampler, draw_blocks, mask_configs, multiblock_batch, num_masked

GRID = (4, 7, 7)


@pytest.mark.parametrize("mask_type", ["tube", "multiblock"])
@pytest.mark.parametrize("ratio", [0.5, 0.75, 0.9])
def test_same_mask_in_every_time_slice_with_requested_ratio(mask_type, ratio):
    gen = MaskGenerator(GRID, MaskConfig(type=mask_type, ratio=ratio))
    batch = gen(16, seed=1)
    spatial = GRID[1] * GRID[2]
    expected = num_masked(spatial, ratio)
    assert batch.target.shape == (16, GRID[0] * expected)
    assert batch.keep.shape == (16, GRID[0] * (spatial - expected))
    for b in range(16):
        target = batch.target[b].numpy()
        slices = [set((target[(target // spatial) == t] % spatial).tolist()) for t in range(GRID[0])]
        assert all(s == slices[0] for s in slices), "mask differs between time slices"
        assert slices[0] == set(np.flatnonzero(batch.spatial[b].numpy()).tolist())
        keep = batch.keep[b].numpy()
        assert set(keep).isdisjoint(target)
        assert sorted(set(keep) | set(target)) == list(range(GRID[0] * spatial))
        assert np.all(np.diff(keep) > 0) and np.all(np.diff(target) > 0)


def test_deterministic_under_a_seed_and_varies_across_seeds():
    gen = MaskGenerator(GRID, MaskConfig(type="multiblock"))
    a, b, c = gen(8, seed=5), gen(8, seed=5), gen(8, seed=6)
    assert torch.equal(a.target, b.target)
    assert not torch.equal(a.target, c.target)
    assert len({tuple(row.tolist()) for row in a.target}) > 1  # clips in a batch get different masks


def test_multiblock_masks_are_blocky_compared_with_tubes():
    """Neighbouring positions agree far more often in block masks than in random tube masks."""
    def agreement(mask: np.ndarray) -> float:
        grid = mask.reshape(GRID[1], GRID[2])
        return float((grid[:, 1:] == grid[:, :-1]).mean())

    rng = np.random.default_rng(0)
    blocks = np.mean([agreement(m) for m in multiblock_batch(200, GRID[1:], 0.5, (0.1, 0.3), (0.75, 1.5), rng)])
    tubes = np.mean([agreement(m) for m in MaskGenerator(GRID, MaskConfig(type="tube", ratio=0.5)).spatial(rng, 200)])
    assert blocks > tubes + 0.15


def _slices_agree(batch, grid) -> bool:
    spatial = grid[1] * grid[2]
    for row in batch.target.numpy():
        slices = [set((row[(row // spatial) == t] % spatial).tolist()) for t in range(grid[0])]
        if any(s != slices[0] for s in slices):
            return False
    return True


@pytest.mark.parametrize("grid", [(4, 4, 4), (4, 8, 8), (4, 14, 14)])
def test_short_and_long_range_generators_keep_their_ratios_and_time_slices(grid):
    cfg = MaskConfig(type="multiblock", ratio=0.75, block_scale=(0.1, 0.2), long_range=True, long_ratio=0.85,
                     long_block_scale=(0.5, 0.8))
    short, long = MaskSampler(grid, cfg)(32, [3, 7, 0])
    spatial = grid[1] * grid[2]
    assert short.spatial.sum(1).tolist() == [num_masked(spatial, 0.75)] * 32
    assert long.spatial.sum(1).tolist() == [num_masked(spatial, 0.85)] * 32
    assert _slices_agree(short, grid) and _slices_agree(long, grid)
    assert not torch.equal(short.spatial, long.spatial)  # independent draws
    # The first generator is exactly what a lone generator with the same seed draws.
    assert torch.equal(short.target, MaskGenerator(grid, replace(cfg, long_range=False))(32, [3, 7, 0]).target)


def test_each_generator_draws_blocks_at_its_own_scale():
    short_cfg, long_cfg = mask_configs(MaskConfig(block_scale=(0.1, 0.2), long_range=True,
                                                  long_block_scale=(0.5, 0.8)))
    grid = (14, 14)
    areas = {}
    for name, cfg in (("short", short_cfg), ("long", long_cfg)):
        _, _, h, w = draw_blocks(2000, grid, cfg.block_scale, cfg.block_aspect, np.random.default_rng(0))
        areas[name] = h * w / (grid[0] * grid[1])
        low, high = cfg.block_scale
        assert low <= np.median(areas[name]) <= high, name  # rounding to whole positions moves single draws
    assert np.quantile(areas["long"], 0.01) > np.quantile(areas["short"], 0.99)


@pytest.mark.parametrize("future", [1, 2, 3])
def test_future_mask_splits_past_context_from_future_targets(future):
    grid = (4, 3, 5)  # (T', H', W')
    size = grid[1] * grid[2]
    batch = MaskGenerator(grid, MaskConfig(type="future", future_slices=future))(6, 0)
    past = (grid[0] - future) * size
    # every clip: the whole past is context, the whole future is target, nothing in between or twice
    assert torch.equal(batch.keep, torch.arange(past).expand(6, -1))
    assert torch.equal(batch.target, torch.arange(past, grid[0] * size).expand(6, -1))


def test_future_mask_needs_future_slices():
    from picojepa.config import load_config
    from picojepa.errors import ConfigError

    with pytest.raises(ConfigError, match="future_slices"):
        load_config("tiny", overrides=["mask.type=future"])
