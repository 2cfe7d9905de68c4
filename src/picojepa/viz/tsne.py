"""t-SNE maps of frozen video embeddings, one panel per model, coloured by class.

Each panel's title carries the silhouette score of the class labels measured in the embedding space
itself (cosine distance), not in the 2-D map: t-SNE can draw tidy clusters that the features do not
have, so the number is the honest comparison between models.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..config import Config
from ..errors import CheckpointError, DataError
from ..progress import track
from .style import class_color, class_marker, fit_text, new_figure, save, styled

MIN_VIDEOS = 6  # fewer points make neither a t-SNE nor a silhouette meaningful
MAX_LEGEND_CLASSES = 40
SMALL_SAMPLE = 1000  # below this many points t-SNE runs single-threaded
Panel = tuple[str, np.ndarray, np.ndarray]  # (title, X (n, D), y (n,))


# ---------------------------------------------------------------------------------------- embeddings


def load_model(model_dir: str | Path, device: str = "cpu"):
    """(encoder, config) of a pretraining run folder or of a classifier folder (its own or its run's encoder)."""
    from ..train.checkpoint import config_from_run, load_encoder

    model_dir = Path(model_dir)
    meta_path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise DataError(f"model folder not found: {model_dir}")
    if not meta_path.is_file():
        raise DataError(f"{model_dir} has no config.json: give a pretraining run folder or a classifier folder")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path} is not valid JSON: {e}") from e
    if "encoder" not in meta:
        return load_encoder(model_dir, device), config_from_run(model_dir)
    if meta.get("encoder_embedded"):  # fine-tuned: the classifier carries its own encoder
        from ..probe.classifier import load_classifier

        return load_classifier(model_dir, device).encoder.eval(), Config.from_dict(meta["encoder_config"])
    run_dir = Path((meta["encoder"] or {}).get("run_dir", ""))
    return load_encoder(run_dir, device), config_from_run(run_dir)


def sample_per_class(labels: Sequence[int], videos_per_class: int, seed: int) -> list[int]:
    """Up to ``videos_per_class`` indices of each class, drawn at random, in their original order."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    chosen: list[int] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        chosen += rng.choice(members, size=min(videos_per_class, len(members)), replace=False).tolist()
    return sorted(chosen)


def embed_videos(model_dir: str | Path, data: str | Path, videos_per_class: int = 20, seed: int = 0,
                 progress: bool = True, cache_dir: str | Path | None = None, num_clips: int = 2,
                 device: str = "cpu") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Clip embeddings (mean over tokens, then over ``num_clips`` evenly spaced clips) of a labelled sample.

    Returns X (n, D), y (n,) and the class names; videos that fail to decode are left out (with a warning
    from data preparation), never replaced.
    """
    from ..data import load_videos, prepare_videos
    from ..probe.features import extract_features

    encoder, cfg = load_model(model_dir, device)
    videos = load_videos(data)
    if not videos.labelled:
        raise DataError(f"{data} has no labels; t-SNE colours videos by class: use class folders or a labelled "
                        "manifest")
    sample = videos.subset(sample_per_class(videos.labels, videos_per_class, seed))
    prepared = prepare_videos(sample, cfg, progress=progress, cache_dir=cache_dir)
    features = extract_features(encoder, prepared.store, num_clips=num_clips, progress=progress,
                                description=f"embedding {Path(model_dir).name}")
    ok = features.ok
    X = features.pooled[ok].mean(axis=1)
    y = np.asarray(prepared.videos.labels)[ok]
    return X, y, list(videos.class_names or [])


# ---------------------------------------------------------------------------------------- t-SNE


def check_panel(title: str, X: np.ndarray, y: np.ndarray) -> None:
    if X.ndim != 2 or len(X) != len(y):
        raise DataError(f"{title}: embeddings of shape {X.shape} do not match {len(y)} labels")
    if len(X) < MIN_VIDEOS:
        raise DataError(f"{title}: only {len(X)} videos embedded; a t-SNE map needs at least {MIN_VIDEOS} "
                        "(raise --videos-per-class or add videos)")
    if len(np.unique(y)) < 2:
        raise DataError(f"{title}: all embedded videos belong to one class; need at least two classes")


def perplexity_for(n: int) -> float:
    """scikit-learn's default 30, lowered for small samples (it must stay below n; ~n/4 keeps maps stable)."""
    return float(min(30.0, max(2.0, (n - 1) / 4)))


def silhouette(X: np.ndarray, y: np.ndarray) -> float:
    """Silhouette of the class labels in the embedding space (cosine distance); in [-1, 1]."""
    from sklearn.metrics import silhouette_score

    if len(np.unique(y)) >= len(y):  # every point its own class: undefined
        return float("nan")
    return float(silhouette_score(X, y, metric="cosine"))


def tsne_2d(X: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    X = np.asarray(X, dtype=np.float64)
    X = X - X.mean(axis=0)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X = X / np.where(norms > 0, norms, 1.0)  # cosine geometry, as in the silhouette
    if X.shape[1] > 50 and len(X) > 50:  # the usual PCA step: faster, and denoises the neighbourhoods
        X = PCA(n_components=50, random_state=seed).fit_transform(X)
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    tsne = TSNE(n_components=2, perplexity=perplexity_for(len(X)), init="pca", learning_rate="auto",
                random_state=seed)
    # OpenMP start-up costs dwarf the work on small samples (seconds instead of a fraction of one).
    with threadpool_limits(limits=1 if len(X) < SMALL_SAMPLE else None):
        return tsne.fit_transform(X)


def plot_tsne(panels: Sequence[Panel], class_names: Sequence[str], out: str | Path, seed: int = 0,
              progress: bool = True) -> dict[str, float]:
    """One t-SNE panel per model, coloured by class; returns {panel title: silhouette in embedding space}."""
    if not panels:
        raise DataError("no embeddings to plot")
    titles = [title for title, _, _ in panels]
    if len(set(titles)) != len(titles):
        raise DataError(f"panel titles must be unique, got {titles}")
    for title, X, y in panels:
        check_panel(title, np.asarray(X), np.asarray(y))
    scores, maps = {}, []
    for title, X, y in track(panels, total=len(panels), description="t-SNE", enabled=progress):
        scores[title] = silhouette(np.asarray(X), np.asarray(y))
        maps.append((title, tsne_2d(np.asarray(X), seed), np.asarray(y)))
    save(_figure(maps, scores, list(class_names)), out)
    return scores


@styled
def _figure(maps: list[Panel], scores: dict[str, float], class_names: list[str]):
    cols = min(3, len(maps))
    rows = -(-len(maps) // cols)
    fig = new_figure(3.6 * cols + 0.4, 3.5 * rows + 0.9)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    present = sorted({int(c) for _, _, y in maps for c in y})
    for ax, (title, Z, y) in zip(axes, maps, strict=False):
        for c in present:
            pts = Z[y == c]
            ax.scatter(pts[:, 0], pts[:, 1], s=16, color=class_color(c), marker=class_marker(c), alpha=0.85,
                       linewidths=0.3, edgecolors="white", label=_class_name(class_names, c))
        ax.set_title(fit_text(f"{title}\nsilhouette {scores[title]:+.3f} · {len(y)} videos", 3.3, 10))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_aspect("equal", adjustable="datalim")
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color("#BBBBBB")
    for ax in axes[len(maps):]:
        ax.set_visible(False)
    _legend(fig, axes[0], class_names, len(present))
    fig.suptitle(fit_text("t-SNE of clip embeddings (silhouette: class separation in the embedding space, cosine)",
                          fig.get_figwidth() - 0.3, 12))
    return fig


def _class_name(class_names: Sequence[str], c: int) -> str:
    return str(class_names[c]) if 0 <= c < len(class_names) else f"class {c}"


def _legend(fig, ax, class_names: Sequence[str], num_classes: int) -> None:
    if num_classes > MAX_LEGEND_CLASSES:
        fig.text(0.5, 0.0, f"{num_classes} classes (too many to list)", ha="center", va="bottom", fontsize=9)
        return
    handles, labels = ax.get_legend_handles_labels()
    ncol = min(num_classes, 6)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, frameon=False, markerscale=1.6)
