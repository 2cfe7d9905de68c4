"""Batch prediction with any scorer (``predict --runtime onnx``): videos decoded once in worker processes,
the same checks, skipped-video list and CSV as the torch runtime's :func:`picojepa.experiment.predict.predict`."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..data.check import check_videos
from ..data.dataset import FrameStore, eval_loader
from ..data.sources import Problem, VideoSet, load_videos
from ..experiment.predict import PredictSummary, prediction_accuracy, prediction_rows
from ..utils import write_json, write_text
from .scoring import Scorer, cache_settings_of


def predict_videos(scorer: Scorer, videos_path: Path, out_csv: Path, batch_size: int = 8, workers: int = 2,
                   progress: bool = True) -> PredictSummary:
    videos = load_videos(videos_path)
    s = scorer.sampling
    check = check_videos(videos, s.frames, s.frame_stride, s.target_fps, progress=progress)
    skipped = list(check.problems)
    usable = VideoSet(check.usable, videos.class_names, videos.source)
    t0 = time.perf_counter()
    probs, ens_probs, ens_pred = _score(scorer, usable, batch_size, workers, progress, skipped)
    ok = ~np.isnan(probs[0, :, 0])
    ensemble = (scorer.ensemble_name, ens_probs[ok], ens_pred[ok]) if scorer.ensemble_name else None
    write_text(out_csv, prediction_rows(scorer.names, probs, ok, usable, scorer.class_names, ensemble))
    seconds = time.perf_counter() - t0
    if skipped:
        write_json(out_csv.with_suffix(".skipped.json"),
                   [{"path": p.path, "reason": p.reason, "line": p.line} for p in skipped])
    accuracy = prediction_accuracy(scorer.names, probs, ok, usable, scorer.class_names, ensemble)
    return PredictSummary(int(ok.sum()), skipped, seconds, accuracy, out_csv)


def _score(scorer: Scorer, videos: VideoSet, batch_size: int, workers: int, progress: bool,
           skipped: list[Problem]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, V, C) model probabilities, (V, C) ensemble probabilities and (V,) ensemble classes; NaN rows (class
    -1) for videos that failed to decode, which are added to ``skipped``."""
    from ..progress import track

    M, V, C = len(scorer.names), len(videos.items), len(scorer.class_names)
    probs, ens_probs, ens_pred = np.full((M, V, C), np.nan), np.full((V, C), np.nan), np.full(V, -1)
    paths = [item.path for item in videos.items]
    store = FrameStore(paths, cache_settings_of(scorer.sampling), cache=None)
    loader = eval_loader(store, scorer.sampling.frames, scorer.sampling.clips_per_video, batch_size, workers)
    for items in track(loader, total=len(loader), description="predicting", enabled=progress):
        skipped.extend(Problem(str(paths[i]), err) for i, _, err in items if err is not None)
        good = [(i, c) for i, c, err in items if err is None]
        if not good:
            continue
        index = [i for i, _ in good]
        scores = scorer(np.stack([c for _, c in good]))
        probs[:, index] = scores.models
        if scores.ensemble is not None:
            ens_probs[index], ens_pred[index] = scores.ensemble
    return probs, ens_probs, ens_pred
