"""Shared fixtures: small real mp4 files written with PyAV, so tests exercise real decoding."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def write_video(path: Path, frames: np.ndarray, fps: int = 12, codec: str = "libx264") -> Path:
    """Encode uint8 frames (T, H, W, 3) into a real video file (yuv420p needs even sizes for x264)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _, H, W, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_square(num_frames: int, height: int, width: int, direction: int, seed: int) -> np.ndarray:
    """A bright square moving left (0) or right (1) over a noisy background."""
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 60, size=(num_frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 4)
    y = int(rng.integers(0, height - side))
    x0 = int(rng.integers(0, width - side))
    speed = 2 if direction else -2
    for t in range(num_frames):
        x = (x0 + speed * t) % (width - side)
        frames[t, y: y + side, x: x + side] = (230, 200, 40)
    return frames


@pytest.fixture(scope="session")
def video_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes × 6 videos, 24 frames at 64×64."""
    root = tmp_path_factory.mktemp("videos")
    for label, name in enumerate(["left", "right"]):
        for i in range(6):
            write_video(root / name / f"{name}_{i}.mp4", moving_square(24, 64, 64, label, seed=10 * label + i))
    return root


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
