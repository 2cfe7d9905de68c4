"""Pretraining step speed: clips/s, ms/step, peak memory and MFU, one JSON line per measurement.

    PYTHONPATH=src python bench/speed/pretrain.py --preset pico-112 --device cpu --batch-size 8
    PYTHONPATH=src python bench/speed/pretrain.py --preset pico --device cuda --batch-size 256 --compile --ablate
    PYTHONPATH=src python bench/speed/pretrain.py --preset pico --device cuda --batch-size 256 --compile --data bank

``--data synthetic`` (default) feeds random uint8 frames already on the device: the step alone.
``--data bank`` samples clips from a GPU-resident uint8 clip bank (the real pretraining path when the
cache fits in GPU memory); ``--data loader`` reads memory-mapped cache files through DataLoader workers
and pinned memory. Nothing here imports a video decoder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from picojepa.config import cache_size, load_config
from picojepa.data.dataset import TrainBatch, train_loader
from picojepa.data.device_bank import DeviceClipBank
from picojepa.models import train_flops_per_clip
from picojepa.models.vit import Attention
from picojepa.perf import peak_flops
from picojepa.train.pretrain import Trainer


class NpyStore:
    """Cache-like frame store over .npy files (what the clip cache holds), no decoder involved."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def frames(self, index: int) -> np.ndarray:
        return np.load(self.paths[index], mmap_mode="r")


def make_store(root: Path, videos: int, frames: int, side: int, seed: int = 0) -> NpyStore:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(videos):
        path = root / f"{i:05d}.npy"
        np.save(path, rng.integers(0, 256, size=(frames, side, side, 3), dtype=np.uint8))
        paths.append(path)
    return NpyStore(paths)


def synthetic_batches(trainer: Trainer, batch: int, side: int, device: torch.device) -> Iterator[TrainBatch]:
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, trainer.cfg.model.num_frames, side, side, 3), generator=g,
                           dtype=torch.uint8).to(device)
    ring = [trainer.masks(batch, [0, i]) for i in range(8)]
    ring = [[type(m)(m.keep.to(device), m.target.to(device), m.spatial) for m in masks] for masks in ring]
    step = 0
    while True:
        yield TrainBatch(frames, ring[step % len(ring)], step, [])
        step += 1


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(make_trainer: Callable[[], Trainer], batches: Callable[[Trainer], Iterator[TrainBatch]],
            device: torch.device, warmup: int, steps: int, repeats: int) -> dict:
    trainer = make_trainer()
    it = batches(trainer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step(next(it))
    sync(device)
    warmup_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            trainer.step(next(it))
        sync(device)
        times.append((time.perf_counter() - t0) / steps)
    ms = statistics.median(times) * 1000
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"ms_per_step": round(ms, 3), "ms_min": round(min(times) * 1000, 3), "warmup_s": round(warmup_s, 1),
            "peak_mem_gib": None if peak_mem is None else round(peak_mem, 2)}


def sdpa_backend(name: str) -> contextlib.AbstractContextManager:
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel(backend)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pico-112")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--ablate", action="store_true", help="also time with each optimisation switched off")
    ap.add_argument("--data", choices=["synthetic", "bank", "loader"], default="synthetic")
    ap.add_argument("--videos", type=int, default=256, help="videos in the bank/loader data set")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--set", action="append", default=[], help="config override section.field=value")
    ap.add_argument("--sdpa-backend", choices=["auto", "flash", "efficient", "cudnn", "math"], default="auto",
                    help="restrict scaled_dot_product_attention to one kernel family")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config(args.preset, overrides=args.set)
    cfg.train.batch_size = args.batch_size
    side = cache_size(cfg)
    flops = train_flops_per_clip(cfg.model, cfg.mask)
    peak = peak_flops(device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    tmp = tempfile.TemporaryDirectory()
    if args.data == "synthetic":
        def batches(trainer: Trainer) -> Iterator[TrainBatch]:
            return synthetic_batches(trainer, args.batch_size, side, device)
    else:
        store = make_store(Path(tmp.name), args.videos, cfg.data.cache_max_frames // 2, side)
        total = 10**6
        if args.data == "bank":
            bank = DeviceClipBank(store, device, cfg.model.num_frames, 0)

            def batches(trainer: Trainer) -> Iterator[TrainBatch]:
                return bank.batches(trainer.masks, args.batch_size, total)
        else:
            cfg.data.num_workers = args.workers

            def batches(trainer: Trainer) -> Iterator[TrainBatch]:
                return iter(train_loader(store, cfg, trainer.masks, total, 0, args.batch_size,
                                         pin_memory=device.type == "cuda"))

    compile_mode = args.compile_mode or ("default" if args.compile else None)
    variants: list[tuple[str, dict]] = [("baseline", {})]
    if args.ablate:
        variants += [("no_context_only", {"context_only": False}), ("no_sdpa", {"sdpa": False}),
                     ("no_foreach_ema", {"foreach_ema": False})]
        if device.type == "cuda":
            variants += [("no_bf16", {"amp": False}), ("no_fused_adamw", {"fused_optimizer": False})]
            if compile_mode:
                variants += [("no_compile", {"compile_mode": None}),
                             ("plus_cuda_graphs", {"compile_mode": "reduce-overhead"})]
        else:
            variants += [("plus_fused_adamw", {"fused_optimizer": True}), ("plus_bf16", {"amp": True})]
            if not compile_mode:
                variants += [("plus_compile", {"compile_mode": "default"})]

    for name, knobs in variants:
        knobs = dict(knobs)
        Attention.use_sdpa = knobs.pop("sdpa", True)
        mode = knobs.pop("compile_mode", compile_mode)
        torch._dynamo.reset()

        def make_trainer(knobs: dict = knobs, mode: str | None = mode) -> Trainer:
            return Trainer(cfg, device, total_steps=10**6, compile_mode=mode, **knobs)

        try:
            with sdpa_backend(args.sdpa_backend):
                result = measure(make_trainer, batches, device, args.warmup, args.steps, args.repeats)
        except Exception as e:  # report a failing variant and go on with the others
            print(json.dumps({"bench": "pretrain", "variant": name, "error": f"{type(e).__name__}: {e}"[:300]}),
                  flush=True)
            continue
        clips = args.batch_size / (result["ms_per_step"] / 1000)
        row = {
            "bench": "pretrain", "variant": name, "preset": args.preset, "overrides": args.set, "data": args.data,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(), "torch": torch.__version__, "batch": args.batch_size,
            "compile": mode, "sdpa": args.sdpa_backend, "clips_per_s": round(clips, 1), **result,
            "gflop_per_clip": round(flops / 1e9, 2), "tflops": round(clips * flops / 1e12, 2),
            "mfu": None if peak is None else round(clips * flops / peak, 4),
        }
        print(json.dumps(row), flush=True)
    Attention.use_sdpa = True
    tmp.cleanup()


if __name__ == "__main__":
    main()
