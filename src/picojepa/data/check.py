"""Pre-flight scan: open every video once and say, for each unusable one, why."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..errors import DataError
from .decode import VideoError, VideoInfo, probe
from .sources import Problem, VideoItem, VideoSet


@dataclass
class CheckReport:
    source: str
    usable: list[VideoItem]
    infos: dict[str, VideoInfo]
    problems: list[Problem]  # unusable videos and bad manifest rows
    short: list[tuple[str, int]] = field(default_factory=list)  # (video, strided frames) below a clip
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.usable) + len(self.problems)

    @property
    def bad_fraction(self) -> float:
        return len(self.problems) / max(self.total, 1)

    def summary(self) -> str:
        rate = self.total / self.seconds if self.seconds > 0 else float("inf")
        lines = [f"{self.source}: {len(self.usable)} usable, {len(self.problems)} unusable "
                 f"(scanned {self.total} in {self.seconds:.1f} s, {rate:.0f}/s)"]
        lines += [f"  ✗ {p}" for p in self.problems]
        if self.short:
            lines.append(f"  {len(self.short)} video(s) shorter than one clip; their last frame is repeated:")
            lines += [f"  · {path} ({n} frames after striding)" for path, n in self.short[:20]]
            if len(self.short) > 20:
                lines.append(f"  · … and {len(self.short) - 20} more")
        return "\n".join(lines)


def _probe_item(item: VideoItem) -> tuple[VideoItem, VideoInfo | None, str | None]:
    try:
        return item, probe(item.path), None
    except VideoError as e:
        return item, None, e.reason


def check_videos(videos: VideoSet, clip_frames: int | None = None, frame_stride: int = 1,
                 target_fps: float | None = None, workers: int | None = None,
                 progress: bool = True) -> CheckReport:
    """Probe every video (open, find a video stream, decode the first frame), in parallel threads."""
    from ..progress import track
    from .decode import stride_for

    start = time.perf_counter()
    workers = workers or min(16, 4 * (os.cpu_count() or 1))
    usable, infos, problems, short = [], {}, list(videos.problems), []
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(_probe_item, videos.items)
        for item, info, reason in track(results, total=len(videos.items), description="checking videos",
                                        enabled=progress):
            if reason is not None:
                problems.append(Problem(str(item.path), reason, item.line))
                continue
            usable.append(item)
            infos[str(item.path)] = info
            if clip_frames:
                strided = -(-info.frames // stride_for(info.fps, frame_stride, target_fps))
                if strided < clip_frames:
                    short.append((str(item.path), strided))
    return CheckReport(videos.source, usable, infos, problems, short, time.perf_counter() - start)


def enforce_bad_fraction(total: int, problems: list[Problem], max_bad_fraction: float, source: str) -> None:
    """Refuse to go on when too much of the data is unusable, naming a few of the reasons."""
    if total == 0 or len(problems) == total:
        raise DataError(f"no usable videos in {source}" + "".join(f"\n  ✗ {p}" for p in problems[:10]))
    fraction = len(problems) / total
    if fraction > max_bad_fraction:
        shown = "".join(f"\n  ✗ {p}" for p in problems[:10])
        more = f"\n  … and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(
            f"{len(problems)} of {total} videos in {source} are unusable ({fraction:.0%} > the allowed "
            f"{max_bad_fraction:.0%}; see --max-bad-fraction):{shown}{more}"
        )
