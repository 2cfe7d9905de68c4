"""From a data path to a ready frame store: scan, report, cache, refuse when too much is broken."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..progress import info, warn
from .cache import ClipCache
from .check import CheckReport, check_videos, enforce_bad_fraction
from .dataset import FrameStore, cache_settings
from .sources import Problem, VideoItem, VideoSet


@dataclass
class PreparedData:
    videos: VideoSet  # the usable videos only
    store: FrameStore
    skipped: list[Problem]
    check: CheckReport


def skipped_records(problems: list[Problem], stage: str) -> list[dict]:
    return [{"path": p.path, "reason": p.reason, "line": p.line, "stage": stage} for p in problems]


def prepare_videos(videos: VideoSet, cfg: Config, progress: bool = True, workers: int | None = None,
                   cache_dir: str | Path | None = None) -> PreparedData:
    """Scan every video, cache the usable ones (unless disabled) and return a frame store over them.

    Unusable videos are skipped and listed; more than ``cfg.data.max_bad_fraction`` unusable is an
    error. Nothing is ever replaced by made-up data.
    """
    report = check_videos(videos, cfg.model.num_frames, cfg.data.frame_stride, cfg.data.target_fps,
                          progress=progress)
    total = report.total
    enforce_bad_fraction(total, report.problems, cfg.data.max_bad_fraction, videos.source)
    if report.problems:
        warn(f"skipping {len(report.problems)} unusable video(s)/row(s) of {videos.source}:"
             + "".join(f"\n  ✗ {p}" for p in report.problems[:10])
             + (f"\n  … and {len(report.problems) - 10} more" if len(report.problems) > 10 else ""))
    if report.short:
        info(f"{len(report.short)} video(s) shorter than one clip: their last frame is repeated")
    usable = report.usable
    skipped = list(report.problems)
    settings = cache_settings(cfg)
    cache = None
    if cfg.data.use_cache:
        cache = ClipCache(cache_dir or cfg.data.cache_dir, settings)
        cached, failures = cache.build([item.path for item in usable], workers=workers or 0, progress=progress)
        lines = {str(item.path): item.line for item in usable}
        failures = [Problem(f.path, f.reason, lines.get(f.path)) for f in failures]
        if failures:
            warn(f"{len(failures)} video(s) failed to decode while caching and are skipped:"
                 + "".join(f"\n  ✗ {p}" for p in failures[:10]))
            skipped += failures
            enforce_bad_fraction(total, skipped, cfg.data.max_bad_fraction, videos.source)
            ok = set(cached)
            usable = [item for item in usable if item.path in ok]
    kept = VideoSet(list(usable), videos.class_names, videos.source)
    store = FrameStore([item.path for item in usable], settings, cache)
    return PreparedData(kept, store, skipped, report)


__all__ = ["PreparedData", "VideoItem", "prepare_videos", "skipped_records"]
