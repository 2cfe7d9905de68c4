"""One member's head, as a job any backend can run: train (or reuse) the head, save the classifier,
return its validation and test probabilities.

A finished member leaves ``<out>/members/<name>.npz`` (written last, atomically) holding its
probabilities and a key of everything they depend on — the encoder's checksum, the probe settings, the
split and the labels — so a rerun reuses it, and a changed input retrains it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config
from ..ensemble.report import RANDOM_INIT
from ..models import VideoViT
from ..probe.classifier import (
    ProbeConfig,
    TrainedHead,
    VideoClassifier,
    file_sha256,
    head_probabilities,
    save_classifier,
    train_head,
)
from ..probe.features import Features
from ..train import load_encoder
from ..train.checkpoint import ENCODER_FILE
from ..utils import atomic_write
from .backends import mark_reused
from .settings import ALL_LABELS_MODES, ExperimentSettings, LabelledData, Member


@dataclass
class MemberOutcome:
    val_probs: np.ndarray  # (V_val_fit, C): the validation half used by the second-level fits
    test_probs: np.ndarray  # (V_test, C)
    meta: dict[str, Any]  # head, encoder, train_videos, best_epoch, val_accuracy


def train_idx_of(member: Member, data: LabelledData, mode: str) -> np.ndarray:
    """General and the random-init baseline train their heads on the whole training split, Partial i on
    shard i — or on the whole training split too in the deep, compute-matched and domains protocols."""
    if member.name in ("general", RANDOM_INIT) or mode in ALL_LABELS_MODES:
        return data.split_idx["train"]
    return data.shard_idx[int(member.name.split("_")[1]) - 1]


def member_job(member: Member, features: Features, data: LabelledData, settings: ExperimentSettings, out: Path,
               encoder_dir: Path, cfg: Config) -> MemberOutcome:
    train_idx = train_idx_of(member, data, settings.mode)
    select, val, test = data.val_select, data.val_fit, data.split_idx["test"]
    probe = ProbeConfig(head=member.head, epochs=settings.probe_epochs, num_clips=settings.num_clips,
                        seed=member.seed, grid=settings.head_grid, inits=settings.probe_inits)
    record = out / "members" / f"{member.name}.npz"
    key = _key(encoder_dir, probe, data, train_idx)
    if (found := _load(record, key)) is not None and (out / "classifiers" / member.name / "config.json").is_file():
        mark_reused()
        return found
    trained = train_head(features, data.labels, train_idx, select, len(data.class_names), probe)
    outcome = MemberOutcome(
        head_probabilities(trained.head, features, val, member.head, settings.num_clips),
        head_probabilities(trained.head, features, test, member.head, settings.num_clips),
        {"head": member.head, "encoder": member.encoder, "train_videos": len(train_idx),
         "head_steps": trained.steps, "best_epoch": trained.best_epoch, "val_accuracy": trained.val_accuracy})
    _save_member(out, member, trained, probe, encoder_dir, cfg, data, train_idx)
    _store(record, key, outcome)
    return outcome


def _save_member(out: Path, member: Member, trained: TrainedHead, probe: ProbeConfig, encoder_dir: Path,
                 cfg: Config, data: LabelledData, train_idx: np.ndarray) -> None:
    stat = (encoder_dir / ENCODER_FILE).stat()
    encoder = _encoder(str(encoder_dir), stat.st_mtime_ns, stat.st_size)
    clf = VideoClassifier(encoder, trained.head, member.head, data.class_names, cfg, probe.num_clips)
    save_classifier(out / "classifiers" / member.name, clf, encoder_dir, probe, trained,
                    train_videos=[data.paths[i] for i in train_idx])


@functools.lru_cache(maxsize=4)
def _encoder(encoder_dir: str, mtime_ns: int, size: int) -> VideoViT:
    """Members sharing an encoder read it once per process (the file's identity is part of the key)."""
    return load_encoder(encoder_dir)


def _key(encoder_dir: Path, probe: ProbeConfig, data: LabelledData, train_idx: np.ndarray) -> str:
    # probe.heads: every head's (lr, weight decay, seed), so a change in how head seeds are drawn retrains
    parts = [file_sha256(encoder_dir / ENCODER_FILE), dataclasses.asdict(probe), probe.heads, train_idx.tolist(),
             data.val_select.tolist(), data.val_fit.tolist(), data.split_idx["test"].tolist(),
             np.asarray(data.labels).tolist(),
             data.class_names, data.paths]
    return hashlib.sha1(json.dumps(parts, default=str).encode()).hexdigest()


def _store(path: Path, key: str, outcome: MemberOutcome) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, val=outcome.val_probs, test=outcome.test_probs, key=np.asarray(key),
             meta=np.asarray(json.dumps(outcome.meta)))
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def _load(path: Path, key: str) -> MemberOutcome | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        meta = json.loads(str(z["meta"]))
        if str(z["key"]) != key or "head_steps" not in meta:  # a record from before head steps were counted
            return None
        return MemberOutcome(z["val"], z["test"], meta)
