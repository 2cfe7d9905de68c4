"""``picojepa export``: members and whole ensembles as ONNX graphs plus a manifest.

Per model one graph (encoder + head + clip averaging); for the ensemble one graph holding every member and
the aggregation with its fitted parameters, so one file and one session serve it. Each graph is checked
against torch on the spot; optional int8 versions come from ONNX Runtime's quantisation tools.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, DataError, PicoJepaError
from ..experiment.predict import AGGREGATIONS, ROUTE_NOT_EXPORTED, ModelSet, resolve_models
from ..probe.classifier import VideoClassifier, load_classifier
from ..utils import atomic_write
from .graphs import EnsembleGraph, HardVote, MemberGraph, SoftVote, Stacking
from .manifest import (
    INPUT,
    MEMBER_PROBABILITIES,
    PREDICTION,
    PROBABILITIES,
    ExportedEnsemble,
    ExportedModel,
    Manifest,
    Sampling,
    read_manifest,
    write_manifest,
)
from .onnx_support import OPSET, open_session, require_onnx
from .quantize import INT8_SETTINGS, quantize_int8

FORMATS = ("onnx",)
EXPORT_TOLERANCE = 1e-4  # largest |torch - ONNX Runtime| probability accepted at export time
ENSEMBLE_FILE = "ensemble.onnx"


@dataclass
class ExportSummary:
    out: Path
    files: dict[str, int]  # file name → bytes
    ensemble: str | None  # aggregation of the ensemble graph, None without one
    max_difference: float  # largest |torch - ONNX Runtime| probability over every graph on the check input
    seconds: float


# ------------------------------------------------------------------------------------ what to export
def select_models(models: ModelSet, members: str) -> list[str]:
    """``all``: the General model and the ensemble members (other baselines are never exported);
    otherwise a comma-separated list of model names."""
    if members == "all":
        return [n for n in models.names if n in models.members or n.rsplit("/", 1)[-1] == "general"]
    chosen = [m.strip() for m in members.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in models.names]
    if unknown or not chosen:
        raise ConfigError(f"--members {members!r}: unknown model(s) {', '.join(unknown) or '(none given)'}; "
                          f"choose from all, {', '.join(models.names)}")
    return [n for n in models.names if n in chosen]


def fitted_params(models: ModelSet, method: str) -> dict[str, Any]:
    """The validation-fitted parameters of ``method`` from an experiment's ensemble.json."""
    if method not in models.fitted:
        raise ConfigError(f"--aggregate {method} needs parameters fitted on a validation split: "
                          f"{models.unfitted_reason}")
    return models.fitted[method]


def aggregation_module(method: str, models: ModelSet, num_members: int, num_classes: int) -> tuple[nn.Module, dict]:
    """The graph's aggregation and the parameters baked into it, as ``predict`` aggregates."""
    if method == "vote":
        return HardVote(num_members, num_classes), {}
    if method == "soft":
        return SoftVote(np.ones(num_members)), {}
    params = fitted_params(models, method)
    if method == "weighted":
        weights = np.asarray(params["weights"], dtype=np.float64)
        if weights.shape != (num_members,):
            raise ConfigError(f"the fitted weights are for {len(weights)} members; weighted needs all of them: "
                              "export with --members all")
        return SoftVote(weights, params.get("temperature", 1.0)), params
    coef = np.asarray(params["coef"], dtype=np.float64)
    if coef.shape != (num_classes, num_members * num_classes):
        raise ConfigError(f"the stacker was fitted on {coef.shape[1] // num_classes} members; stack needs all of "
                          "them: export with --members all")
    return Stacking(coef, np.asarray(params["intercept"]), list(params["classes"]), params.get("features", "log")), \
        params


def _file_name(name: str, suffix: str = ".onnx") -> str:
    return name.replace("/", "__") + suffix


def _int8_name(file: str) -> str:
    return file.removesuffix(".onnx") + ".int8.onnx"


def common_sampling(names: list[str], classifiers: list[VideoClassifier]) -> tuple[list[str], Sampling]:
    classes = classifiers[0].class_names
    sampling = Sampling.of(classifiers[0].cfg, classifiers[0].num_clips)
    for name, clf in zip(names, classifiers, strict=True):
        if clf.class_names != classes:
            raise DataError(f"model {name} has classes {clf.class_names}, the others {classes}: one export needs "
                            "one class list")
        if Sampling.of(clf.cfg, clf.num_clips) != sampling:
            raise DataError(f"model {name} prepares its clips differently from {names[0]} (frames, size, stride "
                            "or clips per video): one export needs one input")
    return classes, sampling


# ------------------------------------------------------------------------------------ graphs to files
def export_graph(module: nn.Module, example: torch.Tensor, path: Path, outputs: list[str], opset: int = OPSET) -> None:
    """Trace ``module`` on ``example`` and write the ONNX graph atomically, batch and clip axes dynamic."""
    axes: dict[str, dict[int, str]] = {INPUT: {0: "videos", 1: "clips_per_video"}, PROBABILITIES: {0: "videos"},
                                       PREDICTION: {0: "videos"}, MEMBER_PROBABILITIES: {1: "videos"}}
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter needs no extra package (the dynamo one needs onnxscript); its deprecation
        # notice and the tracer's note on the encoder's fixed-shape check say nothing about this graph.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(module.eval(), (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT],
                          output_names=outputs, dynamic_axes={k: v for k, v in axes.items() if k in [INPUT, *outputs]})
    atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def check_graph(path: Path, module: nn.Module, example: torch.Tensor) -> float:
    """Largest |torch - ONNX Runtime| over the graph's float outputs on ``example``; raises above tolerance."""
    session = open_session(path, "cpu")
    got = session.run(None, {INPUT: example.numpy()})
    with torch.no_grad():
        want = module(example)
    want = want if isinstance(want, tuple) else (want,)
    diff = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want, strict=True) if w.is_floating_point())
    if not diff <= EXPORT_TOLERANCE:
        raise DataError(f"{path.name}: ONNX Runtime differs from torch by {diff:.2e} (> {EXPORT_TOLERANCE:g}); "
                        "the graph was not exported faithfully")
    return diff


def check_input(sampling: Sampling, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded normalised input of 2 videos × 2 clips (sizes ≠ 1 so no axis is traced as a constant)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, 2, 3, sampling.frames, sampling.size, sampling.size, generator=gen)


def export_onnx(model_paths: list[Path], out: Path, aggregate: str = "vote", members: str = "all",
                int8: bool = False, fmt: str = "onnx", opset: int = OPSET, progress: bool = True) -> ExportSummary:
    """Write one graph per selected model, one for the ensemble of the selected members (when there are at
    least two), optional int8 versions, and ``manifest.json`` last, so a manifest never names a missing file."""
    from ..progress import track

    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if aggregate not in AGGREGATIONS:
        raise ConfigError(f"--aggregate must be one of {', '.join(AGGREGATIONS)}, got {aggregate!r}")
    if aggregate == "route":  # the graph would also need the random-init embedding encoder and the centroids
        raise ConfigError(ROUTE_NOT_EXPORTED)
    require_onnx()
    t0 = time.perf_counter()
    models = resolve_models(model_paths)
    names = select_models(models, members)
    classifiers = {n: load_classifier(models.dirs[models.names.index(n)], "cpu") for n in names}
    classes, sampling = common_sampling(names, list(classifiers.values()))
    in_ensemble = [n for n in names if n in models.members]
    ensemble_module = None
    params: dict[str, Any] = {}
    if len(in_ensemble) > 1:
        aggregation, params = aggregation_module(aggregate, models, len(in_ensemble), len(classes))
        ensemble_module = EnsembleGraph([classifiers[n] for n in in_ensemble], aggregation)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous_files(out)
    example = check_input(sampling)
    graphs: list[tuple[str, nn.Module, list[str]]] = [
        (_file_name(n), MemberGraph(classifiers[n]), [PROBABILITIES]) for n in names]
    if ensemble_module is not None:
        graphs.append((ENSEMBLE_FILE, ensemble_module, [PROBABILITIES, PREDICTION, MEMBER_PROBABILITIES]))
    worst = 0.0
    for file, module, outputs in track(graphs, total=len(graphs), description="exporting", enabled=progress):
        export_graph(module, example, out / file, outputs, opset)
        worst = max(worst, check_graph(out / file, module, example))
        if int8:
            quantize_int8(out / file, out / _int8_name(file))
    manifest = Manifest(
        classes=classes, sampling=sampling, opset=opset, source=[str(p) for p in model_paths],
        models=[ExportedModel(n, _file_name(n), classifiers[n].head_kind, n in in_ensemble,
                              _int8_name(_file_name(n)) if int8 else None) for n in names],
        ensemble=ExportedEnsemble(ENSEMBLE_FILE, aggregate, in_ensemble, params,
                                  _int8_name(ENSEMBLE_FILE) if int8 else None) if ensemble_module else None,
        int8=INT8_SETTINGS if int8 else None,
        checks={"input": "seeded standard normal, 2 videos × 2 clips", "max_abs_difference": worst,
                "tolerance": EXPORT_TOLERANCE},
    )
    write_manifest(out, manifest)
    for stale in previous - set(manifest.files()):  # files of an earlier export into the same folder
        (out / stale).unlink(missing_ok=True)
    files = {f: (out / f).stat().st_size for f in manifest.files()}
    return ExportSummary(out, files, aggregate if ensemble_module else None, worst, time.perf_counter() - t0)


def _previous_files(out: Path) -> set[str]:
    try:
        return set(read_manifest(out).files())
    except (PicoJepaError, KeyError, TypeError):  # no earlier export here (or an unreadable one): nothing to clean
        return set()
