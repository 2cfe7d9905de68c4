"""Video data: sources, bad-input reasons, decoding of odd sizes and short clips, cache, transforms."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import moving_square, write_video

from picojepa.config import load_config
from picojepa.data import ClipCache, check_videos, decode_strided, load_videos, prepare_videos
from picojepa.data.cache import CacheSettings
from picojepa.data.dataset import clip_indices, eval_starts
from picojepa.data.transforms import (
    eval_transform,
    random_resized_crop_params,
    train_transform,
)
from picojepa.errors import DataError

REAL_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clips"


# ---------------------------------------------------------------- sources
def test_class_folder_tree(video_folder):
    videos = load_videos(video_folder)
    assert videos.class_names == ["left", "right"]
    assert len(videos.items) == 12
    assert {v.label for v in videos.items if v.path.parent.name == "right"} == {1}


def test_csv_manifest_with_names_ints_and_bad_rows(tmp_path, video_folder):
    rel = os.path.relpath(video_folder, tmp_path)
    (tmp_path / "m.csv").write_text(
        "video_name,label\n"
        f"{rel}/left/left_0.mp4,left\n"
        f"{rel}/right/right_0.mp4,right\n"
        ",left\n"
        f"{rel}/left/left_1.mp4\n"
        f"{rel}/left/left_2.mp4,left,extra\n"
    )
    videos = load_videos(tmp_path / "m.csv")
    assert videos.class_names == ["left", "right"]
    assert [v.path.resolve() for v in videos.items] == [
        (video_folder / "left/left_0.mp4").resolve(), (video_folder / "right/right_0.mp4").resolve()]
    assert sorted(p.line for p in videos.problems) == [4, 5, 6]
    (tmp_path / "ints.csv").write_text(f"{rel}/left/left_0.mp4,0\n{rel}/right/right_0.mp4,1\n")
    assert [v.label for v in load_videos(tmp_path / "ints.csv").items] == [0, 1]


def test_unknown_label_against_classes_txt(tmp_path, video_folder):
    rel = os.path.relpath(video_folder, tmp_path)
    (tmp_path / "classes.txt").write_text("right\nleft\n")
    (tmp_path / "m.csv").write_text(f"{rel}/left/left_0.mp4,left\n{rel}/left/left_1.mp4,jumping\n")
    videos = load_videos(tmp_path / "m.csv")
    assert videos.class_names == ["right", "left"]  # order from classes.txt
    assert videos.items[0].label == 1
    assert videos.problems[0].line == 2 and "unknown label 'jumping'" in videos.problems[0].reason


def test_space_separated_list_and_unlabelled_sources(tmp_path, video_folder):
    (tmp_path / "train.txt").write_text(f"{video_folder}/left/left_0.mp4 0\n{video_folder}/right/right_0.mp4 1\n")
    assert [v.label for v in load_videos(tmp_path / "train.txt").items] == [0, 1]
    (tmp_path / "unlab.csv").write_text(f"video_name\n{video_folder}/left/left_0.mp4\n")
    assert not load_videos(tmp_path / "unlab.csv").labelled
    flat = tmp_path / "flat"
    flat.mkdir()
    write_video(flat / "a.mp4", moving_square(10, 32, 32, 0, 0))
    (flat / "notes.txt").write_text("not a video")
    assert not load_videos(flat).labelled and len(load_videos(flat).items) == 1
    with pytest.raises(DataError, match="not found"):
        load_videos(tmp_path / "missing")
    with pytest.raises(DataError, match="no labels"):
        load_videos(flat, require_labels=True)


# ---------------------------------------------------------------- bad input
@pytest.fixture()
def bad_folder(tmp_path, video_folder) -> Path:
    root = tmp_path / "bad"
    root.mkdir()
    good = (video_folder / "left" / "left_0.mp4").read_bytes()
    (root / "good.mp4").write_bytes(good)
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n" * 20)
    (root / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (root / "dangling.mp4").symlink_to(tmp_path / "nowhere.mp4")
    with av.open(str(root / "audio_only.mp4"), "w") as c:
        stream = c.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            c.mux(packet)
    return root


def test_check_reports_every_kind_of_bad_video(bad_folder):
    report = check_videos(load_videos(bad_folder), progress=False)
    reasons = {Path(p.path).name: p.reason for p in report.problems}
    assert [item.path.name for item in report.usable] == ["good.mp4"]
    assert "empty file" in reasons["empty.mp4"]
    assert "not a video" in reasons["text.mp4"]
    assert "truncated or corrupt" in reasons["truncated.mp4"]
    assert "dangling symbolic link" in reasons["dangling.mp4"]
    assert "no video stream" in reasons["audio_only.mp4"]


def test_every_manifest_problem_names_its_line(bad_folder, video_folder, tmp_path):
    good = video_folder / "left" / "left_0.mp4"
    (tmp_path / "m.csv").write_text(
        "video_name,label\n"                     # line 1: header
        f"{good},left\n"                         # line 2: fine
        f"{tmp_path / 'gone.mp4'},left\n"        # line 3: missing file
        f"{bad_folder / 'text.mp4'},right\n"     # line 4: not a video
        f"{good},\n"                             # line 5: empty label
        f"{good},left,extra\n"                   # line 6: wrong column count
    )
    report = check_videos(load_videos(tmp_path / "m.csv"), progress=False)
    lines = {p.line: p.reason for p in report.problems}
    assert set(lines) == {3, 4, 5, 6}, report.problems
    assert "not found" in lines[3] or "missing" in lines[3] or "no such" in lines[3].lower()
    assert "not a video" in lines[4] and "empty label" in lines[5] and "column" in lines[6]
    assert all(f":{line}:" in str(p) for line, p in zip(sorted(lines), sorted(report.problems, key=lambda p: p.line),
                                                            strict=True))


def test_prepare_refuses_too_much_bad_data_and_skips_a_little(bad_folder, cache_dir, tmp_path):
    cfg = load_config("tiny")
    with pytest.raises(DataError, match="unusable"):
        prepare_videos(load_videos(bad_folder), cfg, progress=False, cache_dir=cache_dir)
    cfg.data.max_bad_fraction = 0.9
    prepared = prepare_videos(load_videos(bad_folder), cfg, progress=False, cache_dir=cache_dir)
    assert len(prepared.store) == 1 and len(prepared.skipped) == 5


# ---------------------------------------------------------------- decoding
@pytest.mark.parametrize("codec,ext,pix", [("libx264", "mp4", "yuv444p"), ("mpeg4", "avi", "yuv420p"),
                                           ("ffv1", "mkv", "bgr0")])
def test_decode_odd_sizes_in_several_containers(tmp_path, codec, ext, pix):
    frames = moving_square(20, 45, 67, 1, seed=0)
    path = tmp_path / f"odd.{ext}"
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=10)
        s.width, s.height, s.pix_fmt = 67, 45, pix
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    out = decode_strided(path, side=32, frame_stride=2, max_frames=64)
    assert out.shape == (10, 32, 32, 3) and out.dtype == np.uint8


def test_short_video_is_padded_by_repeating_the_last_frame(tmp_path):
    path = write_video(tmp_path / "short.mp4", moving_square(5, 32, 32, 0, 0))
    frames = decode_strided(path, side=32, frame_stride=2, max_frames=64)
    assert len(frames) == 3
    idx = clip_indices(len(frames), 8, 0)
    assert idx.tolist() == [0, 1, 2, 2, 2, 2, 2, 2]
    assert eval_starts(3, 8, 4) == [0, 0, 0, 0]
    assert eval_starts(40, 8, 4) == [0, 11, 21, 32]


def test_long_video_keeps_a_centred_segment(tmp_path):
    path = write_video(tmp_path / "long.mp4", moving_square(100, 32, 32, 0, 0))
    frames = decode_strided(path, side=32, frame_stride=2, max_frames=10)
    assert len(frames) == 10


@pytest.mark.skipif(not REAL_CLIPS.is_dir(), reason="shared real clips not present")
def test_real_clips_decode_with_audio_and_non_square_sizes():
    for name in ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"):
        frames = decode_strided(REAL_CLIPS / name, side=64, frame_stride=4, max_frames=16)
        assert frames.shape == (16, 64, 64, 3)
        assert frames.std() > 5  # real content, not a constant frame


# ---------------------------------------------------------------- cache
def test_cache_reuses_entries_and_never_serves_stale_ones(tmp_path, cache_dir):
    path = write_video(tmp_path / "v.mp4", moving_square(16, 32, 32, 0, 0))
    settings = CacheSettings(32, 2, None, 64, "pyav")
    cache = ClipCache(cache_dir, settings)
    ok, problems = cache.build([path], progress=False)
    assert ok == [path] and not problems
    entry = cache.entry_path(path)
    first = np.array(cache.load(path))
    assert len(first) == 8
    # Changed sampling settings → another entry.
    assert ClipCache(cache_dir, CacheSettings(32, 4, None, 64, "pyav")).entry_path(path) != entry
    # Changed file → another entry with the new content.
    write_video(path, moving_square(30, 32, 32, 1, 5))
    os.utime(path, ns=(1, 10**18))
    assert cache.entry_path(path) != entry
    cache.build([path], progress=False)
    assert len(cache.load(path)) == 15


# ---------------------------------------------------------------- transforms
def test_train_transform_shapes_range_and_flip():
    frames = torch.zeros(2, 4, 40, 40, 3, dtype=torch.uint8)
    frames[..., :20, :] = 255  # left half white
    gen = torch.Generator().manual_seed(0)
    params = random_resized_crop_params(2, (1.0, 1.0), (1.0, 1.0), hflip=False, generator=gen)
    out = train_transform(frames, 32, params)
    assert out.shape == (2, 3, 4, 32, 32)
    assert out[0, 0, 0, :, :8].mean() > out[0, 0, 0, :, -8:].mean()
    params[:, 2] *= -1  # flip
    flipped = train_transform(frames, 32, params)
    assert torch.allclose(flipped, out.flip(-1), atol=1e-4)


def test_eval_transform_any_size():
    frames = torch.randint(0, 255, (1, 8, 45, 67, 3), dtype=torch.uint8)
    out = eval_transform(frames, 32)
    assert out.shape == (1, 3, 8, 32, 32)
    assert -3 < out.mean() < 3
