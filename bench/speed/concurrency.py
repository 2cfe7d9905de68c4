"""Several ensemble members on one GPU: does running K members at once use a big GPU better?

Each member is its own process, as Ray places tasks that ask for a fraction of a GPU (no MPS: the
processes time-slice the device and overlap their CPU-side work). Every process trains the real
``Trainer`` on a GPU-resident clip bank (``DeviceClipBank``, the path pretraining takes when the cache
fits) filled with synthetic clips: no decoder, no files, no network — only ``PYTHONPATH=src`` and torch.

1. Throughput: aggregate clips/s of K = 1, 2, 4 concurrent members at batch 32, 64 and 256 (all start
   together after their warm-up; clips of all members / time from the first start to the last finish).
2. A 4-member independent experiment — General on the whole pool plus four Partials on a quarter each:
   pretraining, then frozen features of a labelled set (heads are negligible next to these) — run one
   job after another in one process, then on 4 concurrent processes (``--gpus-per-member 0.25``).

    PYTHONPATH=src python bench/speed/concurrency.py                     # GPU defaults: pico, under ~4 minutes
    PYTHONPATH=src python bench/speed/concurrency.py --device cpu --preset tiny --quick      # smoke run

Prints two tables and appends one JSON line per measurement to ``<results>/<date>-<device>-concurrency.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

SLOTS = 4  # members sharing the GPU in the experiment: what --gpus-per-member 0.25 allows


class SyntheticStore:
    """A frame store of ``videos`` synthetic videos (a few distinct arrays, shared to spare host memory)."""

    def __init__(self, videos: int, frames: int, side: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.base = [rng.integers(0, 256, size=(frames, side, side, 3), dtype=np.uint8) for _ in range(4)]
        self.videos = videos

    def __len__(self) -> int:
        return self.videos

    def frames(self, index: int) -> np.ndarray:
        return self.base[index % len(self.base)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(spec: dict[str, Any], videos: int, steps: int, seed: int) -> tuple[Any, Any, Any]:
    from picojepa.config import cache_size, load_config
    from picojepa.data.device_bank import DeviceClipBank
    from picojepa.train.pretrain import Trainer

    device = torch.device(spec["device"])
    cfg = load_config(spec["preset"], overrides=[f"train.seed={seed}", f"train.batch_size={spec['batch']}"])
    store = SyntheticStore(videos, cfg.model.num_frames, cache_size(cfg), seed)
    trainer = Trainer(cfg, device, total_steps=steps)
    bank = DeviceClipBank(store, device, cfg.model.num_frames, seed)  # type: ignore[arg-type]
    return trainer, bank.batches(trainer.masks, spec["batch"], steps), device


def _throughput(spec: dict[str, Any], ready: Any, go: Any) -> dict[str, Any]:
    """Warm up, wait for the others, then time ``steps`` steps."""
    warmup, steps = spec["warmup"], spec["steps"]
    trainer, batches, device = _setup(spec, videos=4 * spec["batch"], steps=warmup + steps, seed=spec["seed"])
    for _ in range(warmup):
        trainer.step(next(batches))
    _sync(device)
    ready.put(spec["member"])
    go.wait()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(next(batches))
    _sync(device)
    end = time.perf_counter()
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"start": start, "end": end, "clips": steps * spec["batch"], "peak_mem_gib": peak}


def _experiment_job(spec: dict[str, Any]) -> dict[str, Any]:
    """One encoder of the experiment: pretrain on its share of the pool, then encode the labelled set."""
    from picojepa.probe.features import encode_clips

    start = time.perf_counter()
    steps = spec["epochs"] * (spec["videos"] // spec["batch"])
    trainer, batches, device = _setup(spec, spec["videos"], steps, spec["seed"])
    for _ in range(steps):
        trainer.step(next(batches))
    encoder = trainer.model.target_encoder.eval()
    shape = (spec["feature_batch"], trainer.cfg.model.num_frames, spec["side"], spec["side"], 3)
    clips = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    for _ in range(spec["feature_clips"] // spec["feature_batch"]):
        encode_clips(encoder, clips, device).mean(1).cpu()
    _sync(device)
    return {"name": spec["name"], "steps": steps, "start": start, "end": time.perf_counter()}


def _worker(tasks: Any, shared: Any, results: Any, ready: Any, go: Any) -> None:
    """A persistent member process: CUDA starts once, then it runs what it is sent until told to stop.
    ``("throughput", spec)`` is one timed run; ``("drain", None)`` takes experiment jobs from the shared
    queue, one after another, until it meets a stop mark."""
    while (task := tasks.get()) is not None:
        kind, spec = task
        if kind == "drain":
            while (job := shared.get()) is not None:
                results.put(_guarded(_experiment_job, job))
            continue
        out = _guarded(_throughput, spec, ready, go)
        if "error" in out:
            ready.put(spec["member"])  # never leave the others waiting for this one
        results.put(out)


def _guarded(fn: Any, *args: Any) -> dict[str, Any]:
    try:
        return fn(*args)
    except Exception as e:  # e.g. out of memory at K = 4, batch 256: reported, the bench goes on
        return {"error": f"{type(e).__name__}: {e}"[:300]}
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class Pool:
    def __init__(self, size: int) -> None:
        ctx = mp.get_context("spawn")
        self.tasks = [ctx.Queue() for _ in range(size)]
        self.shared = ctx.Queue()  # experiment jobs: whichever member is free takes the next
        self.results, self.ready, self.go = ctx.Queue(), ctx.Queue(), ctx.Event()
        self.procs = [ctx.Process(target=_worker, args=(q, self.shared, self.results, self.ready, self.go),
                                  daemon=True) for q in self.tasks]
        for p in self.procs:
            p.start()

    def throughput(self, spec: dict[str, Any], k: int) -> list[dict[str, Any]]:
        self.go.clear()
        for member in range(k):
            self.tasks[member].put(("throughput", {**spec, "member": member, "seed": member}))
        for _ in range(k):
            self.ready.get(timeout=600)
        self.go.set()
        return [self.results.get(timeout=600) for _ in range(k)]

    def run_jobs(self, jobs: list[dict[str, Any]], slots: int) -> list[dict[str, Any]]:
        """``jobs`` on ``slots`` members at once, in order (longest first), each free member taking the next."""
        for job in jobs:
            self.shared.put(job)
        for member in range(slots):
            self.shared.put(None)  # one stop mark per draining member
            self.tasks[member].put(("drain", None))
        return [self.results.get(timeout=900) for _ in jobs]

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--preset", default="pico")
    ap.add_argument("--ks", default="1,2,4", help="concurrent members to measure")
    ap.add_argument("--batches", default="32,64,256", help="batch sizes (clips per member step)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per member")
    ap.add_argument("--pool", type=int, default=1024, help="experiment: pretraining pool (clips); Partials get 1/4")
    ap.add_argument("--epochs", type=int, default=4, help="experiment: pretraining epochs of every encoder")
    ap.add_argument("--exp-batch", type=int, default=32, help="experiment: pretraining batch size")
    ap.add_argument("--feature-clips", type=int, default=1024, help="experiment: labelled clips encoded per encoder")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run on a CPU")
    ap.add_argument("--results", default="bench/results", help="folder for the JSON lines")
    args = ap.parse_args()
    if args.quick:
        args.ks, args.batches, args.warmup, args.steps = "1,2", "8,16", 2, 4
        args.pool, args.epochs, args.exp_batch, args.feature_clips = 64, 2, 8, 32
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu (and --quick) or on a GPU machine")
    ks = [int(k) for k in args.ks.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    from picojepa.config import cache_size, load_config

    side = cache_size(load_config(args.preset))
    name = _device_name(args.device)
    stamp = {"device": name, "preset": args.preset, "torch": torch.__version__, "date": date.today().isoformat()}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    path = out / f"{date.today().isoformat()}-{slug}-concurrency.jsonl"
    rows: list[dict[str, Any]] = []

    pool = Pool(max(max(ks), SLOTS))
    t_all = time.perf_counter()
    try:
        table: dict[int, dict[int, dict[str, Any]]] = {}
        for batch in batches:
            for k in ks:
                spec = {"device": args.device, "preset": args.preset, "batch": batch, "warmup": args.warmup,
                        "steps": args.steps}
                members = pool.throughput(spec, k)
                errors = [m["error"] for m in members if "error" in m]
                row: dict[str, Any] = {"bench": "concurrency", "part": "throughput", **stamp, "batch": batch,
                                       "members": k, "steps": args.steps}
                if errors:
                    row["error"] = errors[0]
                else:
                    span = max(m["end"] for m in members) - min(m["start"] for m in members)
                    clips = sum(m["clips"] for m in members)
                    peaks = [m["peak_mem_gib"] for m in members if m["peak_mem_gib"] is not None]
                    row.update(clips_per_s=round(clips / span, 1), seconds=round(span, 2),
                               per_member_clips_per_s=[round(m["clips"] / (m["end"] - m["start"]), 1)
                                                       for m in members],
                               peak_mem_gib_per_member=round(max(peaks), 2) if peaks else None)
                table.setdefault(batch, {})[k] = row
                rows.append(row)
                print(json.dumps(row), flush=True)

        quarter = args.pool // 4
        common = {"device": args.device, "preset": args.preset, "batch": args.exp_batch, "epochs": args.epochs,
                  "side": side, "feature_clips": args.feature_clips, "feature_batch": min(64, args.feature_clips)}
        jobs = [{**common, "name": "general", "videos": args.pool, "seed": 0}] + [
            {**common, "name": f"partial_{i}", "videos": quarter, "seed": i} for i in range(1, 5)]
        walls = {}
        for mode, slots in (("sequential", 1), ("concurrent", SLOTS)):
            t0 = time.perf_counter()
            done = pool.run_jobs(jobs, slots)
            walls[mode] = time.perf_counter() - t0
            errors = [d["error"] for d in done if "error" in d]
            row = {"bench": "concurrency", "part": "experiment", **stamp, "mode": mode, "slots": slots,
                   "encoders": len(jobs), "pool_clips": args.pool, "epochs": args.epochs, "batch": args.exp_batch,
                   "pretrain_steps": sum(d.get("steps", 0) for d in done), "feature_clips": args.feature_clips,
                   "wall_s": round(walls[mode], 2), **({"error": errors[0]} if errors else {})}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        pool.close()

    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"\nMembers sharing one device: {name}, preset {args.preset}, {args.steps} timed steps per member")
    header = "batch  " + "  ".join(f"K={k} clips/s (×K=1)" for k in ks)
    print(header)
    for batch, by_k in table.items():
        base = by_k.get(ks[0], {}).get("clips_per_s")
        cells = []
        for k in ks:
            value = by_k[k].get("clips_per_s")
            cells.append(f"{'error':>18s}" if value is None else
                         f"{value:10.1f} (×{value / base:.2f})" if base else f"{value:18.1f}")
        print(f"{batch:5d}  " + "  ".join(cells))
    seq, conc = walls.get("sequential"), walls.get("concurrent")
    if seq and conc:
        print(f"\n4-member independent experiment (General + 4 Partials: pretraining + features), pool "
              f"{args.pool} clips, {args.epochs} epochs, batch {args.exp_batch}: sequential {seq:.1f} s, "
              f"{SLOTS} members at once {conc:.1f} s (×{seq / conc:.2f})")
    print(f"bench wall time {time.perf_counter() - t_all:.0f} s; JSON lines appended to {path}")


if __name__ == "__main__":
    main()
