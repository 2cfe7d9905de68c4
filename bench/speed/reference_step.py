"""Our pretraining step against a minimal, correct JEPA step written from scratch, side by side in one run.

The reference is what a careful reader would write in plain torch for the same model: the context encoder
embeds only the visible tubelets (no leak), a narrow predictor with mask tokens, layer-normed targets from an
EMA copy, L1 loss, AdamW, the EMA update — and nothing else: no augmentation beyond a fixed crop, no schedules,
no regulariser, no gradient clipping. Both run the same config on the same uint8 clips and masks; rounds
alternate (reference, ours, reference, …) so a busy machine slows both alike, and the ratio is what to read.
``--profile`` prints where our step spends its time (torch.profiler, CPU).

    PYTHONPATH=src python bench/speed/reference_step.py --preset pico-112 --batch-size 8 --rounds 5
    PYTHONPATH=src python bench/speed/reference_step.py --set train.regularizer=none --profile
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from picojepa.config import Config, cache_size, load_config
from picojepa.data.dataset import TrainBatch
from picojepa.models.vit import VideoViT
from picojepa.train.pretrain import Trainer, deterministic_kernels

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1, 1)


class ReferencePredictor(nn.Module):
    """Context tokens + mask tokens at the target positions → predictions at the targets."""

    def __init__(self, cfg: Config, num_tokens: int) -> None:
        super().__init__()
        m = cfg.model
        self.embed = nn.Linear(m.embed_dim, m.pred_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, m.pred_embed_dim))
        self.pos = nn.Parameter(torch.randn(1, num_tokens, m.pred_embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(m.pred_embed_dim, m.pred_num_heads, int(m.pred_embed_dim * m.mlp_ratio),
                                           dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, m.pred_depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(m.pred_embed_dim)
        self.proj = nn.Linear(m.pred_embed_dim, m.embed_dim)

    def forward(self, context: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pos = self.pos.expand(context.shape[0], -1, -1)
        take = lambda x, i: x.gather(1, i.unsqueeze(-1).expand(-1, -1, x.shape[-1]))  # noqa: E731
        x = torch.cat([self.embed(context) + take(pos, keep), self.mask_token + take(pos, target)], dim=1)
        return self.proj(self.norm(self.blocks(x)[:, keep.shape[1]:]))


class ReferenceStep:
    """A plain correct JEPA update: leak-free context, EMA targets, L1, AdamW, EMA."""

    def __init__(self, cfg: Config) -> None:
        torch.manual_seed(0)
        self.cfg = cfg
        self.encoder = VideoViT(cfg.model)
        self.target = copy.deepcopy(self.encoder).requires_grad_(False).eval()
        self.predictor = ReferencePredictor(cfg, self.encoder.num_tokens)
        params = [*self.encoder.parameters(), *self.predictor.parameters()]
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)

    def __call__(self, frames: torch.Tensor, keep: torch.Tensor, target: torch.Tensor) -> None:
        size = self.cfg.model.img_size
        x = frames[:, :, :size, :size].permute(0, 4, 1, 2, 3).float().div_(255)  # (B, 3, T, S, S)
        video = (x - MEAN) / STD
        with torch.no_grad():
            feats = F.layer_norm(self.target(video), (self.encoder.embed_dim,))
            goal = feats.gather(1, target.unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
        loss = F.l1_loss(self.predictor(self.encoder(video, keep), keep, target), goal)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.target.parameters()), list(self.encoder.parameters()), 0.004)


def timed(fn, steps: int) -> float:
    t0 = time.perf_counter()
    for step in range(steps):
        fn(step)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pico-112")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--set", action="append", default=[], help="config override section.field=value")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--profile", action="store_true", help="also profile our step (torch.profiler)")
    ap.add_argument("--out", default=f"bench/results/{datetime.now(timezone.utc):%Y-%m-%d}-cpu-reference-step.jsonl")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, overrides=args.set)
    cfg.train.device = "cpu"
    side, batch, device = cache_size(cfg), args.batch_size, torch.device("cpu")
    frames = torch.randint(0, 256, (batch, cfg.model.num_frames, side, side, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    ours = Trainer(cfg, device, total_steps=10**6)
    masks = [ours.masks(batch, [0, i]) for i in range(8)]
    reference = ReferenceStep(cfg)

    def run_ours(step: int) -> None:
        ours.step(TrainBatch(frames, masks[step % 8], step, []))

    def run_reference(step: int) -> None:
        m = masks[step % 8][0]
        reference(frames, m.keep, m.target)

    times: dict[str, list[float]] = {"reference": [], "ours": []}
    with deterministic_kernels(cfg.train.deterministic, device):
        for fn in (run_reference, run_ours):  # warm-up
            timed(fn, 3)
        for _ in range(args.rounds):
            times["reference"].append(timed(run_reference, args.steps))
            times["ours"].append(timed(run_ours, args.steps))
        ratios = [r / o for r, o in zip(times["reference"], times["ours"], strict=True)]
        row = {"bench": "reference_step", "preset": args.preset, "batch": batch, "overrides": args.set,
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "reference_clips_per_s": round(batch / statistics.median(times["reference"]), 1),
               "ours_clips_per_s": round(batch / statistics.median(times["ours"]), 1),
               "ours_vs_reference": round(statistics.median(ratios), 3),
               "ratio_per_round": [round(r, 3) for r in ratios],
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        print(json.dumps(row), flush=True)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                timed(run_ours, args.steps)
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
