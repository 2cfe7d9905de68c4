"""Scorers: uint8 clips of a batch of videos (or stream windows) → every model's probabilities and the
ensemble's output, with the torch runtime or with ONNX Runtime on an export folder. Both take the same
input, prepared by the same code, and fill the same CSV."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ..data.cache import CacheSettings
from ..data.decode import choose_decoder
from ..data.transforms import MEAN, STD, cached_eval_transform
from ..errors import ConfigError, DataError
from ..experiment.predict import AGGREGATIONS, ROUTE_TORCH_ONLY, aggregate, resolve_models
from ..probe.classifier import load_classifier
from ..utils import resolve_device
from .export import common_sampling, fitted_params
from .manifest import INPUT, Manifest, Sampling, read_manifest
from .onnx_support import open_session

RUNTIMES = ("torch", "onnx")


@dataclass
class Scores:
    models: np.ndarray  # (M, V, C) probabilities, rows in the scorer's ``names`` order
    ensemble: tuple[np.ndarray, np.ndarray] | None  # (V, C) probabilities (vote: vote fractions), (V,) classes


class Scorer(Protocol):
    names: list[str]
    class_names: list[str]
    ensemble_name: str | None  # "ensemble:<aggregation>" when an ensemble row is produced
    sampling: Sampling

    def __call__(self, clips: np.ndarray) -> Scores: ...


def cache_settings_of(sampling: Sampling) -> CacheSettings:
    """Decoding settings that give the frames the models were evaluated on."""
    return CacheSettings(sampling.resize_side, sampling.frame_stride, sampling.target_fps, sampling.max_frames,
                         choose_decoder(sampling.decoder))


def prepare_clips(clips: np.ndarray, size: int) -> np.ndarray:
    """uint8 square frames (V, K, T, S', S', 3) as decoded → the graph input (V, K, 3, T, S, S) float32:
    centre crop and normalisation exactly as the torch runtime prepares them."""
    flat = torch.from_numpy(np.ascontiguousarray(clips.reshape(-1, *clips.shape[2:])))
    video = cached_eval_transform(flat, size)
    return video.reshape(*clips.shape[:2], *video.shape[1:]).numpy()


class TorchScorer:
    """Classifier folders or an experiment folder, run with torch (each model loaded once)."""

    def __init__(self, model_paths: list[Path], aggregate_method: str | None = "vote", device: str = "auto") -> None:
        if aggregate_method is not None and aggregate_method not in AGGREGATIONS:
            raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate_method!r}")
        if aggregate_method == "route":  # it embeds whole videos for the routing, not the scorer's clips
            raise ConfigError(ROUTE_TORCH_ONLY)
        self.models = resolve_models(model_paths)
        self.names = self.models.names
        dev = resolve_device(device)
        self.classifiers = [load_classifier(d, dev) for d in self.models.dirs]
        self.class_names, self.sampling = common_sampling(self.names, self.classifiers)
        self.member_idx = [self.names.index(n) for n in self.models.members]
        self.method = aggregate_method if len(self.member_idx) > 1 else None
        self.ensemble_name = f"ensemble:{self.method}" if self.method else None
        if self.method in ("weighted", "stack"):
            fitted_params(self.models, self.method)  # the clear error when nothing was fitted

    def __call__(self, clips: np.ndarray) -> Scores:
        flat = torch.from_numpy(np.ascontiguousarray(clips.reshape(-1, *clips.shape[2:])))
        probs = np.stack([clf.proba_from_clips(flat).cpu().numpy().astype(np.float64) for clf in self.classifiers])
        ens = aggregate(self.method, probs[self.member_idx], self.models.fitted) if self.method else None
        return Scores(probs, ens)


class OnnxScorer:
    """An export folder run with ONNX Runtime: the ensemble graph serves its members and the aggregation in
    one session; models outside the ensemble (the General model) run their own graphs."""

    def __init__(self, export_dir: Path, aggregate_method: str | None = None, int8: bool = False,
                 device: str = "cpu", threads: int | None = None) -> None:
        self.manifest: Manifest = read_manifest(export_dir)
        m, ens = self.manifest, self.manifest.ensemble
        if aggregate_method is not None and ens is not None and aggregate_method != ens.aggregation:
            raise ConfigError(f"{export_dir} was exported with --aggregate {ens.aggregation}; export again with "
                              f"--aggregate {aggregate_method} to serve that aggregation")
        if int8 and m.int8 is None:
            raise ConfigError(f"{export_dir} has no int8 graphs: export again with --int8")
        if tuple(m.sampling.mean) != MEAN or tuple(m.sampling.std) != STD:
            raise DataError(f"{export_dir}: normalisation {m.sampling.mean}/{m.sampling.std} differs from this "
                            "version's; export again")
        self.names = [model.name for model in m.models]
        self.class_names = m.classes
        self.sampling = m.sampling
        self.ensemble_name = f"ensemble:{ens.aggregation}" if ens else None

        def session(file: str | None, int8_file: str | None) -> Any:
            return open_session(export_dir / (int8_file if int8 else file), device, threads)

        self.ensemble = session(ens.file, ens.int8_file) if ens else None
        self.ensemble_rows = [self.names.index(n) for n in ens.members] if ens else []
        self.singles = {self.names.index(model.name): session(model.file, model.int8_file) for model in m.models
                        if not (ens and model.name in ens.members)}

    def __call__(self, clips: np.ndarray) -> Scores:
        x = {INPUT: prepare_clips(clips, self.sampling.size)}
        probs = np.zeros((len(self.names), len(clips), len(self.class_names)))
        ens = None
        if self.ensemble is not None:
            ens_probs, prediction, member_probs = self.ensemble.run(None, x)
            probs[self.ensemble_rows] = member_probs
            ens = (ens_probs.astype(np.float64), prediction)
        for row, session in self.singles.items():
            probs[row] = session.run(None, x)[0]
        return Scores(probs, ens)


def make_scorer(runtime: str, model_paths: list[Path], aggregate_method: str | None, device: str = "auto",
                int8: bool = False, threads: int | None = None) -> Scorer:
    """``torch``: classifier or experiment folders; ``onnx``: one export folder."""
    if aggregate_method == "route":
        raise ConfigError(ROUTE_TORCH_ONLY)
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "torch":
        if int8:
            raise ConfigError("--int8 runs the int8 ONNX graphs: use it with --runtime onnx")
        return TorchScorer(model_paths, "vote" if aggregate_method is None else aggregate_method, device)
    if len(model_paths) != 1:
        raise ConfigError(f"--runtime onnx takes one export folder (written by picojepa export), got "
                          f"{len(model_paths)} paths")
    return OnnxScorer(model_paths[0], aggregate_method, int8, device, threads)
