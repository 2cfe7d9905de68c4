"""Which layers should a frozen probe read? Saved encoders (``scaling.py --snapshots``) scored against their
random initialisation with the experiment's probe protocol, reading the last block (the default), the mean of
the last k blocks, their concatenation (V-JEPA 2's motion probes concatenate the last four), or one block
``blockK`` (an intermediate layer: does it keep what the last block loses in long runs?).

    PYTHONPATH=src python bench/learning/readout.py /tmp/snap/* --readouts last,mean4,concat4 --data-cache /tmp/c

``--probe-seeds N`` reads each encoder with N probe seeds (gains averaged: the fifth round of docs/scaling.md);
``--centre-positions`` and ``--low-shot-matched-steps`` are the two read-out changes that round measured;
``--labelled-per-class`` reads with a larger labelled set (tenth round).
Snapshots of one seed per call (``--seed``): the random-init encoder is that seed's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path

import torch
from inmemory import ArrayStore
from scaling import BASE, Evaluation, positive_int, rendered_data, summary_line
from torch import nn

from picojepa.config import default_cache_side, load_config
from picojepa.models import VideoViT
from picojepa.train.checkpoint import config_from_run, load_encoder
from picojepa.train.pretrain import initial_encoder


class LayerReadout(nn.Module):
    """An encoder whose tokens are its last ``k`` blocks' outputs (each through the final LayerNorm), averaged
    (``mean``) or concatenated (``concat``), or block ``k``'s alone (``block``, counted from 1)."""

    def __init__(self, encoder: VideoViT, k: int, how: str) -> None:
        super().__init__()
        self.encoder, self.k, self.how = encoder, k, how
        self.cfg, self.num_tokens = encoder.cfg, encoder.num_tokens
        if not 1 <= k <= len(encoder.blocks):
            raise SystemExit(f"{how}{k}: the encoder has {len(encoder.blocks)} blocks")
        self.embed_dim = encoder.embed_dim * (k if how == "concat" else 1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x, outputs = self.encoder.tokenize(video), []
        for block in self.encoder.blocks:
            x = block(x)
            outputs.append(self.encoder.norm(x))
        if self.how == "block":
            return outputs[self.k - 1]
        last = outputs[-self.k:]
        return torch.stack(last).mean(0) if self.how == "mean" else torch.cat(last, dim=-1)


def readout(encoder: VideoViT, name: str) -> nn.Module:
    if name == "last":
        return encoder
    how, k = name.rstrip("0123456789"), int(name[len(name.rstrip("0123456789")):])
    return LayerReadout(encoder, k, how)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="run folders (snapshots) of one seed's runs")
    ap.add_argument("--readouts", default="last,mean4,concat4")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-cache")
    ap.add_argument("--out", default="bench/results/readout.jsonl")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--workers", type=int, default=mp.cpu_count())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--probe-seeds", type=positive_int, default=1,
                    help="heads trained from this many seeds, gains averaged")
    ap.add_argument("--centre-positions", action="store_true",
                    help="probe tokens minus each position's mean over the training videos")
    ap.add_argument("--low-shot-matched-steps", action="store_true",
                    help="low-shot heads train for as many steps as the full-data head")
    ap.add_argument("--labelled-per-class", type=positive_int, default=400,
                    help="labelled videos per class (split 50/10/40 %% as always): does a turn hold with more labels?")
    args = ap.parse_args()
    # the scaling study's evaluation settings (demo task, probe grid, 2 clips, low-shot 10 and 25)
    args.num_clips, args.probe_epochs, args.low_shot, args.twins = 2, 40, [10, 25], 128
    args.difficulty, args.pool_classes, args.pool_per_class = "medium", 12, 50
    args.pool_background = "static"  # only the labelled set is read, and it is static whatever the pool was
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    side = default_cache_side(load_config("pico", overrides=BASE).model.img_size)
    _, labelled, labels, twins, twin_idx = rendered_data(args, side)
    for name in args.readouts.split(","):
        evaluation = Evaluation(args, ArrayStore(labelled), labels, ArrayStore(twins), twin_idx, args.seed, device)
        cfg = config_from_run(args.runs[0])
        cfg.train.seed = args.seed
        evaluation.score(readout(initial_encoder(cfg), name))
        for run in args.runs:
            t = time.perf_counter()
            meta = json.loads((Path(run) / "config.json").read_text())
            row = {"run": Path(run).name, "readout": name, "recipe": Path(run).name, "seed": args.seed,
                   "labelled_per_class": args.labelled_per_class,
                   "kind": "snapshot", "clip_steps": meta["clip_steps"],
                   **evaluation.score(readout(load_encoder(run), name)), "seconds": round(time.perf_counter() - t)}
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"[{name}] " + summary_line(row), flush=True)


if __name__ == "__main__":
    main()
