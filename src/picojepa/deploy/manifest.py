"""``manifest.json`` of an export folder: everything a consumer needs to prepare inputs and read outputs
without picojepa — classes, clip geometry, sampling, normalisation, files, input and output names."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, cache_size
from ..data.transforms import MEAN, STD
from ..ensemble.aggregation import HARD_VOTE_TIE_RULE
from ..errors import CheckpointError
from ..utils import write_json

MANIFEST_FILE = "manifest.json"
FORMAT = "picojepa-onnx"
FORMAT_VERSION = 1
INPUT = "clips"
PROBABILITIES, PREDICTION, MEMBER_PROBABILITIES = "probabilities", "prediction", "member_probabilities"

INPUT_DOC = ("float32 (videos, clips_per_video, 3, frames, size, size): normalised RGB clips; both leading "
             "dimensions are dynamic (a stream window is one video; any number of clips is averaged)")
OUTPUT_DOCS = {
    PROBABILITIES: "float32 (videos, classes): class probabilities, the mean of the clips' softmax; for the "
                   "ensemble the aggregated probabilities (for a hard vote: the share of members voting each class)",
    PREDICTION: "int64 (videos,): the ensemble's class index (for a hard vote, after the tie rule)",
    MEMBER_PROBABILITIES: "float32 (members, videos, classes): each ensemble member's probabilities",
}


@dataclass(frozen=True)
class Sampling:
    """How a video becomes the graph's input; equal for every model of one export."""

    frames: int  # frames per clip
    size: int  # side of the square crop the model sees
    resize_side: int  # shorter side of every kept frame before the centred square is cut
    frame_stride: int  # keep every k-th decoded frame ...
    target_fps: float | None  # ... or, when set, every round(fps / target_fps)-th
    max_frames: int  # strided frames kept per video: the centred segment of longer videos
    clips_per_video: int
    decoder: str  # what the exporting side decoded with (auto: torchcodec when installed, else PyAV)
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD

    @classmethod
    def of(cls, cfg: Config, clips_per_video: int) -> Sampling:
        d = cfg.data
        return cls(cfg.model.num_frames, cfg.model.img_size, cache_size(cfg), d.frame_stride, d.target_fps,
                   d.cache_max_frames, clips_per_video, d.decoder)

    def steps(self) -> list[str]:
        stride = (f"every round(fps / {self.target_fps:g})-th frame" if self.target_fps
                  else f"every {self.frame_stride}-th frame")
        return [
            f"decode the video and keep {stride}; of a longer video keep the {self.max_frames} kept frames in its "
            "middle",
            f"resize each kept frame so that its shorter side is {self.resize_side} px (area interpolation) and cut "
            f"the centred {self.resize_side}×{self.resize_side} square, then its centred {self.size}×{self.size} "
            "square",
            f"cut {self.clips_per_video} clips of {self.frames} consecutive kept frames, starting at "
            f"round(linspace(0, F - {self.frames}, {self.clips_per_video})) for F kept frames (one clip: at "
            f"(F - {self.frames}) // 2); a video shorter than a clip repeats its last frame",
            "scale pixels to [0, 1], subtract mean and divide by std per RGB channel, and lay the clips out as "
            "(videos, clips_per_video, 3, frames, size, size) float32",
        ]


@dataclass
class ExportedModel:
    name: str
    file: str  # relative to the export folder
    head: str
    ensemble_member: bool  # whether the ensemble graph contains it
    int8_file: str | None = None


@dataclass
class ExportedEnsemble:
    file: str
    aggregation: str
    members: list[str]
    params: dict[str, Any] = field(default_factory=dict)  # fitted weights / stacker, as baked into the graph
    int8_file: str | None = None


@dataclass
class Manifest:
    classes: list[str]
    sampling: Sampling
    models: list[ExportedModel]
    ensemble: ExportedEnsemble | None
    opset: int
    int8: dict[str, Any] | None = None  # how the int8 files were quantised
    checks: dict[str, Any] = field(default_factory=dict)  # torch vs ONNX Runtime at export time
    source: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "format_version": FORMAT_VERSION, "opset": self.opset, "classes": self.classes,
            "input": {"name": INPUT, "description": INPUT_DOC},
            "outputs": {"member graphs": {PROBABILITIES: OUTPUT_DOCS[PROBABILITIES]},
                        "ensemble graph": OUTPUT_DOCS},
            "sampling": asdict(self.sampling), "preparation": self.sampling.steps(),
            "models": [asdict(m) for m in self.models],
            "ensemble": asdict(self.ensemble) if self.ensemble else None,
            "tie_rule": HARD_VOTE_TIE_RULE if self.ensemble and self.ensemble.aggregation == "vote" else None,
            "int8": self.int8, "checks": self.checks, "source": self.source,
        }

    def files(self) -> list[str]:
        entries: list[ExportedModel | ExportedEnsemble] = [*self.models, *([self.ensemble] if self.ensemble else [])]
        return [f for e in entries for f in (e.file, e.int8_file) if f]


def write_manifest(folder: Path, manifest: Manifest) -> Path:
    write_json(folder / MANIFEST_FILE, manifest.to_dict())
    return folder / MANIFEST_FILE


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of an export folder, with a clear error for anything else."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not an ONNX export folder (no {MANIFEST_FILE}); write one with "
                              "picojepa export --models EXPERIMENT --out DIR")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} is not a {FORMAT} manifest of version {FORMAT_VERSION}")
    s = raw["sampling"]
    sampling = Sampling(**{**s, "mean": tuple(s["mean"]), "std": tuple(s["std"])})
    models = [ExportedModel(**m) for m in raw["models"]]
    ensemble = ExportedEnsemble(**raw["ensemble"]) if raw.get("ensemble") else None
    return Manifest(raw["classes"], sampling, models, ensemble, raw["opset"], raw.get("int8"), raw.get("checks", {}),
                    raw.get("source", []))
