"""Where the time of one pretraining step goes: torch.profiler's top operators, by device time.

    PYTHONPATH=src python bench/speed/profile_step.py --preset pico --device cuda --batch-size 256
"""

from __future__ import annotations

import argparse

import torch
from pretrain import synthetic_batches
from torch.profiler import ProfilerActivity, profile

from picojepa.config import cache_size, load_config
from picojepa.train.pretrain import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pico-112")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = load_config(args.preset)
    trainer = Trainer(cfg, device, total_steps=10**6, compile_mode="default" if args.compile else None)
    batches = synthetic_batches(trainer, args.batch_size, cache_size(cfg), device)
    for _ in range(3):
        trainer.step(next(batches))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(args.steps):
            trainer.step(next(batches))
        if device.type == "cuda":
            torch.cuda.synchronize()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
