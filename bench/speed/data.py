"""Data-path speed on this machine: decoding, pre-flight scan, clip cache and loader; one JSON line each.

    PYTHONPATH=src python bench/speed/data.py            # full run (1-2 minutes on 2 cores)
    PYTHONPATH=src python bench/speed/data.py --quick    # under a minute: fewer files, sizes and repeats

Every line carries the machine (CPU count, load average), library versions, the settings and the
median wall time of the repeats that follow one warm-up. Decoding rates are given per video, per
strided output frame and per 8-frame-clip equivalent (output frames / 8), with compressed input MB/s.
Sets: the shared real clips, a small synthetic set (``picojepa.datasets.synth``) and "kinetics-like" files
written here (H.264, 10 s at 30 fps, 480x360, a keyframe every 250 frames, one with AAC audio).
Every decoder that works here is measured (torchcodec only where it imports).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from picojepa.config import cache_size, load_config
from picojepa.data.cache import CacheSettings, ClipCache
from picojepa.data.check import check_videos
from picojepa.data.dataset import FrameStore, train_loader
from picojepa.data.decode import _torchcodec_works, decode_strided
from picojepa.data.sources import VideoItem, VideoSet
from picojepa.datasets.synth import generate_dataset
from picojepa.masks import MaskGenerator

REAL_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clips"
MB = 1e6


# ---------------------------------------------------------------- reporting
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "device": "cpu", "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "av": av.__version__,
        "python": platform.python_version(),
    }
    if _torchcodec_works():
        import torchcodec

        env["torchcodec"] = torchcodec.__version__
    return env


ENV: dict[str, Any] = {}


def emit(row: dict[str, Any]) -> None:
    """Print one measurement with the machine, versions and the load average at that moment."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(json.dumps({**row, **ENV, "load_1min": round(load, 2) if load is not None else None}), flush=True)


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, Any]:
    """Median wall time of ``repeats`` calls after ``warmup`` untimed ones; also the last result."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def r(x: float, digits: int = 2) -> float:
    return round(float(x), digits)


# ---------------------------------------------------------------- test videos
def textured_frames(frames: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """Smooth moving texture plus two moving blocks: compresses like camera video, not like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    fx, fy, phase = rng.uniform(0.01, 0.05, 3) * np.array([1, 1, 100])
    out = []
    for t in range(frames):
        base = 128 + 60 * np.sin(fx * (x + 3 * t) + phase) * np.cos(fy * (y - 2 * t))
        img = np.repeat(base[..., None], 3, axis=2) * np.array([1.0, 0.8, 0.6], np.float32)
        for k, colour in enumerate(((240, 40, 40), (30, 200, 240))):
            bx = int((40 + (5 + 3 * k) * t) % (width - 60))
            by = int(height / 3 * (k + 1) + 20 * np.sin(t / 15 + k)) % (height - 60)
            img[by: by + 60, bx: bx + 60] = colour
        out.append(np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8))
    return out


def write_kinetics_like(path: Path, seconds: float = 10.0, fps: int = 30, size: tuple[int, int] = (480, 360),
                        gop: int = 250, audio: bool = False, seed: int = 0) -> Path:
    """An H.264 mp4 shaped like a Kinetics clip: B-frames, keyframes ``gop`` frames apart, optional AAC."""
    width, height = size
    frames = int(seconds * fps)
    with av.open(str(path), "w") as c:
        x264 = {"preset": "veryfast", "crf": "18", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        v = c.add_stream("libx264", rate=fps, options=x264)
        v.width, v.height, v.pix_fmt, v.gop_size = width, height, "yuv420p", gop
        a = c.add_stream("aac", rate=44100, layout="stereo") if audio else None
        samples = 44100 // fps
        for t, img in enumerate(textured_frames(frames, height, width, seed)):
            c.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            if a is not None:
                tone = 0.1 * np.sin(2 * np.pi * 440 * (np.arange(samples) + t * samples) / 44100)
                af = av.AudioFrame.from_ndarray(np.stack([tone, tone]).astype(np.float32), format="fltp",
                                                layout="stereo")
                af.sample_rate, af.pts = 44100, t * samples
                c.mux(a.encode(af))
        c.mux(v.encode())
        if a is not None:
            c.mux(a.encode())
    return path


def keyframe_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size)


# ---------------------------------------------------------------- measurements
def bench_decode(name: str, files: list[Path], decoder: str, side: int, repeats: int, stride: int = 4,
                 max_frames: int = 64) -> None:
    """One full pass of decode_strided over ``files`` per repeat (what building the cache does)."""
    def run() -> int:
        return sum(len(decode_strided(f, side, stride, None, max_frames, decoder)) for f in files)

    try:
        seconds, out_frames = median_seconds(run, repeats)
    except Exception as e:  # report and go on: one broken decoder must not hide the other numbers
        emit({"what": "decode", "decoder": decoder, "set": name, "side": side, "error": f"{type(e).__name__}: {e}"})
        return
    in_bytes = sum(f.stat().st_size for f in files)
    emit({
        "what": "decode", "decoder": decoder, "set": name, "files": len(files), "side": side,
        "frame_stride": stride, "max_frames": max_frames, "repeats": repeats, "seconds": r(seconds, 4),
        "videos_per_s": r(len(files) / seconds), "out_frames_per_s": r(out_frames / seconds, 1),
        "clips8_per_s": r(out_frames / 8 / seconds), "in_MB_per_s": r(in_bytes / MB / seconds),
    })


def bench_check(name: str, files: list[Path], repeats: int) -> None:
    videos = VideoSet([VideoItem(f) for f in files], None, name)
    seconds, report = median_seconds(lambda: check_videos(videos, progress=False), repeats)
    emit({"what": "check", "set": name, "files": len(files), "usable": len(report.usable), "repeats": repeats,
          "seconds": r(seconds, 4), "files_per_s": r(len(files) / seconds, 1)})


def bench_cache_build(name: str, files: list[Path], decoder: str, side: int, root: Path, repeats: int,
                      workers: int) -> ClipCache:
    """Build the cache from scratch (decode + write .npy) with ``workers`` threads."""
    settings = CacheSettings(side, 4, None, 64, decoder)
    builds = iter(range(10**6))

    def build() -> ClipCache:
        cache = ClipCache(root / f"{decoder}-{side}-w{workers}-{next(builds)}", settings)
        cache.build(files, workers=workers, progress=False)
        return cache

    seconds, cache = median_seconds(build, repeats)
    stored = sum(cache.entry_path(f).stat().st_size for f in files)
    emit({"what": "cache_build", "decoder": decoder, "set": name, "files": len(files), "side": side,
          "workers": workers, "repeats": repeats, "seconds": r(seconds, 4), "videos_per_s": r(len(files) / seconds),
          "written_MB_per_s": r(stored / MB / seconds), "stored_MB": r(stored / MB)})
    return cache


def bench_cache_read(name: str, files: list[Path], cache: ClipCache, repeats: int, reads: int) -> None:
    """Random 8-frame clips from the memory-mapped entries, as TrainClips reads them (page cache warm)."""
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(files), reads)

    def read() -> int:
        total = 0
        for i in picks:  # open the mmap (stat + hash for the key), slice a random clip, copy it
            frames = cache.load(files[i])
            start = int(rng.integers(0, max(1, len(frames) - 7)))
            total += np.ascontiguousarray(frames[start: start + 8]).nbytes
        return total

    seconds, nbytes = median_seconds(read, repeats)
    emit({"what": "cache_read", "set": name, "files": len(files), "side": cache.settings.side, "clip_frames": 8,
          "reads": reads, "repeats": repeats, "page_cache": "warm", "seconds": r(seconds, 4),
          "clips_per_s": r(reads / seconds, 1), "MB_per_s": r(nbytes / MB / seconds, 1)})


def bench_loader(files: list[Path], preset: str, root: Path, workers: int, steps: int, batch: int,
                 threads: int | None = None) -> None:
    """train_loader over a built cache, no model step: clips/s the loading side alone delivers.

    ``threads`` sets torch's intra-op threads in this process for the run (workers always use one):
    with workers=0 the collator's torch.stack runs here, and a parallel op stalls when the cores are busy.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        _bench_loader(files, preset, root, workers, steps, batch)
    finally:
        torch.set_num_threads(before)


def _bench_loader(files: list[Path], preset: str, root: Path, workers: int, steps: int, batch: int) -> None:
    cfg = load_config(preset)
    cfg.data.num_workers = workers
    settings = CacheSettings(cache_size(cfg), cfg.data.frame_stride, cfg.data.target_fps,
                             cfg.data.cache_max_frames, "pyav")
    cache = ClipCache(root / f"loader-{preset}", settings)
    cache.build(files, workers=0, progress=False)
    m = cfg.model
    masks = MaskGenerator((m.num_frames // m.tubelet_size, m.img_size // m.patch_size, m.img_size // m.patch_size),
                          cfg.mask)
    start = time.perf_counter()
    loader = iter(train_loader(FrameStore(files, settings, cache), cfg, masks, steps + 1, 0, batch))
    next(loader)  # worker start-up (spawn) and the first batch
    first = time.perf_counter() - start
    times, clips = [], 0
    for _ in range(steps):
        t0 = time.perf_counter()
        clips += len(next(loader).frames)  # a batch holds min(batch, videos) clips
        times.append(time.perf_counter() - t0)
    assert next(loader, None) is None  # run to the end so the workers exit normally
    seconds = sum(times)
    emit({"what": "loader", "preset": preset, "cache_side": settings.side, "clip_frames": m.num_frames,
          "workers": workers, "main_torch_threads": torch.get_num_threads(), "batch": batch, "steps": steps,
          "first_batch_s": r(first, 3), "median_step_ms": r(1000 * statistics.median(times), 3),
          "clips_per_s": r(clips / seconds, 1),
          "note": "loading only; on 2 cores loader workers compete with the training step for the same cores"})


# ---------------------------------------------------------------- main
def make_sets(tmp: Path, quick: bool) -> dict[str, list[Path]]:
    sets: dict[str, list[Path]] = {}
    if REAL_CLIPS.is_dir():
        for f in sorted(REAL_CLIPS.glob("*.mp4")):
            sets[f"real:{f.stem}"] = [f]
    synth = generate_dataset(tmp / "synth", classes=2, videos_per_class=4 if quick else 8, size=96, frames=32,
                             fps=16, seed=0, workers=1, progress=False)
    sets["synth"] = sorted(synth.rglob("*.mp4"))
    for i, audio in enumerate([False] if quick else [False, True]):
        path = write_kinetics_like(tmp / f"kinetics_like_{i}.mp4", seconds=4.0 if quick else 10.0, audio=audio,
                                   seed=i)
        sets[f"kinetics-like:{'audio' if audio else 'video'}"] = [path]
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer files, one size and one repeat (< 1 min)")
    parser.add_argument("--decoders", default="auto", help="comma list (pyav,torchcodec) or auto: every working one")
    args = parser.parse_args()
    ENV.update(environment())
    decoders = (["pyav", "torchcodec"] if _torchcodec_works() else ["pyav"]) if args.decoders == "auto" \
        else args.decoders.split(",")
    repeats = 1 if args.quick else 3
    sides = [128] if args.quick else [128, 256]
    with tempfile.TemporaryDirectory(prefix="picojepa-bench-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        sets = make_sets(tmp, args.quick)
        kinetics = [f for name, fs in sets.items() if name.startswith("kinetics") for f in fs]
        emit({"what": "setup", "sets": {k: len(v) for k, v in sets.items()}, "seconds": r(time.perf_counter() - t0),
              "kinetics_like": [{"file": f.name, "MB": r(f.stat().st_size / MB), "keyframes": keyframe_count(f)}
                                for f in kinetics]})
        for side in sides:
            for name, files in sets.items():
                for decoder in decoders:  # back to back, so both see the same machine load
                    bench_decode(name, files, decoder, side, repeats)
        every = [f for fs in sets.values() for f in fs]
        bench_check("all", every, repeats)
        for decoder in decoders:
            for workers in (2,) if args.quick else (1, 2):
                cache = bench_cache_build("all", every, decoder, 128, tmp / "cache", repeats, workers)
        bench_cache_read("all", every, cache, repeats, reads=200 if args.quick else 2000)
        runs = [(0, None), (0, 1), (1, None)] if args.quick else [(0, None), (0, 1), (1, None), (2, None)]
        for workers, threads in runs:
            for preset in ("tiny",) if args.quick else ("tiny", "pico-112"):
                bench_loader(sets["synth"], preset, tmp / "cache", workers, steps=10 if args.quick else 40, batch=8,
                             threads=threads)


if __name__ == "__main__":
    main()
