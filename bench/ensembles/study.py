"""The ensemble study (issue 19): every protocol on one labelled set and pool, same seeds and splits, K repeats.

Generates (or reuses) the synthetic benchmark — a labelled set made of three scene families (easy, medium,
hard), and a pretraining pool either with those domains (``domains``: one sub-pool per difficulty) or without
(``uniform``: medium only, as many videos) — unless --data/--pool name your own. Then, for each pool, protocol
and seed, runs ``run_experiment`` and keeps its report's numbers as rows. Encoders are shared across protocols
of one pool (a run's folder is keyed by its config and videos), so General and the deep members are pretrained
once per seed and reused by the protocols that have them.

Writes results/<date>-<machine>-ensembles.jsonl (one row per experiment × model or aggregation), and
<out>/study.md (the table) and <out>/study.png (accuracy against pretraining clip-steps).

    PYTHONPATH=src nice -n 19 python bench/ensembles/study.py --out /tmp/ensemble-study --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from picojepa.data.sources import load_videos
from picojepa.datasets.synth import generate_dataset, generate_domains
from picojepa.experiment.run import ExperimentSettings, run_experiment
from picojepa.experiment.settings import MODES
from picojepa.experiment.study import (
    domain_families,
    markdown_table,
    pretraining_plan,
    rows_from_experiment,
    study_figure,
    summarise,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
# The labelled classes of the demo (picojepa.experiment.demo.LABELLED_CLASSES): four kinds of motion.
LABELLED_CLASSES = ("move_right", "rotate_cw", "approach", "oscillate")
DOMAINS = ("easy", "medium", "hard")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("ensemble-study"), help="study folder (data, runs, table)")
    p.add_argument("--protocols", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--pools", default="domains,uniform",
                   help="synthetic pools: domains (easy/medium/hard sub-pools) and/or uniform (medium only)")
    p.add_argument("--data", help="your labelled set instead of the synthetic one (then give --pool too)")
    p.add_argument("--pool", help="your unlabelled pool (one pool, named 'custom')")
    p.add_argument("--repeats", type=int, default=3, help="seeds seed … seed+K-1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", type=int, default=3, help="Partials per ensemble (3 = one per scene family)")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--epochs", type=int, default=4, help="pretraining epochs of every encoder (General's × "
                   "members in compute-matched)")
    p.add_argument("--clip-steps", type=int, default=0, help="instead of --epochs: clips per encoder run")
    p.add_argument("--probe-epochs", type=int, default=40)
    p.add_argument("--num-clips", type=int, default=2)
    p.add_argument("--single-head", action="store_true", help="one head per member instead of the mean over the "
                   "learning-rate × weight-decay grid (about 4× faster heads)")
    p.add_argument("--size", type=int, default=64, help="synthetic frame side (px)")
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--pool-per-class", type=int, default=3, help="pool videos per class and domain (10 classes)")
    p.add_argument("--labelled-per-class", type=int, default=10, help="labelled videos per class and domain")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="config override key=value")
    p.add_argument("--device", default="auto")
    p.add_argument("--machine", default="cpu", help="name in the results file")
    p.add_argument("--label", default="", help="added to the pool's name in the rows and table (e.g. the sizes), "
                   "so studies of one pool at other sizes stay apart in one results file")
    p.add_argument("--from-rows", type=Path, nargs="+",
                   help="run nothing: rebuild the table and figure in --out from these JSON-lines files")
    return p.parse_args()


def synthetic_data(args: argparse.Namespace, pools: list[str]) -> tuple[Path, dict[str, Path]]:
    """The labelled list (three scene families) and each requested pool, generated once under out/data."""
    data = args.out / "data"
    common = {"size": args.size, "frames": args.frames, "fps": 12, "progress": False}
    labelled = generate_domains(data / "labelled", DOMAINS, classes=list(LABELLED_CLASSES),
                                videos_per_class=args.labelled_per_class, seed=2, **common)
    made = {}
    if "domains" in pools:
        made["domains"] = generate_domains(data / "pool-domains", DOMAINS, classes=10,
                                           videos_per_class=args.pool_per_class, seed=1, **common).parent
    if "uniform" in pools:  # as many videos as the domain pool, all from one family
        made["uniform"] = generate_dataset(data / "pool-uniform", classes=10,
                                           videos_per_class=args.pool_per_class * len(DOMAINS), seed=1,
                                           difficulty="medium", **common)
    return labelled, made


def settings_for(args: argparse.Namespace, data: Path, pool: Path, protocol: str, seed: int) -> ExperimentSettings:
    overrides = ["data.num_workers=0", *args.overrides]
    overrides.append(f"train.clip_steps={args.clip_steps}" if args.clip_steps else f"train.epochs={args.epochs}")
    return ExperimentSettings(data=str(data), pretrain_data=str(pool), preset=args.preset, overrides=overrides,
                              members=args.members, mode=protocol, seed=seed, device=args.device,
                              probe_epochs=args.probe_epochs, num_clips=args.num_clips,
                              probe_grid=not args.single_head)


def announce(args: argparse.Namespace, protocols: list[str], pools: dict[str, Path]) -> None:
    """What the study will run, before it starts: experiments, pretraining runs and their clip-steps."""
    for name, pool in pools.items():
        videos = len(load_videos(pool).items)
        budget = args.clip_steps or args.epochs * videos
        plan = pretraining_plan(protocols, args.members, budget, fixed_budget=bool(args.clip_steps))
        print(f"pool {name}: {videos} videos; {len(protocols)} protocols × {args.repeats} repeats = "
              f"{len(protocols) * args.repeats} experiments; about {plan['runs_per_repeat'] * args.repeats} "
              f"pretraining runs, ≈{plan['clip_steps_per_repeat'] * args.repeats} clip-steps in all "
              f"(each run ≈{budget}), plus features and heads of every experiment")
    print("the time per experiment is printed after each; the first one of a seed pretrains the shared encoders")


def run_study(args: argparse.Namespace) -> list[dict[str, Any]]:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if args.data:
        data, pools = Path(args.data), {"custom": Path(args.pool)}
    else:
        data, pools = synthetic_data(args, [p.strip() for p in args.pools.split(",") if p.strip()])
    announce(args, protocols, pools)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    results = RESULTS / f"{stamp}-{args.machine}-ensembles.jsonl"
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    total, done = len(pools) * len(protocols) * args.repeats, 0
    for pool_name, pool in pools.items():
        for seed in range(args.seed, args.seed + args.repeats):
            for protocol in protocols:
                settings = settings_for(args, data, pool, protocol, seed)
                out = args.out / "runs" / pool_name / f"seed_{seed}" / protocol
                t = time.perf_counter()
                result = run_experiment(settings, out, cache_dir=args.out / "cache", progress=False,
                                        encoders_dir=args.out / "encoders" / pool_name, quiet_tables=True)
                new = rows_from_experiment(out, result.report, pool=f"{pool_name} {args.label}".strip(),
                                           protocol=protocol,
                                           preset=args.preset, run=str(out), seconds=round(time.perf_counter() - t, 1),
                                           settings=dataclasses.asdict(settings), machine=platform.node())
                append_rows(results, new)
                rows += new
                done += 1
                elapsed = time.perf_counter() - t0
                print(f"[{done}/{total}] {pool_name} seed {seed} {protocol}: {time.perf_counter() - t:.0f} s "
                      f"(elapsed {elapsed / 60:.1f} min, ≈{elapsed / done * (total - done) / 60:.0f} min left)",
                      flush=True)
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def domains_text(rows: list[dict[str, Any]]) -> str:
    """For each domains-protocol run whose folder is still there, what k-means found in the pool: videos per
    scene family in each domain and the purity (the pool's top-level folders are its families)."""
    lines = []
    for run, pool in dict.fromkeys((r["run"], r["settings"]["pretrain_data"]) for r in rows
                                   if r["protocol"] == "domains"):
        path = Path(run) / "domains.json"
        if path.is_file():
            found = domain_families(json.loads(path.read_text())["domains"], pool)
            lines.append(f"| {run} | {found['per_domain']} | {found['purity']:.2f} |")
    if not lines:
        return ""
    return "\n".join(["", "| Domains run | Videos per family in each domain | Purity |", "| :--- | :--- | ---: |",
                      *lines]) + "\n"


def write_outputs(out: Path, rows: list[dict[str, Any]]) -> None:
    summary = summarise(rows)
    table = markdown_table(summary) + domains_text(rows)
    (out / "study.md").write_text(table)
    (out / "study.json").write_text(json.dumps(summary, indent=1))
    study_figure(summary, out / "study.png")
    print(table)
    print(f"table {out / 'study.md'}, figure {out / 'study.png'}")


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.from_rows:
        rows = [json.loads(line) for path in args.from_rows for line in path.read_text().splitlines() if line]
    else:
        rows = run_study(args)
    write_outputs(args.out, rows)
    print(f"study took {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
