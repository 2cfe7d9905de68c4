"""Domain shards with routing (Branch-Train-Merge style): ``experiment --mode domains``.

The unlabelled pretraining pool is cut into N domains (N = ``--members``) by seeded k-means on a cheap
embedding computed from the pool alone: the random-init encoder's (the General's architecture at the run's
seed, 0 steps) clip features, mean-pooled over tokens and clips. Partial i pretrains on domain i only.

The ``route`` aggregation embeds each test video the same way and mixes the members' probabilities with
weights softmax(−d²/τ) over its squared distances d² to the N centroids; τ is the median squared distance of
the pool's videos to their own centroid, so a video as far from a centroid as a typical member of that domain
gets e⁻¹ of the weight of one sitting on it. The centroids, τ and the embedding encoder are saved in
``domains.json``, so ``predict --aggregate route`` routes new videos exactly as the experiment did.

Labels cannot enter: :func:`cluster_domains` takes a feature matrix and nothing else, and the pool is embedded
from its video paths alone (any labels it carries are dropped before).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans

from ..config import Config
from ..data.sources import VideoItem, VideoSet
from ..errors import CheckpointError, ConfigError, DataError
from ..models import VideoViT
from ..probe.classifier import file_sha256
from ..probe.features import extract_features
from ..progress import info
from ..train import load_encoder
from ..train.checkpoint import ENCODER_FILE
from ..train.pretrain import initial_encoder
from ..utils import write_json

DOMAINS_FILE = "domains.json"
MIN_DOMAIN_VIDEOS = 2  # a domain of one video is an outlier, not a domain: the run stops and says so
KMEANS_INITS = 10


@dataclass
class Domains:
    assignment: np.ndarray  # (V,) the domain of each embedded pool video
    centroids: np.ndarray  # (N, D)
    tau: float  # median squared distance of the pool's videos to their own centroid


@dataclass
class Routing:
    """What ``route`` needs to weigh the members for new videos, as saved in ``domains.json``."""

    centroids: np.ndarray
    tau: float
    encoder_dir: Path
    encoder_sha256: str
    encoder_config: dict[str, Any]
    num_clips: int


# ------------------------------------------------------------------------------------ clustering and routing
def squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """(n, N) squared Euclidean distances of each row of ``x`` to each centroid."""
    x, c = np.asarray(x, dtype=np.float64), np.asarray(centroids, dtype=np.float64)
    if x.ndim != 2 or c.ndim != 2 or x.shape[1] != c.shape[1]:
        raise DataError(f"embeddings {x.shape} and centroids {c.shape} must be 2-D with the same width")
    return np.maximum(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1), 0.0)


def cluster_domains(features: np.ndarray, n: int, seed: int) -> Domains:
    """Seeded k-means of the pool's embeddings (V, D) into ``n`` domains. Takes no labels, by design."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) < n * MIN_DOMAIN_VIDEOS:
        raise DataError(f"the pretraining pool has {len(x)} embedded videos: too few for {n} domains of at least "
                        f"{MIN_DOMAIN_VIDEOS} videos; use fewer --members or a larger pool")
    km = KMeans(n_clusters=n, n_init=KMEANS_INITS, random_state=seed).fit(x)
    assignment = km.labels_.astype(int)
    sizes = np.bincount(assignment, minlength=n)
    if sizes.min() < MIN_DOMAIN_VIDEOS:
        raise DataError(f"k-means found domains of {sizes.tolist()} pool videos; every domain needs at least "
                        f"{MIN_DOMAIN_VIDEOS} (a member pretrains on its domain alone); use fewer --members or a "
                        f"larger, more varied pool")
    centroids = km.cluster_centers_
    own = squared_distances(x, centroids)[np.arange(len(x)), assignment]
    tau = float(np.median(own))
    if not tau > 0:
        raise DataError("half or more of the pool's videos sit exactly on their domain's centroid (τ = 0): the "
                        "embedding cannot tell the videos apart, so there is nothing to route on")
    return Domains(assignment, centroids, tau)


def routing_weights(embeddings: np.ndarray, centroids: np.ndarray, tau: float) -> np.ndarray:
    """(n, N) member weights softmax(−d²/τ) over each video's squared distances to the domain centroids."""
    if not (np.isfinite(tau) and tau > 0):
        raise ConfigError(f"the routing temperature τ must be a positive number, got {tau!r}")
    logits = -squared_distances(embeddings, centroids) / tau
    logits -= logits.max(axis=1, keepdims=True)  # stable: the nearest centroid's term is exp(0)
    w = np.exp(logits)
    return w / w.sum(axis=1, keepdims=True)


def route(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-video mixture of the members' probabilities (M, n, C) with routing weights (n, M) → (n, C)."""
    probs, weights = np.asarray(probs, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    if probs.ndim != 3 or weights.shape != probs.shape[:2][::-1]:
        raise DataError(f"routing weights {weights.shape} must be (videos, members) for member probabilities "
                        f"{probs.shape}")
    return np.einsum("nm,mnc->nc", weights, probs)


# ------------------------------------------------------------------------------------ embedding videos
def video_embeddings(encoder: VideoViT, paths: list[Path], cfg: Config, num_clips: int,
                     cache_dir: Path | None = None, cached: bool = True,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(V, D) mean-pooled clip features and (V,) decoded flags, computed as the experiment's frozen features
    are (same sampling, clips and transform), so pool, test and new videos are embedded alike. ``cached``:
    decoded clips go through the clip cache, as in the experiment (``predict`` decodes directly)."""
    from ..data.cache import ClipCache
    from ..data.dataset import FrameStore, cache_settings

    settings = cache_settings(cfg)
    cache = ClipCache(cache_dir or cfg.data.cache_dir, settings) if cached and cfg.data.use_cache else None
    if cache is not None:
        cache.build(paths, progress=progress)
    feats = extract_features(encoder, FrameStore(paths, settings, cache), num_clips, progress=progress,
                             description="routing embedding")
    return feats.pooled.mean(1), feats.ok


def _domains_key(encoder_dir: Path, paths: list[str], n: int, seed: int, num_clips: int) -> str:
    parts = [file_sha256(encoder_dir / ENCODER_FILE), paths, n, seed, num_clips, KMEANS_INITS]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def pool_domains(pool: VideoSet, encoder_dir: Path, cfg: Config, n: int, seed: int, num_clips: int, out: Path,
                 cache_dir: Path | None = None, progress: bool = False) -> list[VideoSet]:
    """Cluster the pool into ``n`` domains on the random-init encoder's embedding, write ``domains.json``
    (reused while the encoder, pool and settings are unchanged) and return each domain's videos, unlabelled."""
    paths = [str(item.path) for item in pool.items]  # the paths alone: labels never reach the clustering
    key = _domains_key(encoder_dir, paths, n, seed, num_clips)
    saved = out / DOMAINS_FILE
    if saved.is_file() and (meta := json.loads(saved.read_text())).get("key") == key:
        info(f"reusing {saved}")
        groups = meta["domains"]
    else:
        encoder = load_encoder(encoder_dir)
        emb, ok = video_embeddings(encoder, [Path(p) for p in paths], cfg, num_clips, cache_dir, progress=progress)
        if not ok.all():
            info(f"{int((~ok).sum())} pool video(s) failed to decode for the routing embedding: left out of "
                 f"every domain")
        kept = [p for p, good in zip(paths, ok, strict=True) if good]
        domains = cluster_domains(emb[ok], n, seed)
        groups = [[p for p, d in zip(kept, domains.assignment, strict=True) if d == k] for k in range(n)]
        write_json(saved, {
            "key": key, "embedding": "random-init encoder's clip features, mean over tokens and clips",
            "encoder": {"run_dir": str(encoder_dir.resolve()), "sha256": file_sha256(encoder_dir / ENCODER_FILE),
                        "config": cfg.to_dict(), "seed": cfg.train.seed},
            "num_clips": num_clips, "seed": seed, "tau": domains.tau,
            "tau_rule": "median squared distance of the pool's videos to their own centroid",
            "centroids": domains.centroids.tolist(), "sizes": [len(g) for g in groups],
            "not_embedded": [p for p, good in zip(paths, ok, strict=True) if not good], "domains": groups})
    return [VideoSet([VideoItem(Path(p)) for p in g], None, f"{pool.source} (domain {k + 1}/{n})")
            for k, g in enumerate(groups)]


# ------------------------------------------------------------------------------------ routing new videos
def load_routing(path: Path) -> Routing:
    if not path.is_file():
        raise ConfigError(f"{path} is missing: --aggregate route needs the domains.json of a --mode domains "
                          f"experiment")
    meta = json.loads(path.read_text())
    enc = meta["encoder"]
    return Routing(np.asarray(meta["centroids"]), float(meta["tau"]), Path(enc["run_dir"]), enc["sha256"],
                   enc["config"], int(meta["num_clips"]))


def routing_encoder(routing: Routing, device: Any = "cpu") -> VideoViT:
    """The embedding encoder: the saved random-init run when it is still there and unchanged, else the same
    draws rebuilt from its saved config and seed (the random-init encoder is a function of both)."""
    weights = routing.encoder_dir / ENCODER_FILE
    if weights.is_file():
        if file_sha256(weights) != routing.encoder_sha256:
            raise CheckpointError(f"{weights} changed since the experiment clustered its pool; it no longer "
                                  f"embeds videos as the domains were made")
        return load_encoder(routing.encoder_dir, device)
    return initial_encoder(Config.from_dict(routing.encoder_config)).to(device)
