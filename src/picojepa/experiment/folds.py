"""``experiment --folds K``: for labelled sets too small for one test split. Every video is tested exactly once:
the set is cut into K class-stratified folds (whole groups per fold with ``--group-by``: leave groups out),
fold k is the test split of run k and the other folds are its training and validation videos. Each run is a
whole experiment (pretraining pool, encoders, heads, aggregations) in ``out/fold_k``; the report pools the K
runs' test predictions into one ``predictions.csv`` and scores it as one test set of every video.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..config import load_config
from ..data.prepare import prepare_videos
from ..data.sources import load_videos
from ..data.splits import SPLIT_NAMES, assign_parts, group_keys, save_splits, stratified_folds, stratified_shards
from ..ensemble.report import display_name, read_predictions_csv, recompute_from_predictions
from ..errors import ConfigError, DataError
from ..utils import write_json, write_text
from .run import ExperimentResult, run_experiment
from .settings import ExperimentSettings


def fold_splits(labels: np.ndarray, k: int, seed: int, fractions: tuple[float, float, float],
                groups: list[str] | None, class_names: list[str]) -> list[dict[str, np.ndarray]]:
    """K (train, val, test) splits: test is fold k; the rest goes to train and validation in the ratio of the
    first two ``fractions``, by whole groups when there are groups."""
    folds = stratified_folds(labels, k, seed, groups, class_names)
    share = np.asarray(fractions[:2]) / sum(fractions[:2])
    splits = []
    for i, test in enumerate(folds):
        rest = np.setdiff1d(np.arange(len(labels)), test)
        rest_groups = [groups[j] for j in rest] if groups is not None else [str(j) for j in rest]
        part = assign_parts(labels[rest], rest_groups, share, seed + 1 + i, ["train", "val"], class_names)
        splits.append({"train": rest[part == 0], "val": rest[part == 1], "test": np.sort(test)})
    return splits


def run_folds(settings: ExperimentSettings, out: str | Path, folds: int, cache_dir: str | Path | None = None,
              **kwargs: Any) -> dict[str, Any]:
    """Run the experiment once per fold into ``out/fold_<k>`` and pool the folds' test predictions."""
    if folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    out = Path(out)
    base = load_config(settings.preset, settings.config, settings.overrides)
    labelled = load_videos(settings.data, require_labels=True)
    prepared = prepare_videos(labelled, base, progress=kwargs.get("progress", True), cache_dir=cache_dir)
    paths = [str(item.path) for item in prepared.videos.items]
    labels = np.asarray(prepared.videos.labels)
    class_names = list(prepared.videos.class_names or [])
    groups = [str(g) for g in group_keys(paths, settings.group_by)] if settings.group_by else None
    results: list[ExperimentResult] = []
    for k, split in enumerate(fold_splits(labels, folds, settings.seed, settings.fractions, groups, class_names)):
        fold_out = out / f"fold_{k + 1}"
        fold_out.mkdir(parents=True, exist_ok=True)
        if not (fold_out / "splits.json").exists():  # a rerun reuses the fold's split, as a single run does
            shards = stratified_shards(split["train"], labels, settings.members, seed=settings.seed,
                                       class_names=class_names)
            save_splits(fold_out / "splits.json", paths, labels, class_names, split, shards=shards,
                        seed=settings.seed)
        results.append(run_experiment(dataclasses.replace(settings), fold_out, cache_dir=cache_dir, **kwargs))
    summary = pool_folds([r.out for r in results], settings)
    write_json(out / "folds.json", summary)
    write_text(out / "folds.md", render_folds(summary))
    return summary


def pool_folds(fold_dirs: list[Path], settings: ExperimentSettings) -> dict[str, Any]:
    """One ``predictions.csv`` of every fold's test videos (each video once) next to the folds, and the report's
    metrics recomputed from it: accuracies, the pretraining gain and every gap over all the videos."""
    header, rows, seen = None, [], set()
    for fold in fold_dirs:
        lines = (fold / "predictions.csv").read_text().splitlines()
        if header is None:
            header = lines[0]
        elif lines[0] != header:
            raise DataError(f"{fold}/predictions.csv has other columns than the first fold's")
        videos = {line.split(",", 1)[0] for line in lines[1:]}
        if videos & seen:
            raise DataError(f"{fold} tests videos another fold tested: the folds are not disjoint")
        seen |= videos
        rows += lines[1:]
    pooled = fold_dirs[0].parent / "predictions.csv"
    write_text(pooled, "\n".join([header or "", *rows]) + "\n")
    metrics = recompute_from_predictions(pooled, n_resamples=settings.bootstrap, seed=settings.seed)
    per_fold = []
    for fold in fold_dirs:
        outputs = read_predictions_csv(fold / "predictions.csv")
        per_fold.append({"fold": fold.name, "test_videos": len(outputs.videos),
                         "accuracy": {name: float((p == outputs.y).mean()) for name, p in outputs.preds.items()}})
    return {"folds": len(fold_dirs), "videos": metrics["n_test"], "per_fold": per_fold, "pooled": metrics,
            "predictions_csv": str(pooled), "split_names": list(SPLIT_NAMES), "group_by": settings.group_by}


def _pp(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def render_folds(summary: dict[str, Any]) -> str:
    pooled, k = summary["pooled"], summary["folds"]
    buffer = io.StringIO()
    grouped = f", whole groups per fold (`--group-by {summary['group_by']}`)" if summary["group_by"] else ""
    buffer.write(f"# pico-JEPA experiment, {k} folds{grouped}\n\n"
                 f"Every one of the {summary['videos']} labelled videos was tested once, by the run that did not "
                 f"train or select on it; the folds' test predictions are pooled (`predictions.csv`) and scored "
                 f"as one test set. Intervals: paired bootstrap over the pooled videos (test sampling only).\n\n")
    gain = pooled.get("pretraining_gain")
    if gain:
        buffer.write(f"**Pretraining gain** (General − random init): {_pp(gain['mean'])} pp "
                     f"[95 % CI {_pp(gain['ci95'][0])}, {_pp(gain['ci95'][1])}]\n\n")
    names = list(pooled["models"]) + list(pooled["ensembles"])
    buffer.write("| Model | Pooled accuracy (%) | " + " | ".join(f["fold"] for f in summary["per_fold"])
                 + " | Gap vs General (pp) [95 % CI] |\n")
    buffer.write("| :--- | ---: |" + " ---: |" * k + " :--- |\n")
    for name in names:
        entry = pooled["models"].get(name) or pooled["ensembles"][name]
        gap = entry.get("gap_vs_general")
        gap_text = f"{_pp(gap['mean'])} [{_pp(gap['ci95'][0])}, {_pp(gap['ci95'][1])}]" if gap else ""
        folds = " | ".join(_pp(f["accuracy"].get(name), signed=False) for f in summary["per_fold"])
        buffer.write(f"| {display_name(name)} | {_pp(entry['accuracy']['micro'], signed=False)} | {folds} | "
                     f"{gap_text} |\n")
    return buffer.getvalue()
