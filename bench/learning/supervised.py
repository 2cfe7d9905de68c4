"""How much can pretraining on the demo's pool give at all? The same architecture trained *with* the pool's
labels, scored like the scaling study's encoders.

The scaling study (``scaling.py``) asks self-supervised recipes for an attentive gain of +15 pp over random init
on the demo's task. This script measures the head room that target sits in: for each seed and budget it trains
the pico encoder from that seed's initialisation, plus the probe's attentive head on its tokens (a linear
classifier on the mean token cannot read direction: mean pooling averages positions away), with
cross-entropy on the pool's 12 class labels (the demo's 4 task classes among them; the pool's 600 videos, never
the labelled set's), for the same clip-steps, batch, clip sampling and crops as pretraining (no horizontal flips:
they would swap move_left and move_right), AdamW with its own warm-up and cosine (``--lr``, ``--weight-decay``).
The encoder is then scored against the same random init with the scaling study's probe protocol, and its rows
carry the scaling rows' fields, so ``scaling.py --report`` reads them beside the recipes'.

Measured (docs/scaling.md, seventh round): at 20k clip-steps it does not learn (pool training accuracy 36 %), and
its frozen features read below random init.

    PYTHONPATH=src python bench/learning/supervised.py --seeds 1,2 --budgets 20000 --data-cache /tmp/c
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from inmemory import ArrayStore
from scaling import BASE, DEFAULT_2026_12_06, Evaluation, positive_int, rendered_data, summary_line

from picojepa.config import default_cache_side, load_config
from picojepa.data.dataset import clip_indices
from picojepa.data.transforms import random_resized_crop_params, train_transform
from picojepa.models import VideoViT
from picojepa.probe.heads import AttentiveHead
from picojepa.train.pretrain import initial_encoder


def train_supervised(encoder: VideoViT, bank: torch.Tensor, labels: torch.Tensor, classes: int, steps: int,
                     batch: int, lr: float, weight_decay: float, seed: int, device: torch.device) -> float:
    """``steps`` AdamW updates of encoder + attentive head (cross-entropy), warm-up then cosine; returns the
    last 50 steps' training accuracy."""
    cfg = encoder.cfg
    head = AttentiveHead(encoder.embed_dim, classes).to(device)
    params = [*encoder.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)
    rng, gen = np.random.default_rng(seed), torch.Generator().manual_seed(seed)
    frames_per_video, T = bank.shape[1], cfg.num_frames
    correct: list[float] = []
    encoder.train()
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) /
                                                                               max(1, steps - warmup)))
        for group in optimizer.param_groups:
            group["lr"] = lr * scale
        idx = torch.from_numpy(rng.choice(len(bank), batch, replace=False))
        starts = rng.integers(0, max(1, frames_per_video - T + 1), batch)
        t = torch.from_numpy(np.stack([clip_indices(frames_per_video, T, int(s)) for s in starts]))
        crops = random_resized_crop_params(batch, (0.3, 1.0), (3 / 4, 4 / 3), False, gen)
        video = train_transform(bank[idx[:, None], t].to(device), cfg.img_size, crops)
        logits = head(encoder(video))
        y = labels[idx].to(device)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        correct.append(float((logits.argmax(1) == y).float().mean()))
    encoder.eval()
    return float(np.mean(correct[-50:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--budgets", default="20000", help="clip-steps, one run each")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--data-cache", help="the scaling study's --data-cache (rendered once, shared)")
    ap.add_argument("--probe-seeds", type=positive_int, default=1,
                    help="heads trained from this many seeds, gains averaged")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=mp.cpu_count())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=f"bench/results/{datetime.now(timezone.utc):%Y-%m-%d}-supervised.jsonl")
    args = ap.parse_args()
    # the scaling study's data and evaluation settings (demo task, probe grid, 2 clips, low-shot 10 and 25)
    args.num_clips, args.probe_epochs, args.low_shot, args.twins = 2, 40, [10, 25], 128
    args.difficulty, args.pool_classes, args.pool_per_class, args.labelled_per_class = "medium", 12, 50, 400
    args.pool_background, args.centre_positions, args.low_shot_matched_steps = "static", False, False
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = load_config("pico", overrides=[*BASE, *DEFAULT_2026_12_06])
    pool, labelled, labels, twins, twin_idx = rendered_data(args, default_cache_side(cfg.model.img_size))
    pool_labels = torch.from_numpy(np.repeat(np.arange(args.pool_classes), args.pool_per_class))  # class-major
    if len(pool_labels) != len(pool):
        raise SystemExit(f"the cached pool holds {len(pool)} videos, expected {len(pool_labels)}")
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{mp.cpu_count()} CPU cores"
    common = {"preset": "pico", "batch": args.batch, "pool_videos": len(pool), "labelled_videos": len(labels),
              "difficulty": args.difficulty, "pool_background": args.pool_background, "device": machine,
              "torch": torch.__version__, "python": platform.python_version()}
    for seed in [int(s) for s in args.seeds.split(",")]:
        evaluation = Evaluation(args, ArrayStore(labelled), labels, ArrayStore(twins), twin_idx, seed, device)
        cfg.train.seed = seed
        evaluation.score(initial_encoder(cfg))
        for budget in [int(b) for b in args.budgets.split(",")]:
            t0 = time.perf_counter()
            encoder = initial_encoder(cfg).to(device)
            steps = budget // args.batch
            train_acc = train_supervised(encoder, pool, pool_labels, args.pool_classes, steps, args.batch, args.lr,
                                         args.weight_decay, seed, device)
            row = {**common, "recipe": "supervised-pool-labels", "lr": args.lr, "weight_decay": args.weight_decay,
                   "head": "attentive", "seed": seed, "budget": budget, "steps": steps, "kind": "final",
                   "clip_steps": steps * args.batch,
                   "train_accuracy_last50": round(train_acc, 4), **evaluation.score(encoder),
                   "seconds": round(time.perf_counter() - t0)}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(summary_line(row) + f" · pool training accuracy {100 * train_acc:.1f} %", flush=True)


if __name__ == "__main__":
    main()
