"""Video classifiers on a pico-JEPA encoder: heads trained on cached frozen features (seconds), or
fine-tuned together with their own copy of the encoder.

A classifier folder holds ``classifier.safetensors`` (head, plus the encoder when fine-tuned) and
``config.json`` (encoder reference with its checksum, head type, class names in order).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Config
from ..data.dataset import FrameStore, clip_indices
from ..data.transforms import random_resized_crop_params, train_transform
from ..errors import CheckpointError, ConfigError
from ..models import VideoViT
from ..train.checkpoint import ENCODER_FILE, config_from_run, load_encoder, load_state_strict
from ..utils import atomic_write, write_json
from .features import Features, encode_clips, extract_features
from .heads import HEAD_TYPES, HeadEnsemble, LinearHead, make_head, uses_pooled_features

CLASSIFIER_FILE = "classifier.safetensors"
PROBE_GRID: tuple[tuple[float, float], ...] = ((3e-4, 0.05), (3e-4, 0.5), (1e-3, 0.05), (1e-3, 0.5))


@dataclass
class ProbeConfig:
    head: str = "attentive"
    epochs: int = 60
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    # Frozen evaluation trains one head per (lr, weight decay) of this grid, each with its own best epoch
    # on validation, and averages their probabilities; empty: one head at (lr, weight_decay). A validation
    # split of a few hundred videos cannot rank single heads — seeds and learning rates alone move a
    # head's test accuracy by ±5 pp — and V-JEPA's evaluation sweeps the probe's hyper-parameters too.
    grid: tuple[tuple[float, float], ...] = PROBE_GRID
    # Heads per grid point. Every head starts from its own initialisation (and batch order): an attentive
    # head's seed alone moves its test accuracy by up to ±6 pp on the demo's features, and heads sharing a
    # seed share that draw.
    inits: int = 1
    num_clips: int = 4  # evenly spaced clips per video at evaluation (probabilities averaged)
    finetune: bool = False  # fine-tuning trains one head at (lr, weight_decay)
    encoder_lr_scale: float = 0.1  # fine-tuning: encoder LR = lr × this
    seed: int = 0

    def __post_init__(self) -> None:
        if self.head not in HEAD_TYPES:
            raise ConfigError(f"unknown head {self.head!r}; choose one of: {', '.join(HEAD_TYPES)}")
        if self.epochs < 1 or self.batch_size < 1 or self.num_clips < 1 or self.inits < 1:
            raise ConfigError("epochs, batch size, number of clips and initialisations must be ≥ 1")
        if self.finetune and self.inits > 1:
            raise ConfigError("fine-tuning trains one head; several initialisations apply to frozen-feature heads")
        self.grid = tuple((float(lr), float(wd)) for lr, wd in self.grid)
        if any(lr <= 0 or wd < 0 for lr, wd in (*self.grid, (self.lr, self.weight_decay))):
            raise ConfigError("head learning rates must be > 0 and weight decays ≥ 0")

    @property
    def heads(self) -> list[tuple[float, float, int]]:
        """(lr, weight decay, seed) of every head trained on frozen features: each grid point (or the one
        (lr, weight_decay) without a grid) ``inits`` times, initialisation by initialisation. The first head
        keeps ``seed``; every other one gets its own seed derived from it."""
        points = [point for _ in range(self.inits) for point in self.grid or ((self.lr, self.weight_decay),)]
        return [(lr, wd, head_seed(self.seed, i)) for i, (lr, wd) in enumerate(points)]


def head_seed(seed: int, index: int) -> int:
    """The seed of head ``index`` of an ensemble; distinct per index, so no two heads share an initialisation."""
    return seed if index == 0 else int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


@dataclass
class TrainedHead:
    head: nn.Module
    best_epoch: int  # an ensemble's: its members' latest
    val_accuracy: float
    history: list[dict[str, Any]] = field(default_factory=list)
    member_epochs: list[int] = field(default_factory=list)  # an ensemble's members' best epochs
    steps: int = 0  # optimiser steps run to train it (an ensemble's: all its members')

    @property
    def epochs_text(self) -> str:
        return "/".join(map(str, self.member_epochs)) if self.member_epochs else str(self.best_epoch)


class EpochSelector:
    """Keeps the state of the epoch with the best validation accuracy (ties: lower validation loss);
    without validation videos, the last epoch — the only honest choice."""

    def __init__(self) -> None:
        self.best: tuple[float, float] | None = None
        self.state: dict[str, Any] | None = None
        self.epoch = 0

    def consider(self, epoch: int, module: nn.Module, probs: np.ndarray | None, y: np.ndarray) -> dict[str, float]:
        if probs is None or not len(y):
            self.state, self.epoch = copy.deepcopy(module.state_dict()), epoch
            return {}
        acc = float((probs.argmax(1) == y).mean())
        nll = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
        if self.best is None or (acc, -nll) > self.best:
            self.best, self.state, self.epoch = (acc, -nll), copy.deepcopy(module.state_dict()), epoch
        return {"val_accuracy": acc, "val_loss": nll}

    @property
    def accuracy(self) -> float:
        return self.best[0] if self.best else float("nan")


def clip_probabilities(logits: torch.Tensor, num_clips: int) -> torch.Tensor:
    """(V·K, C) clip logits → (V, C) video probabilities: the mean of the K clips' softmax."""
    return logits.float().softmax(dim=-1).view(-1, num_clips, logits.shape[-1]).mean(dim=1)


def _inputs(features: Features, index: np.ndarray, pooled: bool) -> torch.Tensor:
    """Per-clip inputs (n·K, D) or (n·K, N, D) of the given videos."""
    if pooled:
        x = features.pooled[index]
        return torch.from_numpy(x.reshape(-1, x.shape[-1]))
    if features.tokens is None:
        raise ValueError("token features are needed for an attentive head (extract with keep_tokens=True)")
    x = features.tokens[index]
    return torch.from_numpy(x.reshape(-1, *x.shape[-2:])).float()


def _head_logits(head: nn.Module, x: torch.Tensor, pooled: bool, batch: int = 512) -> torch.Tensor:
    device = next(head.parameters()).device
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i: i + batch].to(device)
        outs.append((head.pooled(chunk) if pooled else head(chunk)).cpu())
    return torch.cat(outs) if outs else torch.empty(0)


@torch.no_grad()
def head_probabilities(head: nn.Module, features: Features, index: np.ndarray, kind: str,
                       num_clips: int) -> np.ndarray:
    head.eval()
    pooled = uses_pooled_features(kind)
    return clip_probabilities(_head_logits(head, _inputs(features, index, pooled), pooled), num_clips).numpy()


def train_head(features: Features, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
               num_classes: int, cfg: ProbeConfig, device: str | torch.device = "cpu") -> TrainedHead:
    """Train one head per (lr, weight decay, seed) of ``cfg.heads`` on cached per-clip features, each keeping
    the epoch with the best validation accuracy (ties: lower validation loss); several are returned as a
    :class:`HeadEnsemble`. The test split never enters this function. The head is on the CPU, wherever it
    trained."""
    with _one_cpu_thread(device):
        runs = [_train_one(features, labels, train_idx, val_idx, num_classes, cfg, lr, wd, seed, device)
                for lr, wd, seed in cfg.heads]
    if len(runs) == 1:
        return runs[0]
    head = HeadEnsemble([run.head for run in runs]).eval()
    history = [{"lr": lr, "weight_decay": wd, "seed": seed, "best_epoch": run.best_epoch,
                "val_accuracy": run.val_accuracy, "epochs": run.history}
               for (lr, wd, seed), run in zip(cfg.heads, runs, strict=True)]
    accuracy = float("nan")
    if len(val_idx):
        probs = head_probabilities(head, features, val_idx, cfg.head, features.pooled.shape[1])
        accuracy = float((probs.argmax(1) == labels[val_idx]).mean())
    return TrainedHead(head, max(run.best_epoch for run in runs), accuracy, history, [run.best_epoch for run in runs],
                       sum(run.steps for run in runs))


@contextmanager
def _one_cpu_thread(device: str | torch.device) -> Iterator[None]:
    """Heads train on one CPU thread. Their steps are tiny matmuls that a second thread barely speeds up, while
    OpenMP threads spin-waiting on cores that other work holds made head training 10-30x slower on a busy
    machine (bench/speed/probe_head.py --threads-sweep)."""
    before = torch.get_num_threads()
    if torch.device(device).type != "cpu" or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_one(features: Features, labels: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
               num_classes: int, cfg: ProbeConfig, lr: float, weight_decay: float, seed: int,
               device: str | torch.device) -> TrainedHead:
    torch.manual_seed(seed)
    device = torch.device(device)
    pooled = uses_pooled_features(cfg.head)
    K = features.pooled.shape[1]
    x_train = _inputs(features, train_idx, pooled).to(device)
    y_train = torch.from_numpy(np.repeat(labels[train_idx], K)).long().to(device)
    head = make_head(cfg.head, features.pooled.shape[-1], num_classes)
    if isinstance(head, LinearHead):
        pooled_train = torch.from_numpy(features.pooled[train_idx].reshape(-1, features.pooled.shape[-1]))
        head.mean.copy_(pooled_train.mean(dim=0))
        head.std.copy_(pooled_train.std(dim=0).clamp_min(1e-6) if len(pooled_train) > 1 else torch.ones_like(head.std))
    head.to(device)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, -(-len(x_train) // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    selector, history, steps = EpochSelector(), [], 0
    for epoch in range(cfg.epochs):
        head.train()
        order = torch.randperm(len(x_train), generator=gen).to(device)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            b = order[i: i + cfg.batch_size]
            logits = head.pooled(x_train[b]) if pooled else head(x_train[b])
            loss = F.cross_entropy(logits, y_train[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
            total += float(loss.detach()) * len(b)
        probs = head_probabilities(head, features, val_idx, cfg.head, K) if len(val_idx) else None
        scores = selector.consider(epoch + 1, head, probs, labels[val_idx])
        history.append({"epoch": epoch + 1, "train_loss": total / len(order), **scores})
    head.load_state_dict(selector.state)
    head.cpu().eval()
    return TrainedHead(head, selector.epoch, selector.accuracy, history, steps=steps)


class VideoClassifier(nn.Module):
    """Encoder + head; ``predict_proba`` averages the softmax of K evenly spaced clips per video."""

    def __init__(self, encoder: VideoViT, head: nn.Module, head_kind: str, class_names: list[str],
                 encoder_cfg: Config, num_clips: int = 4) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head
        self.head_kind, self.class_names, self.cfg, self.num_clips = head_kind, class_names, encoder_cfg, num_clips

    @torch.no_grad()
    def proba_from_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips (V·K, T, S, S, 3) → (V, C) probabilities."""
        return self.proba_from_tokens(self.tokens_from_clips(clips))

    @torch.no_grad()
    def tokens_from_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """uint8 clips (V·K, T, S, S, 3) → encoder tokens (V·K, N, D); heads on one encoder can share them."""
        self.eval()
        return encode_clips(self.encoder, clips, next(self.encoder.parameters()).device)

    @torch.no_grad()
    def proba_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        self.eval()
        logits = self.head.pooled(tokens.mean(1)) if uses_pooled_features(self.head_kind) else self.head(tokens)
        return clip_probabilities(logits, self.num_clips)

    @torch.no_grad()
    def predict_proba(self, store: FrameStore, progress: bool = False) -> np.ndarray:
        """(V, C) probabilities for every video of a frame store; rows of failed videos are NaN."""
        features = extract_features(self.encoder, store, self.num_clips, keep_tokens=not uses_pooled_features(
            self.head_kind), progress=progress)
        probs = np.full((len(store), len(self.class_names)), np.nan)
        index = np.flatnonzero(features.ok)
        probs[index] = head_probabilities(self.head, features, index, self.head_kind, self.num_clips)
        return probs


def finetune(encoder: VideoViT, store: FrameStore, labels: np.ndarray, train_idx: np.ndarray,
             val_idx: np.ndarray, class_names: list[str], encoder_cfg: Config, cfg: ProbeConfig,
             device: torch.device, progress: bool = True) -> tuple[VideoClassifier, TrainedHead]:
    """Train a copy of the encoder together with the head on augmented random clips."""
    from ..progress import track

    torch.manual_seed(cfg.seed)
    encoder = copy.deepcopy(encoder).to(device).train()
    head = make_head(cfg.head, encoder.embed_dim, len(class_names)).to(device)
    clf = VideoClassifier(encoder, head, cfg.head, class_names, encoder_cfg, cfg.num_clips)
    opt = torch.optim.AdamW([
        {"params": encoder.parameters(), "lr": cfg.lr * cfg.encoder_lr_scale},
        {"params": head.parameters(), "lr": cfg.lr},
    ], weight_decay=cfg.weight_decay)
    T, size, d = encoder.cfg.num_frames, encoder.cfg.img_size, encoder_cfg.data
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    selector, history = EpochSelector(), []
    for epoch in track(range(cfg.epochs), total=cfg.epochs, description="fine-tuning", enabled=progress):
        clf.train()
        order = rng.permutation(train_idx)
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            batch = order[i: i + cfg.batch_size]
            clips = []
            for v in batch:
                frames = store.frames(int(v))
                start = int(rng.integers(0, max(1, len(frames) - T + 1)))
                clips.append(torch.from_numpy(np.ascontiguousarray(frames[clip_indices(len(frames), T, start)])))
            # No flips: a mirrored clip of "move left" is a clip of "move right" (labels can be directional).
            params = random_resized_crop_params(len(batch), (d.min_scale, d.max_scale), (3 / 4, 4 / 3), False, gen)
            video = train_transform(torch.stack(clips).to(device), size, params)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                logits = head(encoder(video)) if not uses_pooled_features(cfg.head) else head.pooled(
                    encoder(video).mean(1))
            loss = F.cross_entropy(logits.float(), torch.from_numpy(labels[batch]).long().to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        probs = clf.predict_proba(substore(store, val_idx)) if len(val_idx) else None
        scores = selector.consider(epoch + 1, clf, probs, labels[val_idx])
        history.append({"epoch": epoch + 1, "train_loss": total / max(len(order), 1), **scores})
    clf.load_state_dict(selector.state)
    clf.eval()
    return clf, TrainedHead(clf.head, selector.epoch, selector.accuracy, history)


def substore(store: FrameStore, index: np.ndarray) -> FrameStore:
    return FrameStore([store.videos[int(i)] for i in index], store.settings, store.cache)


# ---------------------------------------------------------------------------------------- files
def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_classifier(out: Path, clf: VideoClassifier, encoder_dir: Path | None, probe_cfg: ProbeConfig,
                    trained: TrainedHead, **meta: Any) -> None:
    """Write ``classifier.safetensors`` + ``config.json``; the encoder is embedded only when fine-tuned."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in clf.head.state_dict().items()}
    if probe_cfg.finetune or encoder_dir is None:
        tensors.update({f"encoder.{k}": v.detach().cpu().contiguous() for k, v in clf.encoder.state_dict().items()})
    atomic_write(out / CLASSIFIER_FILE, lambda p: save_file(tensors, str(p)))
    encoder_ref = None
    if encoder_dir is not None:
        encoder_dir = Path(encoder_dir).resolve()
        encoder_ref = {"run_dir": str(encoder_dir), "sha256": file_sha256(encoder_dir / ENCODER_FILE)}
    write_json(out / "config.json", {
        "kind": "picojepa-classifier", "encoder": encoder_ref, "encoder_embedded": encoder_ref is None
        or probe_cfg.finetune, "encoder_config": clf.cfg.to_dict(), "head": clf.head_kind,
        "class_names": clf.class_names, "num_clips": clf.num_clips, "probe": dataclasses.asdict(probe_cfg),
        "head_members": len(clf.head.members) if isinstance(clf.head, HeadEnsemble) else 1,
        "best_epoch": trained.best_epoch, "val_accuracy": trained.val_accuracy, "history": trained.history, **meta,
    })


def read_classifier_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{path} is not a classifier folder (no config.json)")
    meta = json.loads(cfg_path.read_text())
    if meta.get("kind") != "picojepa-classifier":
        raise CheckpointError(f"{path} is not a classifier folder (config.json is not a classifier's)")
    return meta


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> VideoClassifier:
    """Load a classifier folder; refuses a changed encoder or any tensor mismatch."""
    path = Path(path)
    meta = read_classifier_config(path)
    try:
        tensors = load_file(str(path / CLASSIFIER_FILE))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path / CLASSIFIER_FILE} is missing or unreadable: {e}") from e
    encoder_cfg = Config.from_dict(meta["encoder_config"])
    if meta.get("encoder_embedded"):
        encoder = VideoViT(encoder_cfg.model)
        load_state_strict(encoder, {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")},
                          f"{path / CLASSIFIER_FILE} (encoder)")
    else:
        ref = meta["encoder"]
        run_dir = Path(ref["run_dir"])
        if not (run_dir / ENCODER_FILE).is_file():
            raise CheckpointError(f"{path}: its encoder {run_dir} is missing (moved or deleted?)")
        if file_sha256(run_dir / ENCODER_FILE) != ref["sha256"]:
            raise CheckpointError(f"{path}: the encoder in {run_dir} changed since this head was trained")
        if config_from_run(run_dir).model != encoder_cfg.model:
            raise CheckpointError(f"{path}: the encoder config in {run_dir} differs from the one recorded")
        encoder = load_encoder(run_dir)
    head = make_head(meta["head"], encoder.embed_dim, len(meta["class_names"]), int(meta.get("head_members", 1)))
    load_state_strict(head, {k[5:]: v for k, v in tensors.items() if k.startswith("head.")},
                      f"{path / CLASSIFIER_FILE} (head)")
    clf = VideoClassifier(encoder, head, meta["head"], list(meta["class_names"]), encoder_cfg, int(meta["num_clips"]))
    return clf.to(device).eval()
