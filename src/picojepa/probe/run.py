"""``picojepa probe``: train one classification head on a pretrained encoder, selected on validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..data.prepare import prepare_videos
from ..data.sources import load_videos
from ..data.splits import load_splits, save_splits, stratified_split
from ..errors import PicoJepaError
from ..progress import info
from ..train.checkpoint import config_from_run, load_encoder
from ..utils import resolve_device
from .classifier import (
    ProbeConfig,
    VideoClassifier,
    finetune,
    head_probabilities,
    save_classifier,
    substore,
    train_head,
)
from .features import extract_features
from .heads import uses_pooled_features


def run_probe(encoder_dir: Path, data: Path, out: Path, probe: ProbeConfig, splits: Path | None = None,
              device: str = "auto", cache_dir: Path | None = None, progress: bool = True) -> dict[str, Any]:
    cfg = config_from_run(encoder_dir)
    cfg.train.device = device
    dev = resolve_device(device)
    encoder = load_encoder(encoder_dir, dev)
    prepared = prepare_videos(load_videos(data, require_labels=True), cfg, progress=progress, cache_dir=cache_dir)
    paths = [str(item.path) for item in prepared.videos.items]
    labels = np.asarray(prepared.videos.labels)
    class_names = list(prepared.videos.class_names or [])
    position = {p: i for i, p in enumerate(paths)}
    if splits is not None:
        saved = load_splits(splits)
        missing = [v for part in saved.splits.values() for v in part if v not in position]
        if missing:
            raise PicoJepaError(f"{len(missing)} video(s) of {splits} are not usable videos of {data}, "
                                f"e.g. {missing[0]}")
        idx = {k: np.asarray(sorted(position[v] for v in saved.splits[k]), dtype=int) for k in saved.splits}
    else:
        idx = stratified_split(labels, seed=probe.seed, class_names=class_names)
        out.mkdir(parents=True, exist_ok=True)
        save_splits(out / "splits.json", paths, labels, class_names, idx, seed=probe.seed)
    if probe.finetune:
        clf, trained = finetune(encoder, prepared.store, labels, idx["train"], idx["val"], class_names, cfg, probe,
                                dev, progress)
        test_probs = clf.predict_proba(substore(prepared.store, idx["test"]))
    else:
        feats = extract_features(encoder, prepared.store, probe.num_clips,
                                 keep_tokens=not uses_pooled_features(probe.head), progress=progress)
        trained = train_head(feats, labels, idx["train"], idx["val"], len(class_names), probe)
        clf = VideoClassifier(encoder, trained.head, probe.head, class_names, cfg, probe.num_clips)
        test_probs = head_probabilities(trained.head, feats, idx["test"], probe.head, probe.num_clips)
    test_acc = float((test_probs.argmax(1) == labels[idx["test"]]).mean()) if len(idx["test"]) else float("nan")
    save_classifier(out, clf, encoder_dir, probe, trained, test_accuracy=test_acc,
                    train_videos=[paths[i] for i in idx["train"]])
    summary = {"classes": class_names, "train": len(idx["train"]), "val": len(idx["val"]), "test": len(idx["test"]),
               "best_epoch": trained.best_epoch, "val_accuracy": trained.val_accuracy, "test_accuracy": test_acc}
    info(f"head {probe.head}: best epoch {trained.best_epoch}, validation accuracy {trained.val_accuracy:.3f}, "
         f"test accuracy {test_acc:.3f}")
    return summary

