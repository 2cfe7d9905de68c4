"""The types every stage of an experiment shares: its settings, its members and its labelled data. They live
here, below both ``run`` (the orchestration) and ``members`` (one member's job), so neither imports the other
back."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..data.prepare import PreparedData
from ..errors import ConfigError
from ..probe.classifier import PROBE_GRID
from ..probe.heads import HEAD_TYPES

MODES = ("shared", "independent", "deep", "compute-matched", "domains")
# Protocols whose Partials each pretrain on the whole pool (with their own seeds) and train their heads on every
# training label: a deep ensemble, against the usual General or one given the ensemble's pretraining compute.
FULL_DATA_MODES = ("deep", "compute-matched")
# Protocols whose Partials train their heads on every training label: the above, and domain shards with routing
# (each Partial pretrains on its own domain of the pool, but the labels are not split).
ALL_LABELS_MODES = (*FULL_DATA_MODES, "domains")
# A fit on validation videos (a head's epoch, the weights, the stacker, the best single member) needs at least
# this many videos of every class; below it the fit is not made (or, with --allow-small-fits, made and marked).
MIN_VIDEOS_PER_CLASS = 2


@dataclass
class ExperimentSettings:
    data: str
    pretrain_data: str | None = None
    preset: str = "pico-112"
    config: str | None = None
    overrides: list[str] = field(default_factory=list)
    members: int = 4
    mode: str = "shared"
    heterogeneous: bool = False
    seed: int = 0
    device: str = "auto"
    head: str = "attentive"
    probe_epochs: int = 60
    probe_grid: bool = True  # heads averaged over a learning-rate × weight-decay grid (ProbeConfig.grid); else one
    probe_inits: int = 1  # heads per grid point, each from its own initialisation (ProbeConfig.inits)
    num_clips: int = 4
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    # A regular expression whose first group (or match) names each video's group — a subject, a source video —
    # so that no group is on both sides of a split (and none of a held-out group's videos is pretrained on).
    group_by: str | None = None
    allow_small_fits: bool = False  # report fits on fewer than MIN_VIDEOS_PER_CLASS videos of a class, marked
    bootstrap: int = 2000
    allow_eval_in_pretrain: bool = False
    monitor: bool = True  # learning monitor on the General's pretraining (its labelled training split only)
    low_shot: tuple[int, ...] = ()  # labelled videos per class for the low-shot table (General vs random init)

    @property
    def head_grid(self) -> tuple[tuple[float, float], ...]:
        """``ProbeConfig.grid`` of every head this experiment trains."""
        return PROBE_GRID if self.probe_grid else ()

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.members < 2:
            raise ConfigError("--members must be at least 2 (an ensemble of one is a single model)")
        if self.head not in HEAD_TYPES:
            raise ConfigError(f"--head must be one of {', '.join(HEAD_TYPES)}, got {self.head!r}")
        if self.probe_inits < 1:
            raise ConfigError(f"--probe-inits must be at least 1, got {self.probe_inits}")
        if self.bootstrap < 2000:
            raise ConfigError("--bootstrap must be at least 2000 resamples")
        if any(k < 1 for k in self.low_shot):
            raise ConfigError(f"--low-shot counts must be positive, got {list(self.low_shot)}")


@dataclass
class Member:
    name: str  # general | partial_i
    encoder: str  # run folder name under encoders/
    head: str
    seed: int


@dataclass
class LabelledData:
    prepared: PreparedData
    paths: list[str]  # usable labelled videos, in store order
    labels: np.ndarray
    class_names: list[str]
    split_idx: dict[str, np.ndarray]
    shard_idx: list[np.ndarray]
    # Validation is cross-fitted: heads choose their epoch on one half, and the second-level fits (weights,
    # stacker, best single member) use the other, so no choice is fitted on outputs already tuned to it.
    val_select: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
    val_fit: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=int))
