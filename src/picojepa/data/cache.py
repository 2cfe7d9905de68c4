"""Decode-once clip cache: each video's strided, square-cropped uint8 frames in a memory-mapped file.

The key covers the file's resolved path, size and modification time and every sampling setting, so
a changed video or changed settings are never served from a stale entry. Entries are written
atomically; a cache folder can be shared by many runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .decode import VideoError, decode_strided
from .sources import Problem

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    env = os.environ.get("PICOJEPA_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "picojepa" / "clips"


@dataclass(frozen=True)
class CacheSettings:
    side: int
    frame_stride: int
    target_fps: float | None
    max_frames: int
    decoder: str

    def tag(self) -> str:
        fps = f"fps{self.target_fps:g}" if self.target_fps else f"stride{self.frame_stride}"
        return f"v{CACHE_VERSION}-{self.side}px-{fps}-max{self.max_frames}-{self.decoder}"


class ClipCache:
    def __init__(self, root: str | Path | None, settings: CacheSettings) -> None:
        self.root = Path(root) if root else default_cache_dir()
        self.settings = settings

    def entry_path(self, video: Path) -> Path:
        try:
            st = video.stat()
        except OSError as e:
            raise VideoError(video, f"cannot stat file: {e.strerror or e}") from e
        ident = f"{video.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.settings.tag()}"
        digest = hashlib.sha1(ident.encode()).hexdigest()
        return self.root / self.settings.tag() / digest[:2] / f"{digest}.npy"

    def load(self, video: Path) -> np.ndarray:
        """Memory-mapped (F, S, S, 3) uint8 frames of a video that is already cached."""
        return np.load(self.entry_path(video), mmap_mode="r")

    def ensure(self, video: Path) -> Path:
        """Decode and store the video unless an entry for this exact file and settings exists."""
        target = self.entry_path(video)
        if target.exists():
            return target
        s = self.settings
        frames = decode_strided(video, s.side, s.frame_stride, s.target_fps, s.max_frames, s.decoder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.save(f, np.ascontiguousarray(frames))
        os.replace(tmp, target)
        return target

    def build(self, videos: Sequence[Path], workers: int = 0, progress: bool = True,
              description: str = "caching clips") -> tuple[list[Path], list[Problem]]:
        """Make sure every video is cached. Returns the cached ones and the problems of the rest."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the clip cache folder {self.root}: {e.strerror or e}") from e
        missing = [v for v in videos if not _exists(self, v)]
        missing_set = set(missing)
        ok = [v for v in videos if v not in missing_set]
        problems: list[Problem] = []
        if not missing:
            return list(videos), problems
        from ..progress import track

        # Threads, not processes: PyAV decodes with the GIL released, and threads need no __main__ guard.
        workers = workers or min(len(missing), os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:
            results = pool.map(lambda v: _cache_one(self, v), missing)
            for video, error in track(results, total=len(missing), description=description, enabled=progress):
                (problems.append(Problem(str(video), error)) if error else ok.append(video))
        order = {v: i for i, v in enumerate(videos)}
        return sorted(ok, key=order.__getitem__), problems


def _exists(cache: ClipCache, video: Path) -> bool:
    try:
        return cache.entry_path(video).exists()
    except VideoError:
        return False


def _cache_one(cache: ClipCache, video: Path) -> tuple[Path, str | None]:
    try:
        cache.ensure(video)
    except VideoError as e:
        return video, e.reason
    return video, None
