"""Wall time of one independent experiment (General + N Partials) with the local and the Ray backend.

The experiment is the quick demo's independent protocol: the synthetic benchmark (real mp4 files, so
PyAV is needed), a 10-class unlabelled pool and a 4-class labelled set, every encoder pretrained from
scratch in a fresh folder. Three runs:

- ``local``: one job after another in this process, torch on all cores (the default);
- ``local-1-thread``: the same with one torch thread per job;
- ``ray``: a local Ray instance with ``--cpus-per-member`` CPUs per task (one torch thread each), so
  ``cores / cpus-per-member`` members train at once.

``ray`` and ``local-1-thread`` use the same thread count per job, so their ``report.json`` must agree
exactly (timings aside); the bench checks it.

    PYTHONPATH=src python bench/speed/backends.py                # tiny preset, 4 members (a few minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import torch


def comparable(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """The report without timings and with its own folder written as <out>."""
    timing = {"timings_s", "seconds", "pretrain_seconds"}

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k not in timing}
        return [strip(v) for v in node] if isinstance(node, list) else node

    return strip(json.loads(json.dumps(report).replace(str(out), "<out>")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--pool-per-class", type=int, default=8)
    ap.add_argument("--labelled-per-class", type=int, default=14)
    ap.add_argument("--probe-epochs", type=int, default=40)
    ap.add_argument("--cpus-per-member", type=int, default=1)
    ap.add_argument("--work", default=None, help="folder for data and runs (default: a temporary one)")
    ap.add_argument("--results", default="bench/results")
    args = ap.parse_args()

    from picojepa.config import load_config
    from picojepa.data import load_videos, prepare_videos
    from picojepa.datasets.synth import generate_dataset
    from picojepa.experiment.backends import LocalBackend, RayBackend
    from picojepa.experiment.run import ExperimentSettings, run_experiment

    tmp = tempfile.TemporaryDirectory() if args.work is None else None
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    data = work / "data"
    pool = generate_dataset(data / "pool", classes=10, videos_per_class=args.pool_per_class, size=64, frames=24,
                            fps=12, seed=1, progress=False)
    labelled = generate_dataset(data / "labelled", classes=["move_left", "move_right", "rotate_cw", "rotate_ccw"],
                                videos_per_class=args.labelled_per_class, size=64, frames=24, fps=12, seed=2,
                                progress=False)
    settings = ExperimentSettings(data=str(labelled), pretrain_data=str(pool), preset=args.preset,
                                  overrides=["data.num_workers=0", f"train.epochs={args.epochs}"],
                                  members=args.members, mode="independent", probe_epochs=args.probe_epochs)
    cores = os.cpu_count() or 1
    runs: dict[str, tuple[float, dict[str, Any]]] = {}
    # The clip cache is built once, outside the timings: every run then decodes nothing.
    cfg = load_config(args.preset, overrides=settings.overrides)
    for videos in (pool, labelled):
        prepare_videos(load_videos(videos), cfg, progress=False, cache_dir=work / "cache")
    for name in ("local", "local-1-thread", "ray"):
        out = work / name
        t0 = time.perf_counter()
        if name == "ray":
            with RayBackend(cpus_per_member=args.cpus_per_member, local_cpus=cores, progress=False) as backend:
                result = run_experiment(settings, out, cache_dir=work / "cache", progress=False, figures=False,
                                        quiet_tables=True, backend=backend)
        else:
            backend = LocalBackend(threads=1 if name == "local-1-thread" else None, progress=False)
            result = run_experiment(settings, out, cache_dir=work / "cache", progress=False, figures=False,
                                    quiet_tables=True, backend=backend)
        runs[name] = (time.perf_counter() - t0, comparable(result.report, out))
        print(f"{name}: {runs[name][0]:.1f} s", flush=True)

    same = runs["ray"][1] == runs["local-1-thread"][1]
    stamp = {"bench": "backends", "date": date.today().isoformat(), "cores": cores, "cpu": platform.machine(),
             "torch": torch.__version__, "preset": args.preset, "members": args.members, "epochs": args.epochs,
             "mode": "independent", "ray_cpus_per_member": args.cpus_per_member}
    rows = [{**stamp, "backend": name, "wall_s": round(wall, 1)} for name, (wall, _) in runs.items()]
    rows[-1]["report_equals_local_1_thread"] = same
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{date.today().isoformat()}-cpu-backends.jsonl"
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"\n{args.members}-member independent experiment ({args.preset}, {args.epochs} epochs), {cores} CPU cores")
    print("backend          wall (s)")
    for name, (wall, _) in runs.items():
        print(f"{name:15s}  {wall:8.1f}")
    print(f"ray report.json equals local-1-thread's (timings aside): {same}; JSON lines appended to {path}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
