"""Batch inference: every model loaded once, videos decoded once in worker processes while the models
compute, per-model and ensemble probabilities written to one CSV. Unusable videos are reported, never
guessed."""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import Config
from ..data.check import check_videos
from ..data.dataset import FrameStore, cache_settings, eval_loader
from ..data.sources import Problem, VideoSet, load_videos
from ..ensemble.aggregation import LOG_FLOOR, hard_vote, soft_vote, vote_fractions
from ..errors import ConfigError, DataError
from ..probe.classifier import VideoClassifier, load_classifier, read_classifier_config
from ..train.distributed import fingerprint
from ..utils import resolve_device, write_json, write_text
from .domains import route

AGGREGATIONS = ("vote", "soft", "weighted", "stack", "route")
ROUTE_NEEDS = ("--aggregate route needs one experiment folder run with --mode domains, alone (its domains.json "
               "holds the domain centroids and τ)")
ROUTE_TORCH_ONLY = ("--aggregate route weighs the members by each whole video's distance to the domains: it runs "
                    "in `picojepa predict --videos` with the torch runtime only (not --stream, --runtime onnx or "
                    "--int8)")
ROUTE_NOT_EXPORTED = ("--aggregate route cannot be exported to ONNX yet (its graph would need the random-init "
                      "embedding encoder and the domain centroids as well); export with vote, soft, weighted or "
                      "stack, or serve route with `picojepa predict --aggregate route` on the experiment folder")


@dataclass
class ModelSet:
    names: list[str]
    dirs: list[Path]
    fitted: dict[str, Any] = field(default_factory=dict)  # from an experiment's ensemble.json
    members: list[str] = field(default_factory=list)  # names that take part in the aggregation
    unfitted_reason: str = ("pass an experiment folder (with ensemble.json) to --models, or use vote or soft")


def resolve_models(paths: list[Path]) -> ModelSet:
    """Classifier folders, or experiment folders (their General and Partials, with fitted aggregations).

    Weights and stackers are fitted on one experiment's members, so they apply only when that experiment
    is the whole model set; with several folders, every member takes part in vote and soft alone."""
    if not paths:
        raise ConfigError("give at least one model folder with --models")
    names, dirs, members = [], [], []
    fitted_per_folder: list[dict[str, Any]] = []
    for path in paths:
        ens = path / "ensemble.json"
        if ens.is_file():
            meta = json.loads(ens.read_text())
            fitted_per_folder.append(meta.get("methods", {}))
            for name, d in [("general", meta["general"]), *[(Path(m).name, m) for m in meta["members"]]]:
                names.append(name if len(paths) == 1 else f"{path.name}/{name}")
                dirs.append(Path(d))
                if name != "general":
                    members.append(names[-1])
            continue
        read_classifier_config(path)  # clear error when it is neither kind of folder
        names.append(path.name if path.name not in names else f"{path.name}_{len(names)}")
        dirs.append(path)
        members.append(names[-1])
    if len(paths) == 1 and fitted_per_folder:
        not_fitted = json.loads((paths[0] / "ensemble.json").read_text()).get("not_fitted") or {}
        reason = ModelSet.unfitted_reason
        if not_fitted:
            reason = "the experiment did not fit it: " + "; ".join(f"{m}: {r}" for m, r in not_fitted.items())
        return ModelSet(names, dirs, fitted_per_folder[0], members, reason)
    reason = ModelSet.unfitted_reason
    if fitted_per_folder:
        reason = (f"the weights and stackers in ensemble.json were fitted on one experiment's members, not on "
                  f"the {len(members)} members of these {len(paths)} folders together; use vote or soft, or "
                  f"pass one experiment folder")
    return ModelSet(names, dirs, {}, members, reason)


def stack_from_params(probs: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Apply a stacking meta-model saved by an experiment to member probabilities (M, n, C)."""
    coef, intercept = np.asarray(params["coef"]), np.asarray(params["intercept"])
    x = np.log(np.clip(probs, LOG_FLOOR, 1.0)) if params.get("features", "log") == "log" else probs
    x = np.transpose(x, (1, 0, 2)).reshape(probs.shape[1], -1)
    logits = x @ coef.T + intercept
    seen = np.zeros(coef.shape[0], dtype=bool)
    seen[np.asarray(params["classes"], dtype=int)] = True
    logits[:, ~seen] = -np.inf
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=1, keepdims=True)


def aggregate(method: str, probs: np.ndarray, fitted: dict[str, Any],
              unfitted_reason: str = ModelSet.unfitted_reason,
              routing: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities or vote fractions, predictions) of the members' probabilities (M, n, C); ``route`` also
    needs each video's routing weights (n, M), from :func:`picojepa.experiment.domains.routing_weights`."""
    if method == "vote":
        return vote_fractions(probs), hard_vote(probs)[0]
    if method == "route":
        if "route" not in fitted:
            raise ConfigError(ROUTE_NEEDS)
        if routing is None:
            raise ConfigError(ROUTE_TORCH_ONLY)
        out = route(probs, routing)
        return out, out.argmax(axis=1)
    if method == "soft":
        out = soft_vote(probs)
    elif method not in fitted:
        raise ConfigError(f"--aggregate {method} needs weights fitted on a validation split: {unfitted_reason}")
    elif method == "weighted":
        out = soft_vote(probs, fitted[method].get("temperature", 1.0), fitted[method]["weights"])
    else:
        out = stack_from_params(probs, fitted[method])
    return out, out.argmax(axis=1)


@dataclass
class PredictSummary:
    videos: int
    skipped: list[Problem]
    seconds: float
    accuracy: dict[str, float]
    out: Path


def predict(model_paths: list[Path], videos_path: Path, out_csv: Path, aggregate_method: str | None = "vote",
            device: str = "auto", batch_size: int = 8, workers: int = 2, progress: bool = True) -> PredictSummary:
    from ..progress import track

    if aggregate_method is not None and aggregate_method not in AGGREGATIONS:
        raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate_method!r}")
    models = resolve_models(model_paths)
    dev = resolve_device(device)
    classifiers = [load_classifier(d, dev) for d in models.dirs]  # each model loaded once
    class_names = classifiers[0].class_names
    for name, clf in zip(models.names, classifiers, strict=True):
        if clf.class_names != class_names:
            raise DataError(f"model {name} has classes {clf.class_names}, others {class_names}: they cannot vote")
    if aggregate_method == "route" and "route" not in models.fitted:
        raise ConfigError(ROUTE_NEEDS)
    if aggregate_method in ("weighted", "stack") and aggregate_method not in models.fitted:
        aggregate(aggregate_method, np.zeros((1, 1, len(class_names))), models.fitted,
                  models.unfitted_reason)  # raises the clear error
    videos = load_videos(videos_path)
    check = check_videos(videos, progress=progress)  # does each video open; decoding is judged per model below
    skipped = list(check.problems)
    usable = VideoSet(check.usable, videos.class_names, videos.source)
    t0 = time.perf_counter()
    probs, errors = _stream(classifiers, usable, batch_size, workers, progress, track)
    ok = _decoded_by_every_model(probs, usable, models.names, errors, skipped)
    weights = None
    if aggregate_method == "route":
        ok, weights = _routing(models, usable, ok, skipped, dev, progress)
    rows = _rows(models, probs, ok, usable, class_names, aggregate_method, weights)
    write_text(out_csv, rows)
    seconds = time.perf_counter() - t0
    if skipped:
        write_json(out_csv.with_suffix(".skipped.json"),
                   [{"path": p.path, "reason": p.reason, "line": p.line} for p in skipped])
    accuracy = _accuracy(models, probs, ok, usable, class_names, aggregate_method, weights)
    return PredictSummary(int(ok.sum()), skipped, seconds, accuracy, out_csv)


def _decoded_by_every_model(probs: np.ndarray, videos: VideoSet, names: list[str], errors: dict[int, str],
                            skipped: list[Problem]) -> np.ndarray:
    """Videos with probabilities from every model. One that failed to decode under some models' sampling
    settings only (another size, stride or frame rate reaching a broken part of the file, say) is skipped
    for all and reported with those models, so every row of the CSV, the ensemble's included, covers the
    same videos."""
    ok = ~np.isnan(probs).any(axis=(0, 2))
    for v in np.flatnonzero(~ok):
        item = videos.items[v]
        failed = [n for m, n in enumerate(names) if np.isnan(probs[m, v]).any()]
        which = "" if len(failed) == len(names) else f" (for models {', '.join(failed)}; skipped for all)"
        skipped.append(Problem(str(item.path), errors.get(v, "could not be decoded") + which, item.line))
    return ok


def _routing(models: ModelSet, videos: VideoSet, ok: np.ndarray, skipped: list[Problem], device: Any,
             progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """The videos still usable and their routing weights (usable videos, members), from the experiment's
    domains.json: each video is embedded with the random-init encoder exactly as the pool was (a second decode
    of each video). A video that cannot be embedded is skipped for all, like one a model could not decode."""
    from .domains import load_routing, routing_encoder, routing_weights, video_embeddings

    routing = load_routing(Path(models.fitted["route"]["domains"]))
    if len(routing.centroids) != len(models.members):
        raise DataError(f"domains.json has {len(routing.centroids)} domains for {len(models.members)} members")
    encoder = routing_encoder(routing, device)
    paths = [item.path for item in videos.items]
    emb, embedded = video_embeddings(encoder, paths, Config.from_dict(routing.encoder_config), routing.num_clips,
                                     cached=False, progress=progress)
    for v in np.flatnonzero(ok & ~embedded):
        item = videos.items[v]
        skipped.append(Problem(str(item.path), "could not be decoded for the routing embedding", item.line))
    ok = ok & embedded
    return ok, routing_weights(emb[ok], routing.centroids, routing.tau)


def encoder_groups(classifiers: list[VideoClassifier]) -> list[list[int]]:
    """Models that share bit-identical encoders (the shared protocol's General and Partials): each group
    runs its encoder once per batch and only its heads separately."""
    groups: dict[str, list[int]] = {}
    for m, clf in enumerate(classifiers):
        groups.setdefault(fingerprint(clf.encoder), []).append(m)
    return list(groups.values())


def _stream(classifiers: list[VideoClassifier], videos: VideoSet, batch_size: int, workers: int, progress: bool,
            track: Any) -> tuple[np.ndarray, dict[int, str]]:
    """(M, V, C) probabilities with NaN rows where a video failed to decode (and the first reason per
    video); one decode per video per sampling setting, shared by all models that use it, and one encoder
    pass per distinct encoder."""
    M, V, C = len(classifiers), len(videos.items), len(classifiers[0].class_names)
    probs = np.full((M, V, C), np.nan)
    same_encoder = encoder_groups(classifiers)
    groups: dict[Any, list[int]] = {}
    for m, clf in enumerate(classifiers):
        groups.setdefault((cache_settings(clf.cfg), clf.cfg.model.num_frames, clf.num_clips), []).append(m)
    paths = [item.path for item in videos.items]
    errors: dict[int, str] = {}
    for (settings, frames, clips), model_ids in groups.items():
        store = FrameStore(paths, settings, cache=None)
        loader = eval_loader(store, frames, clips, batch_size, workers)
        encoders = [[m for m in group if m in model_ids] for group in same_encoder]
        encoders = [group for group in encoders if group]
        for items in track(loader, total=len(loader), description="predicting", enabled=progress):
            good = [(i, c) for i, c, err in items if err is None]
            for i, _, err in items:
                if err is not None:
                    errors.setdefault(i, err)
            if not good:
                continue
            index = [i for i, _ in good]
            batch = torch.from_numpy(np.concatenate([c for _, c in good]))
            for group in encoders:
                tokens = classifiers[group[0]].tokens_from_clips(batch)
                for m in group:
                    probs[m, index] = classifiers[m].proba_from_tokens(tokens).cpu().numpy()
    return probs, errors


def _rows(models: ModelSet, probs: np.ndarray, ok: np.ndarray, videos: VideoSet, class_names: list[str],
          method: str | None, routing: np.ndarray | None = None) -> str:
    return prediction_rows(models.names, probs, ok, videos, class_names,
                           _ensemble(models, probs, ok, method, routing))


def _ensemble(models: ModelSet, probs: np.ndarray, rows: np.ndarray, method: str | None,
              routing: np.ndarray | None = None) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(row name, probabilities, predictions) of the members' aggregation over ``rows``; None without one.
    ``routing``: the route weights of the ``rows`` videos."""
    member_idx = [models.names.index(n) for n in models.members]
    if not method or len(member_idx) < 2:
        return None
    ens_probs, pred = aggregate(method, probs[member_idx][:, rows], models.fitted, models.unfitted_reason, routing)
    return f"ensemble:{method}", ens_probs, pred


def prediction_rows(names: list[str], probs: np.ndarray, ok: np.ndarray, videos: VideoSet, class_names: list[str],
                    ensemble: tuple[str, np.ndarray, np.ndarray] | None) -> str:
    """The predictions CSV: one row per (video, model) and one per video for the ensemble (whose outputs cover
    the ``ok`` videos in order), with probabilities; any runtime writes the same file."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    labels = _label_names(videos, class_names)
    writer.writerow(["video", "label", "model", "pred", *class_names])
    for row, v in enumerate(np.flatnonzero(ok)):
        item = videos.items[v]
        label = labels[v] or ""
        for m, name in enumerate(names):
            p = probs[m, v]
            writer.writerow([str(item.path), label, name, class_names[int(p.argmax())], *(f"{x:.6f}" for x in p)])
        if ensemble is not None:
            ens_name, ens_probs, ens_pred = ensemble
            writer.writerow([str(item.path), label, ens_name, class_names[int(ens_pred[row])],
                             *(f"{x:.6f}" for x in ens_probs[row])])
    return buf.getvalue()


def _label_names(videos: VideoSet, class_names: list[str]) -> list[str | None]:
    """Each video's class name when the videos are labelled with classes the models know (matched by name)."""
    if not videos.labelled:
        return [None] * len(videos.items)
    names = videos.class_names or []
    return [names[item.label] if names[item.label] in class_names else None for item in videos.items]


def _accuracy(models: ModelSet, probs: np.ndarray, ok: np.ndarray, videos: VideoSet, class_names: list[str],
              method: str | None, routing: np.ndarray | None = None) -> dict:
    return prediction_accuracy(models.names, probs, ok, videos, class_names,
                               _ensemble(models, probs, ok, method, routing))


def prediction_accuracy(names: list[str], probs: np.ndarray, ok: np.ndarray, videos: VideoSet, class_names: list[str],
                        ensemble: tuple[str, np.ndarray, np.ndarray] | None) -> dict:
    """Accuracy over the ``ok`` videos whose label the models know; empty when there are none."""
    labels = _label_names(videos, class_names)
    known = np.array([lab is not None for lab in labels])
    scored = ok & known
    if not scored.any():
        return {}
    y = np.array([class_names.index(lab) for lab, s in zip(labels, scored, strict=True) if s])
    acc = {name: float((probs[m, scored].argmax(1) == y).mean()) for m, name in enumerate(names)}
    if ensemble is not None:
        ens_name, _, pred = ensemble
        acc[ens_name] = float((pred[known[ok]] == y).mean())  # ensemble outputs cover the ok videos only
    return acc
