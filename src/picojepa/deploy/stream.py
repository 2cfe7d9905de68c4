"""Streaming prediction over long videos: decode once, slide a window, predict every window.

Window k covers [k·hop, k·hop + window) seconds, counted from the video's first frame, and is predicted as
soon as a later frame arrives — or at the end, when the video lasts at least until the window's end. A video
shorter than one window gives one window over all of it. A window is predicted as ``predict`` predicts a
video: K evenly spaced clips of T kept frames over the window's kept frames, probabilities averaged. Only the
current window's frames are held, so memory depends on the window's length, never on the video's.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data.dataset import clip_indices, eval_starts
from ..data.decode import StridedStream, VideoError, VideoInfo, probe, stride_for
from ..errors import ConfigError, DataError
from ..utils import atomic_write
from .manifest import Sampling
from .scoring import Scorer

END_SLACK = 1e-3  # seconds: container time bases round frame times
OUTPUT_SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Window:
    index: int
    start: float  # seconds
    end: float


@dataclass
class WindowScores:
    window: Window
    models: np.ndarray  # (M, C) probabilities, in the scorer's ``names`` order
    ensemble: tuple[np.ndarray, int] | None  # (C,) probabilities (vote: vote fractions), class index


def window_clips(frames: list[np.ndarray], num_frames: int, num_clips: int) -> np.ndarray:
    """(K, T, S, S, 3): K evenly spaced clips over a window's frames, as ``predict`` cuts a video's."""
    n = len(frames)
    return np.stack([np.stack([frames[i] for i in clip_indices(n, num_frames, s)])
                     for s in eval_starts(n, num_frames, num_clips)])


def stream_windows(path: Path, sampling: Sampling, window_seconds: float,
                   hop_seconds: float) -> Iterator[tuple[Window, np.ndarray]]:
    """(window, its clips (K, T, S, S, 3) uint8) for every window of the video, decoding it once."""
    if not (window_seconds > 0 and hop_seconds > 0):
        raise ConfigError(f"--window-seconds and --hop-seconds must be positive, got {window_seconds} and "
                          f"{hop_seconds}")
    fps = _probe(path).fps
    kept_interval = stride_for(fps, sampling.frame_stride, sampling.target_fps) / fps
    if window_seconds < kept_interval:
        raise ConfigError(f"a {window_seconds:g} s window can miss every kept frame (one every "
                          f"{kept_interval:.3g} s in {path.name}): use a longer --window-seconds")

    def window(k: int) -> Window:
        return Window(k, round(k * hop_seconds, 6), round(k * hop_seconds + window_seconds, 6))

    def emit(w: Window) -> tuple[Window, np.ndarray]:
        frames = [f for t, f in buffer if w.start <= t < w.end]
        return w, window_clips(frames, sampling.frames, sampling.clips_per_video)

    buffer: deque[tuple[float, np.ndarray]] = deque()
    current = window(0)
    frames = StridedStream(path, sampling.resize_side, sampling.frame_stride, sampling.target_fps)
    try:
        for t, frame in frames:
            t = round(t, 6)
            while t >= current.end:  # frames arrive in time order: the current window is complete
                yield emit(current)
                current = window(current.index + 1)
                while buffer and buffer[0][0] < current.start:
                    buffer.popleft()
            if t >= current.start:
                buffer.append((t, frame))
    except VideoError as e:
        raise DataError(f"{e} (after {current.index} windows)") from e
    duration = round(frames.end or 0.0, 6)
    if current.index == 0 and current.end > duration + END_SLACK:
        yield emit(Window(0, 0.0, duration))  # shorter than one window: one window over the whole video
        return
    while current.end <= duration + END_SLACK:
        yield emit(current)
        current = window(current.index + 1)
        while buffer and buffer[0][0] < current.start:
            buffer.popleft()


def _probe(path: Path) -> VideoInfo:
    try:
        return probe(path, decode_first_frame=False)
    except VideoError as e:
        raise DataError(str(e)) from e


def stream_predict(scorer: Scorer, path: Path, window_seconds: float, hop_seconds: float,
                   progress: bool = False) -> Iterator[WindowScores]:
    """Predictions for every window of the video, in order, as they are decoded."""
    from ..progress import make_progress

    windows = stream_windows(path, scorer.sampling, window_seconds, hop_seconds)
    if not progress:
        yield from (_scored(scorer, window, clips) for window, clips in windows)
        return
    info = _probe(path)
    with make_progress("seconds of video") as bar:
        task = bar.add_task("streaming", total=round(info.frames / info.fps, 1))
        for window, clips in windows:
            yield _scored(scorer, window, clips)
            bar.update(task, completed=window.end)
        bar.update(task, completed=bar.tasks[0].total)


def _scored(scorer: Scorer, window: Window, clips: np.ndarray) -> WindowScores:
    scores = scorer(clips[None])
    ensemble = (scores.ensemble[0][0], int(scores.ensemble[1][0])) if scores.ensemble else None
    return WindowScores(window, scores.models[:, 0], ensemble)


def write_stream(out: Path, scorer: Scorer, predictions: Iterator[WindowScores]) -> int:
    """Write window predictions as CSV (``.csv``) or JSON lines (``.jsonl``), atomically, row by row (bounded
    memory); returns the number of windows."""
    if out.suffix not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--out for a stream must end in {' or '.join(OUTPUT_SUFFIXES)}, got {out.name!r}")
    rows = [*scorer.names, *([scorer.ensemble_name] if scorer.ensemble_name else [])]
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f) if out.suffix == ".csv" else None
            if writer:
                writer.writerow(["window", "start_s", "end_s", "model", "pred", *scorer.class_names])
            for p in predictions:
                outputs = [(m, int(m.argmax())) for m in p.models] + ([p.ensemble] if p.ensemble else [])
                for name, (probs, pred) in zip(rows, outputs, strict=True):
                    fields = (p.window.index, p.window.start, p.window.end, name, scorer.class_names[pred])
                    if writer:
                        writer.writerow([*fields, *(f"{x:.6f}" for x in probs)])
                    else:
                        record = dict(zip(["window", "start_s", "end_s", "model", "pred"], fields, strict=True))
                        f.write(json.dumps({**record, "probabilities": dict(zip(
                            scorer.class_names, (round(float(x), 6) for x in probs), strict=True))}) + "\n")
                count += 1

    atomic_write(out, write)
    return count
