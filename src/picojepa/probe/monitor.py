"""Learning monitor: a cheap frozen-feature probe of the online and EMA encoders during pretraining.

Every ``every`` steps (and at step 0, where both encoders are the random initialisation) the monitor
encodes a fixed labelled subset, trains a small attentive probe on a fixed stratified two-thirds of it
and scores the other third, scores a k-NN classifier on the mean-pooled features, and measures the
effective rank and per-dimension std of the held-out features. A falling loss can hide a shortcut; this
shows whether the encoders learn anything a probe can read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.dataset import FrameStore
from ..data.prepare import prepare_videos
from ..data.sources import load_videos
from ..errors import DataError
from ..models import VideoViT
from ..train.diagnostics import effective_rank, feature_std, local_share
from .classifier import ProbeConfig, head_probabilities, train_head
from .features import Features, extract_features

ENCODERS = ("online", "ema")
# Videos a monitor reading encodes: 240 with a 20-epoch probe read 29 % / 26 % (pretrained / random init) on
# the demo's encoders, whose full heads read 69 % / 58 %; 400 with 40 epochs read 37 % / 30 %, at 11 s per
# reading of both encoders on 2 CPU cores.
MONITOR_VIDEOS = 400


def monitor_split(labels: np.ndarray, seed: int, train_fraction: float = 2 / 3) -> tuple[np.ndarray, np.ndarray]:
    """Fixed stratified (train, test) indices: per class, a seeded ``train_fraction`` for training."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = min(max(1, round(train_fraction * len(members))), len(members) - 1)
        train.append(members[:cut])
        test.append(members[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 k: int = 10) -> float:
    """Cosine k-NN (majority of the k nearest, ties to the nearest) on L2-normalised features."""
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(test_x) @ unit(train_x).T
    k = min(k, len(train_y))
    nearest = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    votes = np.zeros((len(test_x), int(train_y.max()) + 1))
    for rank in range(k):  # later (farther) neighbours add slightly less, which breaks ties to the nearest
        np.add.at(votes, (np.arange(len(test_x)), train_y[nearest[:, rank]]), 1.0 - 1e-3 * rank)
    return float((votes.argmax(1) == test_y).mean())


@dataclass
class ProbeMonitor:
    """Callable by the pretraining loop: ``monitor(step, online, ema)`` → flat metric dict."""

    store: FrameStore
    labels: np.ndarray
    every: int
    head: str = "attentive"
    epochs: int = 40  # 20 left both encoders near chance on the demo's task (checked on the demo's encoders)
    num_clips: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels)
        if len(self.labels) != len(self.store):
            raise DataError("the monitor needs one label per video")
        if len(np.unique(self.labels)) < 2 or np.bincount(self.labels).max() < 2:
            raise DataError("the learning monitor needs at least two classes with two videos each")
        self.train_idx, self.test_idx = monitor_split(self.labels, self.seed)
        self.num_classes = int(self.labels.max()) + 1

    def __call__(self, step: int, online: VideoViT, ema: VideoViT) -> dict[str, float]:
        row: dict[str, float] = {}
        # Without an EMA copy (frozen or pixel targets) the saved encoder is the online one: read it once.
        online_reading = self.evaluate(online)
        readings = (online_reading, online_reading if ema is online else self.evaluate(ema))
        for name, reading in zip(ENCODERS, readings, strict=True):
            row.update({f"{key}_{name}": value for key, value in reading.items()})
        return row

    @torch.no_grad()
    def features(self, encoder: VideoViT) -> Features:
        was_training = encoder.training
        features = extract_features(encoder, self.store, self.num_clips, keep_tokens=True, progress=False)
        encoder.train(was_training)
        if not features.ok.all():
            bad = ", ".join(str(self.store.videos[i]) for i, _ in features.failed[:3])
            raise DataError(f"{len(features.failed)} monitor video(s) failed to decode: {bad}")
        return features

    def evaluate(self, encoder: VideoViT) -> dict[str, float]:
        """Probe accuracy, k-NN accuracy and held-out collapse diagnostics of one encoder."""
        feats = self.features(encoder)
        probe = ProbeConfig(head=self.head, epochs=self.epochs, num_clips=self.num_clips, seed=self.seed, grid=())
        # No validation split: the last epoch is used, so nothing is selected on the scored videos.
        trained = train_head(feats, self.labels, self.train_idx, np.empty(0, dtype=int), self.num_classes, probe)
        probs = head_probabilities(trained.head, feats, self.test_idx, self.head, self.num_clips)
        pooled = feats.pooled.mean(axis=1)
        tokens = torch.from_numpy(feats.tokens[self.test_idx].astype(np.float32))  # (V, K, N, D)
        clip_means = torch.from_numpy(pooled[self.test_idx])
        return {
            "probe": float((probs.argmax(1) == self.labels[self.test_idx]).mean()),
            "knn": knn_accuracy(pooled[self.train_idx], self.labels[self.train_idx], pooled[self.test_idx],
                                self.labels[self.test_idx]),
            "heldout_token_rank": effective_rank(tokens),
            "heldout_clip_rank": effective_rank(clip_means),
            "heldout_std": feature_std(tokens),
            "heldout_local_share": local_share(tokens.reshape(-1, *tokens.shape[-2:])),
        }


def subsample_stratified(labels: np.ndarray, max_videos: int, seed: int) -> np.ndarray:
    """At most ``max_videos`` indices, the same share of every class, seeded; sorted."""
    if len(labels) <= max_videos:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = max(2, round(max_videos * len(members) / len(labels)))
        keep.append(rng.choice(members, min(count, len(members)), replace=False))
    return np.sort(np.concatenate(keep))


def build_monitor(cfg: Config, eval_data: str | Path, every: int = 0, max_videos: int = MONITOR_VIDEOS,
                  cache_dir: str | Path | None = None, progress: bool = True) -> ProbeMonitor:
    """A :class:`ProbeMonitor` on (a stratified subset of) the labelled videos at ``eval_data``.

    ``every`` = 0 lets the pretraining loop choose (about five readings per run)."""
    prepared = prepare_videos(load_videos(eval_data, require_labels=True), cfg, progress=progress,
                              cache_dir=cache_dir)
    labels = np.asarray(prepared.videos.labels)
    keep = subsample_stratified(labels, max_videos, cfg.train.seed)
    store = FrameStore([prepared.store.videos[i] for i in keep], prepared.store.settings, prepared.store.cache)
    return ProbeMonitor(store, labels[keep], every, seed=cfg.train.seed)
