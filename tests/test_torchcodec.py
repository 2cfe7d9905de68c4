"""The torchcodec decoding path agrees with PyAV: same frames, close pixels, the same kinds of errors.

Skipped where torchcodec does not import (not installed, or installed without the FFmpeg libraries
it links against), as in CI. To run it: a separate venv with torchcodec and a system FFmpeg.

Pixel tolerance: both paths pick the same source frames, but PyAV resizes with swscale's area filter
and torchcodec's path with PyTorch's antialiased bilinear, after slightly different chroma upsampling.
The mean absolute difference is 1.3-2.3 levels (of 255) on the shared real clips and up to 3.3 on the
synthetic yuv420p clips (saturated edges, where the chroma handling differs most), while taking a
neighbouring frame instead gives 7-25 levels; hence the 5-level bound, plus the check that each
frame is closer to its own PyAV frame than to its neighbours' (so a one-frame shift always fails).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import moving_square, write_video

from picojepa.data.cache import CacheSettings, ClipCache
from picojepa.data.decode import VideoError, _torchcodec_works, choose_decoder, decode_strided

if not _torchcodec_works():
    pytest.skip("torchcodec does not import here (not installed, or no FFmpeg libraries for it)",
                allow_module_level=True)

REAL_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clips"
MAX_MEAN_DIFF = 5.0  # levels of 255, over a whole clip; see the module docstring


def both(path: Path, side: int, stride: int = 2, max_frames: int = 64) -> tuple[np.ndarray, np.ndarray]:
    return (decode_strided(path, side, stride, None, max_frames, "pyav"),
            decode_strided(path, side, stride, None, max_frames, "torchcodec"))


def assert_same_frames(a: np.ndarray, b: np.ndarray) -> None:
    """Same shape and dtype, close pixels, and no frame matches a neighbour better than its own."""
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert diff.mean() < MAX_MEAN_DIFF, f"mean abs diff {diff.mean():.2f}"
    for i in range(len(a)):
        own = diff[i].mean()
        for j in (i - 1, i + 1):
            if 0 <= j < len(a) and not np.array_equal(a[i], a[j]):
                assert own < np.abs(a[j].astype(np.int16) - b[i].astype(np.int16)).mean(), f"frame {i} vs {j}"


def write_coded(path: Path, frames: np.ndarray, codec: str, pix: str, fps: int = 10,
                options: dict[str, str] | None = None) -> Path:
    with av.open(str(path), "w", options=options or {}) as c:
        s = c.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


def test_auto_prefers_torchcodec_where_it_works():
    assert choose_decoder("auto") == "torchcodec"
    assert choose_decoder("torchcodec") == "torchcodec" and choose_decoder("pyav") == "pyav"


@pytest.mark.parametrize("codec,ext,pix,height,width", [
    ("libx264", "mp4", "yuv420p", 64, 96),
    ("libx264", "mp4", "yuv444p", 45, 67),
    ("mpeg4", "avi", "yuv420p", 45, 67),
    ("ffv1", "mkv", "bgr0", 80, 48),
])
def test_generated_videos_match_pyav(tmp_path, codec, ext, pix, height, width):
    path = write_coded(tmp_path / f"v.{ext}", moving_square(30, height, width, 1, seed=3), codec, pix)
    a, b = both(path, side=32)
    assert len(a) == 15
    assert_same_frames(a, b)


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason="shared real clips not present")
@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"])
@pytest.mark.parametrize("side", [64, 128])
def test_real_clips_match_pyav(name, side):
    a, b = both(REAL_CLIPS / name, side, stride=4, max_frames=16)
    assert a.shape == (16, side, side, 3)
    assert_same_frames(a, b)


def test_long_video_keeps_the_same_centred_segment(tmp_path):
    path = write_video(tmp_path / "long.mp4", moving_square(100, 32, 32, 0, 0))
    a, b = both(path, side=32, max_frames=10)
    assert len(b) == 10
    assert_same_frames(a, b)


@pytest.mark.parametrize("frames", [1, 3, 5])
def test_short_clips(tmp_path, frames):
    path = write_video(tmp_path / "short.mp4", moving_square(frames, 32, 32, 0, 0))
    a, b = both(path, side=32)
    assert len(b) == (frames + 1) // 2
    assert_same_frames(a, b)


@pytest.fixture()
def bad_videos(tmp_path) -> Path:
    good = write_video(tmp_path / "good.mp4", moving_square(24, 64, 64, 0, 0)).read_bytes()
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "text.mp4").write_text("this is not a video\n" * 20)
    (tmp_path / "truncated.mp4").write_bytes(good[: len(good) // 2])  # index (moov) at the end: lost
    # index at the front (faststart): the header survives and promises frames that are gone
    fast = write_coded(tmp_path / "fast.mp4", moving_square(120, 64, 64, 1, 0), "libx264", "yuv420p",
                       options={"movflags": "faststart"}).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(fast[: int(len(fast) * 0.6)])
    with av.open(str(tmp_path / "audio_only.mp4"), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        c.mux([*stream.encode(frame), *stream.encode()])
    return tmp_path


@pytest.mark.parametrize("name,reason", [
    ("empty.mp4", "empty file"),
    ("text.mp4", "not a video file"),
    ("truncated.mp4", "truncated or corrupt MP4/MOV"),
    ("cut.mp4", "truncated"),
    ("audio_only.mp4", "no video stream"),
    ("missing.mp4", "file not found"),
])
def test_bad_files_give_a_reason(bad_videos, name, reason):
    with pytest.raises(VideoError) as info:
        decode_strided(bad_videos / name, 32, decoder="torchcodec")
    assert reason in info.value.reason
    assert ".cpp:" not in info.value.reason  # torchcodec's C++ source locations are stripped


def test_clip_cache_with_torchcodec(tmp_path):
    videos = [write_video(tmp_path / f"v{i}.mp4", moving_square(16, 48, 64, i % 2, i)) for i in range(3)]
    videos.append(tmp_path / "missing.mp4")
    cache = ClipCache(tmp_path / "cache", CacheSettings(32, 2, None, 64, "torchcodec"))
    ok, problems = cache.build(videos, workers=2, progress=False)
    assert ok == videos[:3] and [Path(p.path).name for p in problems] == ["missing.mp4"]
    assert_same_frames(decode_strided(videos[0], 32, 2, decoder="pyav"), np.asarray(cache.load(videos[0])))
