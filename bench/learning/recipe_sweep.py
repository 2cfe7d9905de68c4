"""Which pretraining recipe makes a pico-JEPA encoder beat its own random initialisation?

Renders the synthetic motion benchmark in memory (no video files, so no PyAV is needed: it runs on a
bare GPU image), pretrains every recipe with the library's Trainer for the same number of clip-steps,
then scores the EMA encoder *and* the random-init encoder (same architecture and seed) with frozen
attentive and linear probes on held-out labelled clips: 60/20/20 stratified splits, epoch chosen on
validation, test accuracy averaged over split seeds. Prints a table and appends JSON lines.

    PYTHONPATH=src python bench/learning/recipe_sweep.py --device cuda --recipes all --budget 40000
    PYTHONPATH=src python bench/learning/recipe_sweep.py --device cpu --recipes vjepa,future2 --budget 2000 --quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from inmemory import ArrayStore, check_recipes, pretrain_in_memory, render_set

from picojepa.config import default_cache_side, load_config
from picojepa.data.splits import stratified_split
from picojepa.datasets.synth import CLASS_NAMES
from picojepa.probe.classifier import ProbeConfig, head_probabilities, train_head
from picojepa.probe.features import extract_features
from picojepa.train.pretrain import initial_encoder

# The set-up, and the objective's settings as they were when these recipes were measured (library defaults
# until 2026-12-04), pinned so that a later change of default cannot change what a recipe name measures.
BASE = ["model.img_size=64", "data.frame_stride=2", "train.lr=5e-4", "train.reg_scale_free=false",
        "train.vicreg_std=1.0", "train.vicreg_cov_weight=1.0", "mask.ratio=0.75", "train.pixel_weight=0.0",
        "model.drop_path=0.0"]
# Every recipe states its regulariser (and its targets): since VICReg became the library default, a recipe that
# left them out silently measured VICReg instead of the plain objective it was named after.
PLAIN = ["train.targets=ema", "train.regularizer=none"]
VICREG_LOCAL_1 = ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0", "train.reg_on=local"]
RECIPES: dict[str, list[str]] = {
    "vjepa": PLAIN,  # V-JEPA's objective with this project's defaults (EMA capped to the run, stretch 1.25)
    "vicreg-local-3": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=3.0", "train.reg_on=local"],
    "vicreg-local-1-lr1e-3": [*VICREG_LOCAL_1, "train.lr=1e-3"],
    "vicreg-local-0.1": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=0.1", "train.reg_on=local"],
    "vicreg-local-1": VICREG_LOCAL_1,
    "sigreg-local-0.05": ["train.targets=ema", "train.regularizer=sigreg", "train.reg_weight=0.05",
                          "train.reg_on=local"],
    "sigreg-local-0.5": ["train.targets=ema", "train.regularizer=sigreg", "train.reg_weight=0.5", "train.reg_on=local"],
    "future2+vicreg-local-1": ["mask.future_slices=2", *VICREG_LOCAL_1],
    "stopgrad+sigreg-local-0.5": ["train.ema_start=0", "train.ema_end=0", "train.targets=ema",
                                  "train.regularizer=sigreg", "train.reg_weight=0.5",
                                  "train.reg_on=local"],  # LeJEPA-like: no EMA teacher
    "patch8+vicreg-local-1": ["model.patch_size=8", *VICREG_LOCAL_1],
    "clip-target+vicreg-local-1": ["train.target_norm=clip", *VICREG_LOCAL_1],
    "clip-target": ["train.target_norm=clip", *PLAIN],
    "vicreg-tokens-1": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=1.0",
                        "train.reg_on=tokens"],
    "no-ema-cap": ["train.ema_max_init_fraction=1.0", *PLAIN],  # the old behaviour: EMA mostly init after short runs
    "lr2e-4": ["train.lr=2e-4", *PLAIN],
    "lr1e-3": ["train.lr=1e-3", *PLAIN],
    "long-range": ["mask.long_range=true", *PLAIN],
    "tube": ["mask.type=tube", *PLAIN],
    "future2": ["mask.future_slices=2", *PLAIN],
    "vicreg": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_weight=0.1", "train.reg_on=tokens"],
    "sigreg": ["train.targets=ema", "train.regularizer=sigreg", "train.reg_weight=0.05", "train.reg_on=tokens"],
    "patch8": ["model.patch_size=8", *PLAIN],
}
# Labelled tasks over the labelled set's classes: motion kinds, and direction pairs.
LABELLED = ("move_left", "move_right", "rotate_cw", "rotate_ccw", "approach", "oscillate")
TASKS = {"kinds": ("move_right", "rotate_cw", "approach", "oscillate"),
         "directions": ("move_left", "move_right", "rotate_cw", "rotate_ccw")}


def probe_scores(encoder: torch.nn.Module, store: ArrayStore, labels: np.ndarray, args: argparse.Namespace,
                 device: torch.device) -> dict[str, float]:
    """Mean test accuracy per (task, head) over the split seeds."""
    feats = extract_features(encoder.to(device).eval(), store, args.num_clips, keep_tokens=True, progress=False,
                             batch_size=256)
    scores = {}
    for task, classes in ((t, TASKS[t]) for t in args.tasks):
        codes = [LABELLED.index(c) for c in classes]
        rows = np.flatnonzero(np.isin(labels, codes))
        y = np.full(len(labels), -1)
        y[rows] = [codes.index(v) for v in labels[rows]]
        for head in args.heads:
            accs = []
            for seed in range(args.probe_seeds):
                split = stratified_split(y[rows], args.fractions, seed=seed)
                train, val, test = (rows[split[k]] for k in ("train", "val", "test"))
                probe = ProbeConfig(head=head, epochs=args.probe_epochs, num_clips=args.num_clips, seed=seed)
                trained = train_head(feats, y, train, val, len(classes), probe, device=device)
                probs = head_probabilities(trained.head.to(device), feats, test, head, args.num_clips)
                accs.append(float((probs.argmax(1) == y[test]).mean()))
            scores[f"{task}/{head}"] = float(np.mean(accs))
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="pico")
    ap.add_argument("--recipes", default="all", help="comma-separated names from RECIPES, or all")
    ap.add_argument("--extra", action="append", default=[], help="override applied to every recipe")
    ap.add_argument("--budget", type=int, default=40000, help="pretraining clip-steps per recipe")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--pool-classes", type=int, default=12)
    ap.add_argument("--pool-per-class", type=int, default=50)
    ap.add_argument("--labelled-per-class", type=int, default=150)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--stride", type=int, default=2)
    ap.add_argument("--difficulty", default="easy")
    ap.add_argument("--heads", default="attentive,linear")
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, from {', '.join(TASKS)}")
    ap.add_argument("--fractions", default="0.6,0.2,0.2", help="train,val,test shares of the labelled set")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--probe-seeds", type=int, default=2)
    ap.add_argument("--probe-epochs", type=int, default=40)
    ap.add_argument("--num-clips", type=int, default=2)
    ap.add_argument("--workers", type=int, default=mp.cpu_count())
    ap.add_argument("--online", action="store_true", help="also probe the online (context) encoder")
    ap.add_argument("--time-limit", type=float, default=1e9, help="start no recipe after this many seconds")
    ap.add_argument("--out", default=f"bench/results/{datetime.now(timezone.utc):%Y-%m-%d}-recipe-sweep.jsonl")
    ap.add_argument("--tag", default="")
    args = ap.parse_args()
    args.heads = args.heads.split(",")
    args.tasks = args.tasks.split(",")
    args.fractions = tuple(float(f) for f in args.fractions.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    check_recipes(RECIPES, BASE)
    names = list(RECIPES) if args.recipes == "all" else args.recipes.split(",")
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 as on the CPU
    t0 = time.perf_counter()

    first = load_config(args.preset, overrides=[*BASE, *args.extra])
    side = default_cache_side(first.model.img_size)
    render = dict(size=args.size, frames=args.frames, difficulty=args.difficulty, stride=args.stride, side=side,
                  workers=args.workers)
    pool, _ = render_set(CLASS_NAMES[: args.pool_classes], args.pool_per_class, 1, **render)
    labelled, labels = render_set(LABELLED, args.labelled_per_class, 2, **render)
    bank = pool.to(device)
    store = ArrayStore(labelled)
    print(f"rendered {len(pool)} pool + {len(labelled)} labelled videos in {time.perf_counter() - t0:.0f} s "
          f"on {args.workers} processes", flush=True)

    random_cache: dict[str, dict[str, float]] = {}
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    machine = torch.cuda.get_device_name() if device.type == "cuda" else f"{mp.cpu_count()} CPU cores"
    header = f"{'recipe':18s} {'s':>5s} " + " ".join(f"{k:>20s}" for k in
                                                       [f"{t}/{h}" for t in args.tasks for h in args.heads])
    print(header, flush=True)
    for name in names:
        if time.perf_counter() - t0 > args.time_limit:
            print(f"time limit reached: {name} and later recipes skipped", flush=True)
            break
        cfg = load_config(args.preset, overrides=[*BASE, *RECIPES[name], *args.extra])
        cfg.train.device = args.device
        steps = max(1, args.budget // args.batch)
        key = json.dumps([cfg.to_dict()["model"], cfg.train.seed])
        if key not in random_cache:
            random_cache[key] = probe_scores(initial_encoder(cfg), store, labels, args, device)
            print(f"{'random init':18s} {'':>5s} " + " ".join(f"{v:20.3f}" for v in random_cache[key].values()),
                  flush=True)
        t = time.perf_counter()
        trainer = pretrain_in_memory(cfg, bank, steps, args.batch, device)
        train_s = time.perf_counter() - t
        scores = probe_scores(trainer.model.evaluation_encoder, store, labels, args, device)
        online = probe_scores(trainer.model.encoder, store, labels, args, device) if args.online else {}
        gains = {k: scores[k] - random_cache[key][k] for k in scores}
        print(f"{name:18s} {train_s:5.0f} " + " ".join(f"{v:8.3f} ({gains[k]:+.3f})" for k, v in scores.items()),
              flush=True)
        row = {"recipe": name, "overrides": RECIPES[name] + args.extra, "preset": args.preset, "budget": args.budget,
               "batch": args.batch, "steps": steps, "fractions": list(args.fractions),
               "labelled_per_class": args.labelled_per_class, "train_seconds": round(train_s, 1), "ema": scores,
               "online": online, "random_init": random_cache[key], "gain_ema": gains,
               "ema_init_fraction": trainer.schedules.init_fraction(), "tag": args.tag,
               "pool_videos": len(pool), "labelled_videos": len(labelled), "device": machine,
               "torch": torch.__version__, "python": platform.python_version(),
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"total {time.perf_counter() - t0:.0f} s; results appended to {out_path}", flush=True)


if __name__ == "__main__":
    main()
