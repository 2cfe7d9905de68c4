"""Masks: the same spatial mask in every time slice, exact ratio, determinism, index layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from picojepa.config import MaskConfig
from picojepa.masks import MaskGenerator, multiblock_batch, num_masked

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
