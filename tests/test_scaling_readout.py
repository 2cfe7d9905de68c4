"""The scaling study's read-out helpers: gains averaged over probe seeds, and position-centred tokens."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from picojepa.metrics import paired_bootstrap_gap
from picojepa.probe.features import Features

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "learning"))
try:
    import scaling
finally:
    sys.path.pop(0)


def _labels_and_predictions(seeds: int, n: int = 200, classes: int = 4):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n // classes)
    good = np.where(rng.random((seeds, n)) < 0.7, y, rng.integers(0, classes, (seeds, n)))
    poor = np.where(rng.random((seeds, n)) < 0.4, y, rng.integers(0, classes, (seeds, n)))
    return y, good, poor


def test_one_probe_seed_gives_the_protocol_s_paired_bootstrap_gap():
    y, good, poor = _labels_and_predictions(1)
    got = scaling.seed_averaged_gain(y, good, poor, seed=3)
    want = paired_bootstrap_gap(y, good[0], poor[0], n_resamples=2000, seed=3)
    assert got["gain"] == pytest.approx(want["mean"])
    assert got["ci95"] == pytest.approx(want["ci95"])
    assert got["gains"] == pytest.approx([want["mean"]])


def test_several_probe_seeds_average_their_gains_and_interval_covers_the_mean():
    y, good, poor = _labels_and_predictions(3)
    got = scaling.seed_averaged_gain(y, good, poor, seed=0)
    per_seed = [(g == y).mean() - (p == y).mean() for g, p in zip(good, poor, strict=True)]
    assert got["gains"] == pytest.approx(per_seed)
    assert got["gain"] == pytest.approx(np.mean(per_seed))
    assert got["ci95"][0] < got["gain"] < got["ci95"][1]
    assert got["ci95"][0] > 0  # 70 % vs 40 % correct on 200 videos
    same = scaling.seed_averaged_gain(y, good, good, seed=0)
    assert same["gain"] == 0 and same["ci95"] == [0.0, 0.0]


def test_probe_seeds_start_with_the_evaluation_seed_and_are_distinct():
    seeds = scaling.probe_seeds(2, 4)
    assert seeds[0] == 2 and len(set(seeds)) == 4
    assert scaling.probe_seeds(2, 1) == [2]


def test_centred_tokens_have_zero_position_mean_on_the_training_videos_only():
    rng = np.random.default_rng(1)
    offsets = rng.normal(size=(6, 8)) * 5  # (positions, dim): a fixed offset per position
    tokens = (rng.normal(size=(10, 2, 6, 8)) + offsets).astype(np.float16)
    feats = Features(pooled=tokens.astype(np.float32).mean(axis=2), tokens=tokens, ok=np.ones(10, bool))
    train = np.array([0, 2, 4, 6, 8])
    out = scaling.centred(feats, train)
    assert np.abs(out.tokens[train].astype(np.float32).mean(axis=(0, 1))).max() < 0.01
    assert np.abs(out.tokens.astype(np.float32).mean(axis=(0, 1))).max() > 0.01  # the other videos are not used
    np.testing.assert_allclose(out.pooled, out.tokens.astype(np.float32).mean(axis=2), atol=0.02)
    # differences between clips at one position are untouched
    np.testing.assert_allclose(np.diff(out.tokens.astype(np.float32), axis=0),
                               np.diff(tokens.astype(np.float32), axis=0), atol=0.02)
    assert feats.tokens is tokens  # the input is not modified
