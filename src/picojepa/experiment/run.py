"""The published experiment, done right: General vs N Partials vs their aggregations.

Stages (each reused when the out folder already holds it): split the labelled videos once
(``splits.json``), pretrain the encoder(s), cache frozen features, train the heads (selection on
validation only), aggregate (weights/stacking fitted on validation only), score on test, report.
The per-encoder and per-member jobs of a stage are independent; a backend (``backends.py``) runs them
here one after another or fans them out on Ray, with the same results.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import Config, load_config
from ..data.prepare import PreparedData, prepare_videos, skipped_records
from ..data.sources import VideoItem, VideoSet, load_videos
from ..data.splits import (
    ShardCoverageWarning,
    group_keys,
    grouped_stratified_split,
    load_splits,
    missing_classes_per_shard,
    save_splits,
    stratified_shards,
    stratified_split,
)
from ..ensemble.aggregation import METHODS, Ensemble, best_single_member, hard_vote
from ..ensemble.report import (
    RANDOM_INIT,
    SMALL_FIT_MARK,
    ReportInputs,
    build_report,
    format_terminal_tables,
    write_report,
)
from ..errors import DataError, PicoJepaError
from ..metrics import paired_bootstrap_gap
from ..probe.classifier import ProbeConfig, file_sha256, head_probabilities, train_head
from ..probe.features import Features, extract_features
from ..probe.heads import HEAD_TYPES, uses_pooled_features
from ..probe.monitor import MONITOR_VIDEOS, ProbeMonitor, subsample_stratified
from ..progress import info
from ..train import load_encoder, pretrain
from ..train.checkpoint import ENCODER_FILE, has_checkpoint, read_run_config
from ..train.pretrain import save_initial_encoder
from ..utils import resolve_device, write_json
from .backends import Backend, Job, LocalBackend, mark_reused
from .domains import DOMAINS_FILE, load_routing, pool_domains, route, routing_weights
from .figures import experiment_figures
from .members import member_job
from .settings import ALL_LABELS_MODES, MIN_VIDEOS_PER_CLASS, ExperimentSettings, LabelledData, Member

FITTED_ON_VALIDATION = ("weighted", "stack")  # the aggregations that learn something from validation videos


# ------------------------------------------------------------------------------------ planning
def _round_width(width: float, heads: int) -> int:
    step = 2 * heads
    return max(step, round(width / step) * step)


def encoder_configs(settings: ExperimentSettings, base: Config) -> dict[str, Config]:
    """Pretraining configs by encoder name. Outside the shared protocol every partial encoder gets its own
    seed, and heterogeneous members also vary width, depth and mask ratio."""
    if settings.mode == "shared":
        return {"general": base}
    configs = {"general": compute_matched(base, settings.members) if settings.mode == "compute-matched" else base}
    widths, depth_cuts, ratios = (1.0, 0.75, 1.0, 0.5), (0, 0, 0.25, 0), (0.75, 0.85, 0.65, 0.9)
    for i in range(settings.members):
        cfg = Config.from_dict(base.to_dict())
        cfg.train.seed = settings.seed + 1 + i
        if settings.heterogeneous:
            m = cfg.model
            m.embed_dim = _round_width(base.model.embed_dim * widths[i % 4], m.num_heads)
            m.depth = max(1, base.model.depth - round(base.model.depth * depth_cuts[i % 4]))
            cfg.mask.ratio = ratios[i % 4]
        configs[f"partial_{i + 1}"] = cfg
    return configs


def compute_matched(base: Config, members: int) -> Config:
    """General's config in the compute-matched protocol: ``members`` × the length of each member's run (its
    clip budget when one is set, else its epochs), on the same pool at the same batch size, so its pretraining
    clip-steps equal the deep ensemble's total (the learning-rate and EMA schedules stretch with it)."""
    cfg = Config.from_dict(base.to_dict())
    if cfg.train.clip_steps > 0:
        cfg.train.clip_steps *= members
    else:
        cfg.train.epochs *= members
    return cfg


def plan_members(settings: ExperimentSettings) -> list[Member]:
    heads = [settings.head]
    if settings.heterogeneous:  # cycle through the head types, starting with the chosen one
        start = HEAD_TYPES.index(settings.head)
        heads = [HEAD_TYPES[(start + i) % len(HEAD_TYPES)] for i in range(len(HEAD_TYPES))]
    members = [Member("general", "general", settings.head, settings.seed),
               Member(RANDOM_INIT, RANDOM_INIT, settings.head, settings.seed)]
    for i in range(settings.members):
        encoder = "general" if settings.mode == "shared" else f"partial_{i + 1}"
        seed = settings.seed + 1 + i if settings.heterogeneous or settings.mode != "shared" else settings.seed
        members.append(Member(f"partial_{i + 1}", encoder, heads[i % len(heads)], seed))
    return members


# ------------------------------------------------------------------------------------ data
def validation_halves(val: np.ndarray, labels: np.ndarray, seed: int,
                      class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two class-stratified halves of the validation split: (epoch selection, second-level fits)."""
    if len(val) < 4:
        raise DataError(f"the validation split has {len(val)} videos: at least 4 are needed to fit heads and "
                        f"aggregations on separate halves; use more labelled videos or a larger val fraction")
    with warnings.catch_warnings():  # halves short of a class are named in the report's fitting section instead
        warnings.simplefilter("ignore", ShardCoverageWarning)
        select, fit = stratified_shards(val, labels, 2, seed=seed + 1, class_names=class_names)
    return np.sort(select), np.sort(fit)


def _make_splits(settings: ExperimentSettings, prepared: PreparedData, out: Path) -> LabelledData:
    videos = prepared.videos
    paths = [str(item.path) for item in videos.items]
    labels = np.asarray(videos.labels)
    class_names = list(videos.class_names or [])
    splits_path = out / "splits.json"
    position = {p: i for i, p in enumerate(paths)}
    if splits_path.exists():
        saved = load_splits(splits_path)
        listed = [v for part in saved.splits.values() for v in part]
        if saved.classes != class_names or sorted(listed) != sorted(paths):
            raise PicoJepaError(f"{splits_path} was made from other videos or classes than {settings.data} now "
                                f"holds; use a new --out (the split must never change within an experiment)")
        split_idx = {k: np.asarray(sorted(position[v] for v in saved.splits[k]), dtype=int) for k in saved.splits}
        shards = [np.asarray(sorted(position[v] for v in s), dtype=int) for s in (saved.shards or [])]
        if len(shards) != settings.members:
            raise PicoJepaError(f"{splits_path} has {len(shards)} shards but --members is {settings.members}; "
                                f"use a new --out")
        covered = np.sort(np.concatenate(shards)) if shards else np.empty(0, dtype=int)
        if not np.array_equal(covered, np.sort(split_idx["train"])):
            raise PicoJepaError(f"{splits_path}: its shards do not cover the training split exactly once "
                                f"({len(covered)} shard videos for {len(split_idx['train'])} training videos)")
        info(f"reusing {splits_path}")
    else:
        if settings.group_by:
            keys = [str(k) for k in group_keys(paths, settings.group_by)]
            split_idx = grouped_stratified_split(labels, keys, settings.fractions,
                                                 seed=settings.seed, class_names=class_names)
        else:
            split_idx = stratified_split(labels, settings.fractions, seed=settings.seed, class_names=class_names)
        shards = stratified_shards(split_idx["train"], labels, settings.members, seed=settings.seed,
                                   class_names=class_names)
        save_splits(splits_path, paths, labels, class_names, split_idx, shards=shards, seed=settings.seed)
    select, fit = validation_halves(split_idx["val"], labels, settings.seed, class_names)
    return LabelledData(prepared, paths, labels, class_names, split_idx, shards, select, fit)


def fit_shortfall(idx: np.ndarray, labels: np.ndarray, class_names: list[str], what: str) -> str | None:
    """Why a fit on the videos ``idx`` is too small (fewer than MIN_VIDEOS_PER_CLASS of some class), or None."""
    counts = np.bincount(labels[idx], minlength=len(class_names)) if len(idx) else np.zeros(len(class_names), int)
    short = [class_names[c] for c in np.flatnonzero(counts < MIN_VIDEOS_PER_CLASS)]
    if not short:
        return None
    shown = ", ".join(short[:4]) + (f" and {len(short) - 4} more" if len(short) > 4 else "")
    return (f"{len(idx)} {what} videos for {len(class_names)} classes; {len(short)} class(es) have fewer than "
            f"{MIN_VIDEOS_PER_CLASS} ({shown})")


def shard_coverage(settings: ExperimentSettings, data: LabelledData) -> dict[str, list[str]]:
    """Partial members whose training shard has no video of some class → those classes (none when every
    head trains on the whole training split)."""
    if settings.mode in ALL_LABELS_MODES:
        return {}
    missing = missing_classes_per_shard(data.shard_idx, data.labels, classes=np.unique(data.labels))
    return {f"partial_{k + 1}": [data.class_names[c] for c in cls] for k, cls in missing.items()}


def pretraining_pool(settings: ExperimentSettings, data: LabelledData) -> tuple[VideoSet, dict[str, Any]]:
    """Unlabelled pretraining videos; validation and test videos are removed unless explicitly allowed."""
    held_out = {str(Path(data.paths[i]).resolve()) for k in ("val", "test") for i in data.split_idx[k]}
    held_out_groups: set[str] = set()
    if settings.group_by:
        keys = group_keys(data.paths, settings.group_by)
        held_out_groups = {keys[i] for k in ("val", "test") for i in data.split_idx[k]}
    if settings.pretrain_data is None:
        items = [VideoItem(Path(data.paths[i])) for i in data.split_idx["train"]]
        return VideoSet(items, None, f"{settings.data} (train split)"), {"source": "train split", "videos": len(items)}
    pool = load_videos(settings.pretrain_data)
    pool_groups = group_keys([it.path for it in pool.items], settings.group_by, strict=False) if held_out_groups else []
    kept = [it for i, it in enumerate(pool.items) if settings.allow_eval_in_pretrain or (
        str(it.path.resolve()) not in held_out and not (pool_groups and pool_groups[i] in held_out_groups))]
    removed = len(pool.items) - len(kept)
    if removed:
        info(f"removed {removed} validation/test video(s){' (or of their groups)' if held_out_groups else ''} from "
             f"the pretraining pool {settings.pretrain_data}")
    meta = {"source": settings.pretrain_data, "videos": len(kept), "removed_val_test": removed,
            "eval_videos_allowed": settings.allow_eval_in_pretrain}
    return VideoSet(kept, pool.class_names, pool.source, pool.problems), meta


def member_pools(settings: ExperimentSettings, data: LabelledData, pool: VideoSet, names: list[str],
                 domains: list[VideoSet] | None = None) -> dict[str, VideoSet]:
    """Each encoder's pretraining videos: the whole pool for General (and for every Partial in the deep
    protocol), the Partial's shard in the independent one, its domain of the pool in the domains one."""
    shards = encoder_shards(settings, data, pool) if settings.mode == "independent" else domains or []
    return {name: shards[int(name.split("_")[1]) - 1] if shards and name != "general" else pool for name in names}


def encoder_shards(settings: ExperimentSettings, data: LabelledData, pool: VideoSet) -> list[VideoSet]:
    """Each Partial's pretraining videos in the independent protocol: exactly its head shard when the pool
    is the training split; shards of the separate pool otherwise."""
    if settings.pretrain_data is not None:
        return pool_shards(pool, settings.members, settings.seed)
    return [VideoSet([VideoItem(Path(data.paths[i])) for i in shard], None,
                     f"{settings.data} (training shard {k + 1}/{len(data.shard_idx)})")
            for k, shard in enumerate(data.shard_idx)]


def pool_shards(pool: VideoSet, n: int, seed: int) -> list[VideoSet]:
    """Disjoint shards of the pretraining pool: class-stratified when it has labels, else random."""
    if pool.labelled and len(pool.items) >= n:
        labels = np.asarray(pool.labels)
        parts = stratified_shards(np.arange(len(labels)), labels, n, seed=seed, class_names=pool.class_names)
    else:
        order = np.random.default_rng(seed).permutation(len(pool.items))
        parts = np.array_split(order, n)
    if any(len(p) == 0 for p in parts):
        raise DataError(f"the pretraining pool has {len(pool.items)} videos: too few for {n} shards")
    return [VideoSet([pool.items[i] for i in sorted(p)], pool.class_names, f"{pool.source} (shard {k + 1}/{n})",
                     pool.problems if k == 0 else [])
            for k, p in enumerate(parts)]


# ------------------------------------------------------------------------------------ stages
# Settings that change where or how fast a run goes, never its weights.
_NOT_WEIGHTS = {"train": {"device", "log_every", "checkpoint_every", "compile"},
                "data": {"num_workers", "cache_dir", "use_cache", "device_cache", "max_bad_fraction"}}


def pretrain_key(cfg: Config, pool: VideoSet | None) -> str:
    """Digest of everything that determines an encoder's weights: every config field except the ones in
    ``_NOT_WEIGHTS``, and the pretraining videos (None for the random-init baseline)."""
    d = cfg.to_dict()
    for section, names in _NOT_WEIGHTS.items():
        d[section] = {k: v for k, v in d[section].items() if k not in names}
    videos = sorted(str(item.path.resolve()) for item in pool.items) if pool is not None else None
    return hashlib.sha1(json.dumps([d, videos], sort_keys=True, default=str).encode()).hexdigest()[:12]


def encoder_dir(root: Path, name: str, key: str) -> Path:
    """One folder per (encoder, settings): a changed setting trains a new encoder, never reuses the old one."""
    return root / f"{name}-{key}"


def ensure_encoder(cfg: Config, pool: VideoSet, run_dir: Path, progress: bool, cache_dir: Path | None,
                   monitor: ProbeMonitor | None = None) -> dict:
    """Pretrain (or resume, or reuse) one encoder; returns its facts for the report."""
    if (run_dir / "config.json").exists() and read_run_config(run_dir).get("finished"):
        mark_reused()
    resume = has_checkpoint(run_dir)
    info(f"{'reusing' if resume else 'pretraining'} encoder {run_dir.name} ({len(pool.items)} videos)")
    result = pretrain(cfg, pool, run_dir, resume=resume, progress=progress, cache_dir=cache_dir, monitor=monitor)
    meta = read_run_config(run_dir)
    return {"run_dir": str(run_dir), **run_compute(meta), "clips_trained": result.clips_seen,
            "videos": result.videos, "seconds": round(result.seconds, 1), "skipped": len(result.skipped),
            "params": meta["encoder_params"], "monitor": (meta.get("monitor") or {}).get("text")}


def run_compute(meta: dict[str, Any]) -> dict[str, int]:
    """A run's pretraining compute as its own config.json records it: optimiser steps run, the batch size it
    ran at (lowered on small pools), and their product, the clip-steps (clips of videos that failed to
    decode included: the compute was spent; ``clips_trained`` excludes them)."""
    steps, batch = int(meta.get("steps", 0)), int(meta.get("batch_size", 0))
    return {"steps": steps, "batch_size": batch, "clip_steps": steps * batch}


def ensure_random_init(cfg: Config, run_dir: Path) -> dict:
    """The baseline: the General's architecture and seed at initialisation, saved as a 0-step run."""
    if not (run_dir / ENCODER_FILE).exists():
        save_initial_encoder(cfg, run_dir)
    return {"run_dir": str(run_dir), "steps": 0, "batch_size": 0, "clip_steps": 0, "clips_trained": 0, "videos": 0,
            "seconds": 0.0, "skipped": 0, "params": read_run_config(run_dir)["encoder_params"], "monitor": None}


def _features(encoder_dir: Path, cfg: Config, data: LabelledData, num_clips: int, tokens: bool,
              cache_dir: Path | None, out: Path, device: Any, progress: bool) -> Features:
    """Frozen features of every labelled video, cached under out/features keyed by the encoder's checksum."""
    from ..data.cache import ClipCache
    from ..data.dataset import FrameStore, cache_settings

    key = hashlib.sha1(json.dumps([file_sha256(encoder_dir / ENCODER_FILE), num_clips, tokens, data.paths,
                                   cfg.to_dict()["data"]], default=str).encode()).hexdigest()[:16]
    path = out / "features" / f"{encoder_dir.name}-{key}.npz"
    if path.exists():
        mark_reused()
        z = np.load(path)
        return Features(z["pooled"], z["tokens"] if "tokens" in z.files else None, z["ok"])
    device = resolve_device(device)  # resolved where the job runs: a Ray worker may have the GPU the driver lacks
    settings = cache_settings(cfg)
    store = data.prepared.store
    if store.settings != settings:  # another sampling/size setting than the base one: cache for it too
        cache = ClipCache(cache_dir or cfg.data.cache_dir, settings) if cfg.data.use_cache else None
        if cache is not None:
            cache.build([Path(p) for p in data.paths], progress=progress)
        store = FrameStore([Path(p) for p in data.paths], settings, cache)
    encoder = load_encoder(encoder_dir, device)
    feats = extract_features(encoder, store, num_clips, keep_tokens=tokens, progress=progress,
                             description=f"features ({encoder_dir.name})")
    if not feats.ok.all():
        bad = "; ".join(f"{data.paths[i]}: {r}" for i, r in feats.failed[:5])
        raise DataError(f"{len(feats.failed)} labelled video(s) failed to decode during feature extraction: {bad}")
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"pooled": feats.pooled, "ok": feats.ok} | ({"tokens": feats.tokens} if tokens else {})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return feats


def _general_monitor(settings: ExperimentSettings, data: LabelledData, cfg: Config) -> ProbeMonitor | None:
    """The learning monitor for the General's pretraining, on the labelled *training* split only (at most
    MONITOR_VIDEOS videos), so validation and test videos never enter it."""
    from ..data.dataset import FrameStore

    train = data.split_idx["train"]
    labels = data.labels[train]
    present = np.bincount(labels)[np.unique(labels)]
    if len(present) < 2 or present.min() < 2:
        return None
    keep = train[subsample_stratified(labels, MONITOR_VIDEOS, settings.seed)]
    store = data.prepared.store
    subset = FrameStore([store.videos[i] for i in keep], store.settings, store.cache)
    return ProbeMonitor(subset, data.labels[keep], every=0, seed=settings.seed)


def _ensemble_text(settings: ExperimentSettings) -> str:
    grid, inits = settings.head_grid, settings.probe_inits
    if not grid and inits == 1:
        return ""
    points = (f"(learning rate, weight decay) {', '.join(f'({lr:g}, {wd:g})' for lr, wd in grid)}" if grid
              else "one (learning rate, weight decay)")
    each = f"{inits} initialisations of each " if inits > 1 else ""
    return (f"; every head is the mean of {max(len(grid), 1) * inits} heads, {each}{points}, each from its own "
            "initialisation and at its own best epoch")


def _general_vs_random(settings: ExperimentSettings, features: dict[str, Features], data: LabelledData, head: str,
                       train: np.ndarray, val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """The same head trained on the General's and the random-init encoder's features: the test accuracy of
    each and the paired-bootstrap gain."""
    y = data.labels[test]
    preds = {}
    for name in ("general", RANDOM_INIT):
        probe = ProbeConfig(head=head, epochs=settings.probe_epochs, num_clips=settings.num_clips, seed=settings.seed,
                            grid=settings.head_grid, inits=settings.probe_inits)
        trained = train_head(features[name], data.labels, train, val, len(data.class_names), probe)
        preds[name] = head_probabilities(trained.head, features[name], test, head, settings.num_clips).argmax(1)
    gain = paired_bootstrap_gap(y, preds["general"], preds[RANDOM_INIT], n_resamples=settings.bootstrap,
                                seed=settings.seed)
    return {"general": float((preds["general"] == y).mean()), "random_init": float((preds[RANDOM_INIT] == y).mean()),
            "gain": gain}


def _other_head_check(settings: ExperimentSettings, features: dict[str, Features], data: LabelledData,
                      val: np.ndarray, test: np.ndarray) -> dict[str, Any]:
    """General and random-init encoders under the other head family (attentive ↔ linear), so the choice of
    head cannot hide a loss."""
    other = "linear" if settings.head != "linear" else "attentive"
    return {"head": other, **_general_vs_random(settings, features, data, other, data.split_idx["train"], val, test)}


def low_shot_subset(train: np.ndarray, labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` seeded training videos of every class (all of a class that has fewer); sorted."""
    rng = np.random.default_rng([seed, per_class])
    picked = [rng.permutation(train[labels[train] == c])[:per_class] for c in np.unique(labels[train])]
    return np.sort(np.concatenate(picked))


def _low_shot_table(settings: ExperimentSettings, features: dict[str, Features], data: LabelledData,
                    val: np.ndarray, test: np.ndarray) -> list[dict[str, Any]]:
    """General vs random init with only k labelled training videos per class (V-JEPA's low-shot frozen
    evaluation): the same head, validation and test splits; only the head's training set shrinks."""
    rows = []
    for k in sorted(set(settings.low_shot)):
        train = low_shot_subset(data.split_idx["train"], data.labels, k, settings.seed)
        rows.append({"per_class": k, "train_videos": len(train),
                     **_general_vs_random(settings, features, data, settings.head, train, val, test)})
    return rows


@dataclass
class ExperimentResult:
    report: dict[str, Any]
    out: Path
    seconds: float


def run_experiment(settings: ExperimentSettings, out: str | Path, cache_dir: str | Path | None = None,
                   progress: bool = True, encoders_dir: str | Path | None = None,
                   figures: bool = True, quiet_tables: bool = False,
                   backend: Backend | None = None) -> ExperimentResult:
    """Run (or resume) the whole experiment into ``out``; returns the report dict.

    ``backend`` runs the per-encoder and per-member jobs (default: here, one after another); the
    caller owns its lifetime."""
    settings.validate()
    t_start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache_dir) if cache_dir else None
    encoders_root = Path(encoders_dir) if encoders_dir else out / "encoders"
    _check_settings(out, settings)
    base = load_config(settings.preset, settings.config, settings.overrides)
    base.train.seed = settings.seed
    base.train.device = settings.device
    backend = backend or LocalBackend(progress=progress)
    remote = not isinstance(backend, LocalBackend)  # remote jobs show no progress bars of their own
    timings: dict[str, float] = {}

    t = time.perf_counter()
    labelled = load_videos(settings.data, require_labels=True)
    prepared = prepare_videos(labelled, base, progress=progress, cache_dir=cache_dir)
    data = _make_splits(settings, prepared, out)
    epoch_shortfall = fit_shortfall(data.val_select, data.labels, data.class_names, "validation (epoch selection)")
    fit_short = fit_shortfall(data.val_fit, data.labels, data.class_names, "validation (aggregation fits)")
    if epoch_shortfall and not settings.allow_small_fits:
        data.val_select = np.empty(0, dtype=int)  # no choice on too few videos: every head keeps its last epoch
    counts: dict[str, Any] = {k: len(v) for k, v in data.split_idx.items()}
    counts.update({"val (epoch selection)": len(data.val_select), "val (aggregation fits)": len(data.val_fit)})
    if settings.mode not in ALL_LABELS_MODES:  # shards are saved in splits.json either way, used only here
        counts["shards"] = [len(s) for s in data.shard_idx]
    heads_on = ("every Partial's head on the whole training split" if settings.mode in ALL_LABELS_MODES
                else f"{settings.members} shards of {[len(s) for s in data.shard_idx]} training videos")
    info(f"{len(data.paths)} labelled videos, {len(data.class_names)} classes; split "
         f"{ {k: len(v) for k, v in data.split_idx.items()} }; {heads_on}")
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    pool, pool_meta = pretraining_pool(settings, data)
    configs = encoder_configs(settings, base)
    random_dir = encoder_dir(encoders_root, RANDOM_INIT, pretrain_key(base, None))
    random_init = ensure_random_init(base, random_dir)  # first: the domains protocol embeds the pool with it
    domains = pool_domains(pool, random_dir, base, settings.members, settings.seed, settings.num_clips, out,
                           cache_dir, progress) if settings.mode == "domains" else None
    pools = member_pools(settings, data, pool, list(configs), domains)
    write_json(out / "pretraining_pools.json",
               {name: [str(item.path) for item in p.items] for name, p in pools.items()})
    dirs = {name: encoder_dir(encoders_root, name, pretrain_key(cfg, pools[name])) for name, cfg in configs.items()}
    dirs[RANDOM_INIT] = random_dir
    monitor = _general_monitor(settings, data, base) if settings.monitor else None
    encoders: dict[str, dict] = backend.map("pretrain", [
        Job(name, ensure_encoder, (cfg, pools[name], dirs[name], progress and not remote, cache_dir,
                                   monitor if name == "general" else None))
        for name, cfg in configs.items()])
    encoders[RANDOM_INIT] = random_init
    configs[RANDOM_INIT] = base
    timings["pretrain"] = time.perf_counter() - t

    t = time.perf_counter()
    members = plan_members(settings)
    needs_tokens = {m.encoder for m in members if not uses_pooled_features(m.head)} | {"general", RANDOM_INIT}
    shared_data = backend.share(data)  # shipped once, not once per job
    features: dict[str, Features] = backend.map("features", [
        Job(name, _features, (dirs[name], configs[name], shared_data, settings.num_clips, name in needs_tokens,
                              cache_dir, out, settings.device, progress and not remote))
        for name in configs])
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    test = data.split_idx["test"]
    shared_features = {name: backend.share(f) for name, f in features.items()}
    outcomes = backend.map("heads", [
        Job(m.name, member_job, (m, shared_features[m.encoder], shared_data, settings, out, dirs[m.encoder],
                                 configs[m.encoder]), device=False)
        for m in members])
    val_probs = {name: o.val_probs for name, o in outcomes.items()}
    test_probs = {name: o.test_probs for name, o in outcomes.items()}
    heads_meta = {name: o.meta for name, o in outcomes.items()}
    timings["heads"] = time.perf_counter() - t

    partials = [m.name for m in members if m.name not in ("general", RANDOM_INIT)]
    other_head = _other_head_check(settings, features, data, data.val_select, test)
    low_shot = _low_shot_table(settings, features, data, data.val_select, test)
    y_val, y_test = data.labels[data.val_fit], data.labels[test]
    p_val = np.stack([val_probs[m] for m in partials])
    p_test = np.stack([test_probs[m] for m in partials])
    ensembles, fitted, not_fitted, flags = {}, {}, {}, {}
    for method in METHODS:
        if method in FITTED_ON_VALIDATION and fit_short:
            if not settings.allow_small_fits:
                not_fitted[method] = fit_short
                continue
            flags[method] = fit_short
        ens = Ensemble.from_probabilities({"val": p_val, "test": p_test}, method=method, seed=settings.seed)
        ens.fit("val", y_val)  # weights and stacking: the validation half the heads did not select on
        ensembles[method] = ens.predict_proba("test")
        fitted[method] = _fitted_params(ens)
    best = None
    if fit_short and not settings.allow_small_fits:
        not_fitted["best_single"] = fit_short
    else:
        best = partials[best_single_member(p_val, y_val)]
        if fit_short:
            flags["best_single"] = fit_short
    if settings.mode == "domains":  # fitted on the unlabelled pool only, so never short of validation videos
        routing = load_routing(out / DOMAINS_FILE)
        weights = routing_weights(features[RANDOM_INIT].pooled[test].mean(1), routing.centroids, routing.tau)
        ensembles["route"] = route(p_test, weights)
        fitted["route"] = {"domains": str(out / DOMAINS_FILE), "tau": routing.tau}
    if epoch_shortfall:
        epochs_text = (f"validation half A ({len(data.val_select)} videos): each head keeps its best epoch "
                       f"{SMALL_FIT_MARK} although {epoch_shortfall} (--allow-small-fits)"
                       if settings.allow_small_fits else
                       f"none: every head keeps its last epoch, since validation half A has {epoch_shortfall}")
    else:
        epochs_text = f"validation half A ({len(data.val_select)} videos): each head keeps its best epoch"
    fitting = {
        "head_epochs": epochs_text + _ensemble_text(settings),
        "weights_stacker_best_single": f"validation half B ({len(data.val_fit)} videos), which no head selected "
                                       "on",
        "test": f"test split ({len(test)} videos): scored once, never fitted on"}
    write_json(out / "ensemble.json", {
        "members": [str(out / "classifiers" / m) for m in partials], "general": str(out / "classifiers/general"),
        "class_names": data.class_names, "methods": fitted, "best_single": best, "fitting": fitting,
        "not_fitted": not_fitted,
        "tie_rule": "see picojepa.ensemble.aggregation.HARD_VOTE_TIE_RULE"})

    skipped = _skipped_records(data, dirs)
    write_json(out / "skipped.json", skipped)
    compute = _compute_table(settings, members, encoders, heads_meta)
    inputs = ReportInputs(
        class_names=data.class_names, test_videos=[data.paths[i] for i in test], test_labels=y_test,
        models={m.name: test_probs[m.name] for m in members}, ensembles=ensembles,
        predictions={"vote": hard_vote(p_test)[0]}, split_counts=counts, best_single=best, compute=compute,
        extra={"mode": settings.mode, "preset": settings.preset, "heterogeneous": settings.heterogeneous,
               "settings": dataclasses.asdict(settings), "pretraining_pool": pool_meta, "encoders": encoders,
               "heads": heads_meta, "ensemble_compute": ensemble_compute(settings, members, encoders, heads_meta),
               "other_head": other_head, "low_shot": low_shot, "fitting": fitting,
               "not_fitted": not_fitted, "flags": flags, "shard_coverage": shard_coverage(settings, data),
               "resolution": {"test_videos": len(test),
                              "half_width_pp": round(100 * 1.96 * float(np.sqrt(0.25 / len(test))), 1)},
               "validation_accuracy": {m: float((val_probs[m].argmax(1) == y_val).mean()) for m in val_probs},
               "skipped": len(skipped),
               "timings_s": {k: round(v, 1) for k, v in timings.items()},
               **({"domains": domains_summary(out)} if settings.mode == "domains" else {})},
    )
    report = build_report(inputs, n_resamples=settings.bootstrap, seed=settings.seed)
    figure_list = []
    if figures:
        preds = {name: p.argmax(1) for name, p in {**inputs.models, **ensembles}.items()}
        preds["vote"] = inputs.predictions["vote"]
        figure_list = experiment_figures(out, report, dirs, [n for n in configs if n != RANDOM_INIT], settings.mode,
                                         data.class_names,
                                         data.labels, {n: f.pooled.mean(1) for n, f in features.items()}, y_test,
                                         preds, settings.seed, progress)
    inputs.extra["timings_s"]["total"] = round(time.perf_counter() - t_start, 1)
    report = write_report(out, inputs, figures=figure_list, n_resamples=settings.bootstrap, seed=settings.seed)
    if not quiet_tables:
        print(format_terminal_tables(report))
    return ExperimentResult(report, out, time.perf_counter() - t_start)


def _skipped_records(data: LabelledData, dirs: dict[str, Path]) -> list[dict[str, Any]]:
    """Labelled videos dropped before the split, and each encoder's unusable pretraining videos."""
    records = [{**r, "stage": f"labelled {r['stage']}"} for r in skipped_records(data.prepared.skipped, "scan")]
    for name, run_dir in dirs.items():
        path = run_dir / "skipped.json"
        if path.is_file():
            records += [{**r, "stage": f"pretraining {name}: {r.get('stage')}"} for r in json.loads(path.read_text())]
    return records


def _check_settings(out: Path, settings: ExperimentSettings) -> None:
    path = out / "experiment.json"
    current = dataclasses.asdict(settings)
    current["fractions"], current["low_shot"] = list(current["fractions"]), list(current["low_shot"])
    if path.exists():
        saved = json.loads(path.read_text()).get("settings", {})
        ignore = {"device"}  # where it runs does not change what it computes
        diff = {k: (saved.get(k), v) for k, v in current.items() if k not in ignore and saved.get(k) != v}
        if diff:
            lines = ", ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in diff.items())
            raise PicoJepaError(f"{out} holds an experiment with other settings ({lines}); use a new --out")
    write_json(path, {"settings": current})


def _fitted_params(ens: Ensemble) -> dict[str, Any]:
    params: dict[str, Any] = {"temperature": ens.temperature}
    if ens.method == "weighted":
        params["weights"] = np.asarray(ens.weights_).tolist()
    if ens.method == "stack":
        stack = ens.stack_
        params.update(coef=stack.coef.tolist(), intercept=stack.intercept.tolist(),
                      classes=np.asarray(stack.classes).tolist(), features=ens.stack_features)
    return params


def _compute_table(settings: ExperimentSettings, members: list[Member], encoders: dict[str, dict],
                   heads: dict[str, dict]) -> dict[str, dict]:
    table = {}
    for m in members:
        enc = encoders[m.encoder]
        table[m.name] = {**_member_cost(m, encoders, heads), "pretrain_videos": enc["videos"],
                         "pretrain_seconds": enc["seconds"], "encoder_params": enc["params"], "head": m.head,
                         "head_train_videos": heads[m.name]["train_videos"], "seed": m.seed,
                         "shared_encoder": settings.mode == "shared"}
    return table


def _member_cost(m: Member, encoders: dict[str, dict], heads: dict[str, dict]) -> dict[str, Any]:
    """A model's compute as its runs recorded it: its encoder's pretraining steps × batch, and its head's steps."""
    enc = encoders[m.encoder]
    return {"encoder": m.encoder, "pretrain_steps": enc["steps"], "pretrain_batch": enc["batch_size"],
            "pretrain_clip_steps": enc["clip_steps"], "head_steps": heads[m.name]["head_steps"]}


MODE_NOTES = {
    "shared": "shared mode: General and all Partials use one encoder, pretrained once",
    "independent": "independent mode: each Partial pretrains its own encoder on its shard",
    "deep": "deep mode: each Partial pretrains its own encoder on the whole pool with its own seed, and trains "
            "its head on every training label",
    "compute-matched": "compute-matched mode: as deep, but General pretrains as many times longer as there are "
                       "Partials, so its pretraining clip-steps equal the ensemble's total",
    "domains": "domains mode: the pool is clustered into as many domains as there are Partials (k-means on the "
               "random-init encoder's clip features, no labels); each Partial pretrains its own encoder on its "
               "domain and trains its head on every training label; route mixes them by distance to the domains",
}


def domains_summary(out: Path) -> dict[str, Any]:
    """The report's account of the domains: sizes, τ and where the centroids are."""
    meta = json.loads((out / DOMAINS_FILE).read_text())
    return {"file": DOMAINS_FILE, "sizes": meta["sizes"], "tau": meta["tau"], "tau_rule": meta["tau_rule"],
            "embedding": meta["embedding"], "not_embedded": len(meta["not_embedded"])}


def ensemble_compute(settings: ExperimentSettings, members: list[Member], encoders: dict[str, dict],
                     heads: dict[str, dict]) -> dict[str, Any]:
    """Pretraining clip-steps and head steps of General, of each Partial and of the ensemble in total, as the
    runs recorded them. An encoder several Partials share counts once: it was pretrained once."""
    general = next(m for m in members if m.name == "general")
    partials = [m for m in members if m.name not in ("general", RANDOM_INIT)]
    per_member = {m.name: _member_cost(m, encoders, heads) for m in partials}
    ensemble_pretrain = sum(encoders[e]["clip_steps"] for e in dict.fromkeys(m.encoder for m in partials))
    ensemble_heads = sum(c["head_steps"] for c in per_member.values())
    gen = _member_cost(general, encoders, heads)
    return {"general": gen, "members": per_member,
            "ensemble": {"pretrain_clip_steps": ensemble_pretrain, "head_steps": ensemble_heads},
            "general_clip_steps": gen["pretrain_clip_steps"], "ensemble_clip_steps": ensemble_pretrain,
            "ratio_ensemble_to_general": round(ensemble_pretrain / max(gen["pretrain_clip_steps"], 1), 3),
            "head_steps_ratio_ensemble_to_general": round(ensemble_heads / max(gen["head_steps"], 1), 3),
            # how many times a member's run length General's pretraining was given
            "general_length_factor": settings.members if settings.mode == "compute-matched" else 1,
            "note": MODE_NOTES[settings.mode]}
