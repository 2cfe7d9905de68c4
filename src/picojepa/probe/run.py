"""``picojepa probe``: train one classification head on a pretrained encoder, selected on validation, and
the same head on the same architecture at initialisation — the baseline that says whether pretraining
bought anything.

Videos that cannot be read are dropped before anything trains or is scored on them, listed in
``skipped.json`` with their reason, and more than ``data.max_bad_fraction`` of them is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.check import enforce_bad_fraction
from ..data.dataset import FrameStore
from ..data.decode import VideoError
from ..data.prepare import PreparedData, prepare_videos, skipped_records
from ..data.sources import Problem, load_videos
from ..data.splits import load_splits, save_splits, stratified_split
from ..errors import PicoJepaError
from ..metrics import paired_bootstrap_gap
from ..models import VideoViT
from ..progress import info, warn
from ..train.checkpoint import config_from_run, load_encoder
from ..train.pretrain import initial_encoder
from ..utils import resolve_device, write_json, write_text
from .classifier import (
    ProbeConfig,
    TrainedHead,
    VideoClassifier,
    finetune,
    head_probabilities,
    save_classifier,
    substore,
    train_head,
)
from .features import extract_features
from .heads import uses_pooled_features


@dataclass
class LabelledStore:
    store: FrameStore
    paths: list[str]
    labels: np.ndarray
    class_names: list[str]
    skipped: list[dict[str, Any]]


def readable_videos(prepared: PreparedData, cfg: Config, progress: bool) -> LabelledStore:
    """Every usable video whose frames can actually be read; the others listed with their reason.

    Cached stores were decoded in full already; without the cache each video is decoded once here, so a
    video that breaks half-way is caught before training rather than turned into zeros."""
    from ..progress import track

    store = prepared.store
    skipped = skipped_records(prepared.skipped, "scan")
    problems = list(prepared.skipped)
    keep = []
    lines = {str(item.path): item.line for item in prepared.videos.items}
    for i in track(range(len(store)), total=len(store), description="reading videos",
                   enabled=progress and store.cache is None):
        try:
            store.frames(i)
            keep.append(i)
        except VideoError as e:
            problem = Problem(e.path, e.reason, lines.get(e.path))
            problems.append(problem)
            skipped += skipped_records([problem], "decode")
            warn(f"skipping {problem}")
    enforce_bad_fraction(prepared.check.total, problems, cfg.data.max_bad_fraction, prepared.videos.source)
    labels = np.asarray(prepared.videos.labels)[keep]
    return LabelledStore(substore(store, np.asarray(keep, dtype=int)),
                         [str(prepared.videos.items[i].path) for i in keep], labels,
                         list(prepared.videos.class_names or []), skipped)


def _splits(data: LabelledStore, splits: Path | None, probe: ProbeConfig, out: Path, source: Path
            ) -> dict[str, np.ndarray]:
    position = {p: i for i, p in enumerate(data.paths)}
    if splits is None:
        idx = stratified_split(data.labels, seed=probe.seed, class_names=data.class_names)
        save_splits(out / "splits.json", data.paths, data.labels, data.class_names, idx, seed=probe.seed)
        return idx
    saved = load_splits(splits)
    missing = [v for part in saved.splits.values() for v in part if v not in position]
    if missing:
        raise PicoJepaError(f"{len(missing)} video(s) of {splits} are not usable videos of {source}, "
                            f"e.g. {missing[0]} (see {out / 'skipped.json'})")
    return {k: np.asarray(sorted(position[v] for v in saved.splits[k]), dtype=int) for k in saved.splits}


def _train_and_score(encoder: VideoViT, data: LabelledStore, idx: dict[str, np.ndarray], cfg: Config,
                     probe: ProbeConfig, device: torch.device, progress: bool, label: str
                     ) -> tuple[VideoClassifier, TrainedHead, np.ndarray]:
    """Fit on train (epoch chosen on validation); return the classifier and its test probabilities."""
    if probe.finetune:
        clf, trained = finetune(encoder, data.store, data.labels, idx["train"], idx["val"], data.class_names, cfg,
                                probe, device, progress)
        return clf, trained, clf.predict_proba(substore(data.store, idx["test"]))
    feats = extract_features(encoder, data.store, probe.num_clips, keep_tokens=not uses_pooled_features(probe.head),
                             progress=progress, description=f"features ({label})")
    if not feats.ok.all():  # read once already, so only a video that changed since can land here
        bad = ", ".join(f"{data.paths[i]}: {reason}" for i, reason in feats.failed[:3])
        raise PicoJepaError(f"{len(feats.failed)} video(s) became unreadable during feature extraction: {bad}")
    trained = train_head(feats, data.labels, idx["train"], idx["val"], len(data.class_names), probe)
    clf = VideoClassifier(encoder, trained.head, probe.head, data.class_names, cfg, probe.num_clips)
    return clf, trained, head_probabilities(trained.head, feats, idx["test"], probe.head, probe.num_clips)


def run_probe(encoder_dir: Path, data: Path, out: Path, probe: ProbeConfig, splits: Path | None = None,
              device: str = "auto", cache_dir: Path | None = None, progress: bool = True,
              max_bad_fraction: float | None = None, baseline: bool = True) -> dict[str, Any]:
    cfg = config_from_run(encoder_dir)
    cfg.train.device = device
    if max_bad_fraction is not None:
        cfg.data.max_bad_fraction = max_bad_fraction
    dev = resolve_device(device)
    encoder = load_encoder(encoder_dir, dev)
    prepared = prepare_videos(load_videos(data, require_labels=True), cfg, progress=progress, cache_dir=cache_dir)
    labelled = readable_videos(prepared, cfg, progress)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "skipped.json", labelled.skipped)
    idx = _splits(labelled, splits, probe, out, data)
    y_test = labelled.labels[idx["test"]]

    clf, trained, test_probs = _train_and_score(encoder, labelled, idx, cfg, probe, dev, progress, "pretrained")
    test_pred = test_probs.argmax(1)
    test_acc = float((test_pred == y_test).mean()) if len(y_test) else float("nan")
    save_classifier(out, clf, encoder_dir, probe, trained, test_accuracy=test_acc,
                    train_videos=[labelled.paths[i] for i in idx["train"]])
    summary: dict[str, Any] = {
        "encoder": str(encoder_dir), "head": probe.head, "finetune": probe.finetune, "classes": labelled.class_names,
        "train": len(idx["train"]), "val": len(idx["val"]), "test": len(idx["test"]),
        "skipped": len(labelled.skipped), "best_epoch": trained.best_epoch, "epochs_chosen": trained.epochs_text,
        "heads": 1 if probe.finetune else len(probe.heads), "val_accuracy": trained.val_accuracy,
        "test_accuracy": test_acc, "chance": 1.0 / len(labelled.class_names)}
    line = (f"head {probe.head}: best epoch {trained.epochs_text}, validation {trained.val_accuracy:.3f}, "
            f"test {test_acc:.3f}")
    if baseline and len(y_test):
        _, base_trained, base_probs = _train_and_score(initial_encoder(cfg).to(dev), labelled, idx, cfg, probe, dev,
                                                       progress, "random init")
        gain = paired_bootstrap_gap(y_test, test_pred, base_probs.argmax(1), seed=probe.seed)
        summary.update(random_init_test_accuracy=float((base_probs.argmax(1) == y_test).mean()),
                       random_init_best_epoch=base_trained.best_epoch,
                       random_init_epochs_chosen=base_trained.epochs_text, pretraining_gain=gain)
        low, high = gain["ci95"]
        line += (f"; random-init encoder {summary['random_init_test_accuracy']:.3f} → pretraining gain "
                 f"{100 * gain['mean']:+.1f} pp [95 % CI {100 * low:+.1f}, {100 * high:+.1f}]")
    write_json(out / "probe.json", summary)
    write_text(out / "report.md", _markdown(summary))
    info(line)
    return summary


def _markdown(summary: dict[str, Any]) -> str:
    tuned = " (fine-tuned)" if summary["finetune"] else ""
    lines = ["# pico-JEPA probe", "",
             f"Encoder `{summary['encoder']}`, head `{summary['head']}`{tuned}; "
             f"{len(summary['classes'])} classes (chance {100 * summary['chance']:.1f} %); videos: train "
             f"{summary['train']}, validation {summary['val']}, test {summary['test']}, skipped {summary['skipped']} "
             "(see skipped.json).", "",
             *_heads_sentence(summary),
             "| encoder | test accuracy (%) | epoch chosen on validation |", "| :--- | ---: | ---: |",
             f"| pretrained | {100 * summary['test_accuracy']:.1f} | {summary['epochs_chosen']} |"]
    if "pretraining_gain" in summary:
        gain = summary["pretraining_gain"]
        lines.append(f"| random init (same architecture and seed) | {100 * summary['random_init_test_accuracy']:.1f} "
                     f"| {summary['random_init_epochs_chosen']} |")
        lines += ["", f"Pretraining gain: {100 * gain['mean']:+.1f} pp, paired bootstrap 95 % CI "
                      f"[{100 * gain['ci95'][0]:+.1f}, {100 * gain['ci95'][1]:+.1f}] over the test videos."]
    return "\n".join(lines) + "\n"


def _heads_sentence(summary: dict[str, Any]) -> list[str]:
    if summary["heads"] == 1:
        return []
    return [f"The head is the mean of {summary['heads']} heads over a (learning rate, weight decay) grid, each "
            "from its own initialisation and at its own epoch chosen on validation (epochs listed in that "
            "order).", ""]
