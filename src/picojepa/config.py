"""One config object with named presets, stored inside every checkpoint.

Any field can be overridden from YAML (``model: {embed_dim: 128}``) or from the command line
(``--set model.embed_dim=128``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class ModelConfig:
    img_size: int = 224
    num_frames: int = 8
    tubelet_size: int = 2  # frames per tubelet
    patch_size: int = 16  # pixels per tubelet side
    in_chans: int = 3
    embed_dim: int = 192
    depth: int = 8
    num_heads: int = 8
    mlp_ratio: float = 3.0
    pos_embed: str = "sincos"  # sincos | learned
    qkv_bias: bool = True
    # Stochastic depth of the encoder in training (the last block's rate; 0 at the first), a regulariser of long
    # supervised ViT runs. Measured (docs/scaling.md, twelfth and thirteenth rounds): 0.3 held the gain from 20k
    # to 80k clip-steps in 3 seeds and kept the few-label gain that long runs lose without it; 0.1 fell below no
    # stochastic depth and 0.5 read like 0.3. The default since 2026-12-08 (before: 0, which old runs keep).
    # It also applies when such an encoder is fine-tuned (`--finetune`), as MAE's fine-tuning uses it.
    drop_path: float = 0.3
    pred_embed_dim: int = 96
    pred_depth: int = 4
    pred_num_heads: int = 4


@dataclass
class MaskConfig:
    type: str = "multiblock"  # multiblock | tube | future (past slices → future slices, no spatial mask)
    ratio: float = 0.75  # fraction of spatial positions masked (the same in every time slice)
    block_scale: tuple[float, float] = (0.10, 0.30)  # area of one block, as a fraction of the frame
    block_aspect: tuple[float, float] = (0.75, 1.5)
    # V-JEPA draws two masks per clip, each with its own context, prediction and loss: the one above
    # (short range: several small blocks) and, when ``long_range``, a second one of a few large blocks.
    long_range: bool = False
    long_ratio: float = 0.85
    long_block_scale: tuple[float, float] = (0.5, 0.8)
    # Also predict the last k time slices in full from the earlier ones (0: off, as in V-JEPA).
    future_slices: int = 0


@dataclass
class DataConfig:
    frame_stride: int = 4  # take every k-th decoded frame
    target_fps: float | None = None  # if set, the stride is chosen per video to reach this fps
    cache_dir: str | None = None  # default: <out>/../.clip-cache or ~/.cache/picojepa
    cache_max_frames: int = 64  # strided frames kept per video (a centred segment of longer videos)
    cache_size: int | None = None  # side of the cached square frames; default img_size * 8 / 7
    use_cache: bool = True
    device_cache: str = "auto"  # auto | on | off: keep the whole clip cache in GPU memory when it fits
    num_workers: int = 1
    decoder: str = "auto"  # auto | pyav | torchcodec
    min_scale: float = 0.3  # random resized crop area range
    max_scale: float = 1.0
    hflip: bool = True
    max_bad_fraction: float = 0.2


TARGETS = ("ema", "frozen", "pixels", "motion")
# Target normalisations that use batch statistics (each position's mean over the batch): 2 clips at least.
BATCH_TARGET_NORMS = ("content", "local")


@dataclass
class TrainConfig:
    epochs: int = 10
    # > 0: the run's length in clips (steps × batch size) instead of epochs, whatever the number of videos.
    # Gains over random init depend on clips seen, not on passes (docs/scaling.md: the default's gain holds
    # from 20k to 80k clip-steps on the demo's task and falls past it), so a budget stated this way carries over
    # between data sets.
    clip_steps: int = 0
    batch_size: int = 8
    # Measured at batch 32 (docs/scaling.md): every LR tried peaks near 20k clip-steps; at 80k, 1.5e-4 (with the
    # scale-free hinge below) keeps more of its gain than 3e-4 did, though not all of it.
    lr: float = 1.5e-4
    min_lr: float = 1e-6
    warmup_fraction: float = 0.1
    weight_decay: float = 0.04
    final_weight_decay: float = 0.4
    grad_clip: float = 1.0
    ema_start: float = 0.996
    ema_end: float = 1.0
    # At most this fraction of the saved (EMA) encoder may still be its initialisation: the momentum is
    # capped so that the product of all momenta stays below it, however short the run.
    ema_max_init_fraction: float = 0.01
    # Schedules are laid out over stretch × the run's steps (V-JEPA's "ipe_scale"): the LR never reaches
    # its floor and the momentum ends below its final value.
    schedule_stretch: float = 1.25
    # Anti-collapse term on the context encoder's tokens: none | vicreg | sigreg. Measured (docs/recipes.md):
    # the plain V-JEPA objective falls below its random init here; VICReg on the local residual does not.
    regularizer: str = "vicreg"
    reg_weight: float = 1.0
    # ≥ 0: the regulariser's weight follows a cosine from reg_weight to this value over the run (laid out like
    # the LR); negative: constant. Tests whether the term's push, useful to leave collapse early, hurts late.
    reg_weight_final: float = -1.0
    # What the regulariser sees: local (tokens minus their clip's mean and their position's batch mean),
    # content (minus the position's mean only) or tokens (raw).
    reg_on: str = "local"
    sigreg_directions: int = 256
    vicreg_std: float = 0.7  # the variance hinge's target std per dimension (VICReg: 1; scale-free: a share)
    # The covariance term's weight beside the hinge's (VICReg's own ratio: 0.04). 4 since 2026-12-06: over 3 seeds
    # it reads like 1 at 20k clip-steps and higher at 40k and 80k, and lifts the linear read-out (docs/scaling.md).
    vicreg_cov_weight: float = 4.0
    # > 0: also a variance hinge (this weight, target std clip_reg_std) on each clip's mean context token (minus
    # the positions' batch means), a floor under what tells clips apart: past the peak the clips' share of the
    # token variance falls from ~0.4 towards 0.05. Measured (docs/scaling.md, fourth round): std 0.2 slows that
    # fall but not the turn, std 0.4 holds the share near 0.6 and costs most of the gain.
    clip_reg_weight: float = 0.0
    clip_reg_std: float = 0.5
    # > 0: the clip term is SIGReg (LeJEPA) on an MLP projection (this output width, 4x as wide inside) of each
    # clip's mean token instead of the hinge (clip_reg_std unused): a push against clips that look alike that the
    # probed tokens need not meet.
    clip_reg_projector: int = 0
    # > 0: an MLP on each mask's mean context token also predicts the clip's mean target token (full view),
    # standardised over the batch (Masked Siamese Networks' invariance to masking, for label efficiency), with this
    # weight beside the prediction loss. Needs a teacher (targets ema or frozen) and a batch of at least 2.
    # Measured (docs/scaling.md, eleventh round): the default's path to 40k, then 80k +3.0 on seed 1 (the default's
    # +8.9): not a remedy for the turn.
    global_weight: float = 0.0
    # > 0: the regulariser acts on an MLP projection of this width of the tokens (VICReg's expander), not on the
    # probed tokens themselves.
    reg_projector: int = 0
    # Layer-normalise the tokens (no gain) before the regulariser: the encoder's final LayerNorm gain, which has no
    # weight decay, can then neither meet the variance hinge by growing nor inflate the covariance term, and the
    # hinge's target reads as a share: std γ asks for a local share of at least about γ².
    reg_scale_free: bool = True
    # Prediction targets: layer (V-JEPA: layer-normed target tokens), clip (also minus the clip's mean
    # token, unit RMS per clip), temporal (minus each position's mean over the clip's time slices, unit RMS
    # over the batch: what stays put is free to predict), content (minus each position's mean over the batch,
    # unit RMS over the batch: a position is free to predict) or local (minus both). Measured (docs/recipes.md):
    # clip is no better with VICReg local, and collapses without a regulariser; content and local do not stop
    # the turn (docs/scaling.md).
    target_norm: str = "layer"
    # The targets are the mean of the target encoder's last this many blocks (each layer-normed), as data2vec
    # averages its teacher's top blocks; 1: the last block (V-JEPA). 4 measured no better (docs/scaling.md).
    target_layers: int = 1
    loss: str = "l1"  # l1 | smooth_l1 | l2
    # What the predictor regresses at the masked tubelets. ema: an EMA copy of the context encoder (V-JEPA);
    # frozen: a teacher that never changes, the run's own initialisation or the encoder of ``teacher_run``
    # (SALT's static teacher); pixels: the tubelets' pixels, normalised per tubelet (VideoMAE, SALT's first
    # stage); motion: the tubelets' frame-to-frame differences, scaled per clip. Without an EMA teacher there is
    # no EMA copy to save: the saved encoder is the context encoder.
    targets: str = "ema"
    teacher_run: str | None = None  # targets=frozen: a run folder whose encoder is the teacher
    # Keep the tubelet embedding (patch_embed) at its random initialisation (MoCo v3's frozen patch projection):
    # the encoder cannot learn to drop pixel detail at its input, whatever the objective finds easy to predict.
    freeze_patch_embed: bool = False
    # > 0: the predictor also regresses the masked tubelets' normalised pixels (MSE, this weight) beside its
    # targets, an anchor of the features to their input.
    pixel_weight: float = 0.0
    # > 0: after every step the context encoder's weights are pulled back towards their initialisation by
    # lr × this × (weight − initial weight) (L2-SP, a decay towards the start instead of towards 0). Measured
    # (docs/scaling.md, twelfth round): 5 held the weights' change at 80k clip-steps to the default's at 40k and
    # still lost the gain: how far the weights move is not what turns it.
    init_anchor: float = 0.0
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200  # steps; a checkpoint is also written at the end of every epoch
    compile: bool = False
    device: str = "auto"
    # CPU runs use torch's deterministic kernels: without them two runs of the same seed drift apart by float
    # rounding after a few steps (demo: General 68.9 vs 65.5 %); measured at no cost on 2 cores. CUDA keeps
    # its fast kernels.
    deterministic: bool = True


@dataclass
class Config:
    preset: str = "pico"
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Config:
        """A config as saved with a run (``to_dict``). Fields the run predates take the value it trained with."""
        cfg = cls()
        for (section, name), value in ADDED_LATER.items():
            if isinstance(d.get(section), dict) and name not in d[section]:
                setattr(getattr(cfg, section), name, value)
        apply_overrides(cfg, d)
        return cfg


# Fields added after runs were already being saved, with the value every earlier run trained with: a saved config
# without one is read with that value, not with today's default (which may differ, as drop_path's does).
ADDED_LATER: dict[tuple[str, str], Any] = {("model", "drop_path"): 0.0}


def _pico() -> Config:
    return Config(preset="pico")


def _pico_112() -> Config:
    cfg = Config(preset="pico-112")
    cfg.model.img_size = 112
    return cfg


def _tiny() -> Config:
    cfg = Config(preset="tiny")
    cfg.model = ModelConfig(
        img_size=64, num_frames=8, tubelet_size=2, patch_size=16, embed_dim=64, depth=2, num_heads=4,
        mlp_ratio=2.0, pred_embed_dim=32, pred_depth=1, pred_num_heads=2,
    )
    cfg.mask.block_scale = (0.15, 0.4)
    cfg.data.frame_stride = 2
    cfg.data.cache_max_frames = 32
    cfg.train.epochs = 2
    cfg.train.batch_size = 8
    cfg.train.lr = 1e-3
    cfg.train.log_every = 5
    return cfg


PRESETS = {"pico": _pico, "pico-112": _pico_112, "tiny": _tiny}


def preset(name: str) -> Config:
    """A fresh copy of a named preset."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]()


def load_config(preset_name: str = "pico", yaml_path: str | Path | None = None,
                overrides: list[str] | None = None) -> Config:
    """Preset, then the YAML file's fields, then ``key=value`` overrides, in that order."""
    cfg = preset(preset_name)
    if yaml_path is not None:
        path = Path(yaml_path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of config sections")
        if "preset" in data and data["preset"] != preset_name:
            cfg = preset(data["preset"])
        apply_overrides(cfg, {k: v for k, v in data.items() if k != "preset"})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        set_field(cfg, key.strip(), yaml.safe_load(raw))
    validate(cfg)
    return cfg


def apply_overrides(cfg: Config, d: dict[str, Any]) -> None:
    for section, values in d.items():
        if section == "preset":
            cfg.preset = str(values)
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        for name, value in values.items():
            set_field(cfg, f"{section}.{name}", value)


def set_field(cfg: Config, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    if len(parts) != 2:
        raise ConfigError(f"config key {dotted!r} must be section.field, e.g. model.embed_dim")
    section_name, name = parts
    sections = {f.name for f in dataclasses.fields(cfg) if f.name != "preset"}
    if section_name not in sections:
        raise ConfigError(f"unknown config section {section_name!r}; sections: {', '.join(sorted(sections))}")
    section = getattr(cfg, section_name)
    fields = {f.name: f for f in dataclasses.fields(section)}
    if name not in fields:
        raise ConfigError(
            f"unknown field {name!r} in section {section_name!r}; fields: {', '.join(sorted(fields))}"
        )
    setattr(section, name, _coerce(getattr(section, name), value, dotted))


def _coerce(current: Any, value: Any, key: str) -> Any:
    if value is None or current is None:
        return value
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if isinstance(current, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(current):
            raise ConfigError(f"{key} must be a list of {len(current)} numbers, got {value!r}")
        return tuple(float(v) for v in value)
    try:
        if isinstance(current, int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if isinstance(current, float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be a {type(current).__name__}, got {value!r}") from None
    return type(current)(value) if isinstance(current, str) else value


def validate(cfg: Config) -> None:
    m = cfg.model
    if m.img_size % m.patch_size:
        raise ConfigError(f"model.img_size ({m.img_size}) must be a multiple of model.patch_size ({m.patch_size})")
    if m.num_frames % m.tubelet_size:
        raise ConfigError(
            f"model.num_frames ({m.num_frames}) must be a multiple of model.tubelet_size ({m.tubelet_size})"
        )
    if cfg.train.init_anchor < 0:
        raise ConfigError(f"train.init_anchor must be ≥ 0, got {cfg.train.init_anchor}")
    if not 0.0 <= m.drop_path < 1.0:
        raise ConfigError(f"model.drop_path must be in [0, 1), got {m.drop_path}")
    if m.embed_dim % m.num_heads or m.pred_embed_dim % m.pred_num_heads:
        raise ConfigError("embedding widths must be divisible by their number of heads")
    if m.pos_embed not in ("sincos", "learned"):
        raise ConfigError(f"model.pos_embed must be sincos or learned, got {m.pos_embed!r}")
    if cfg.mask.type not in ("multiblock", "tube", "future"):
        raise ConfigError(f"mask.type must be multiblock, tube or future, got {cfg.mask.type!r}")
    if cfg.mask.type == "future" and cfg.mask.future_slices < 1:
        raise ConfigError("mask.type=future predicts the last time slices from the first: set mask.future_slices ≥ 1")
    if not 0.0 < cfg.mask.ratio < 1.0:
        raise ConfigError(f"mask.ratio must be in (0, 1), got {cfg.mask.ratio}")
    if cfg.mask.long_range and not 0.0 < cfg.mask.long_ratio < 1.0:
        raise ConfigError(f"mask.long_ratio must be in (0, 1), got {cfg.mask.long_ratio}")
    grid_t = m.num_frames // m.tubelet_size
    if not 0 <= cfg.mask.future_slices < grid_t:
        raise ConfigError(f"mask.future_slices must be in [0, {grid_t - 1}] for {grid_t} time slices")
    if cfg.train.regularizer not in ("none", "sigreg", "vicreg"):
        raise ConfigError(f"train.regularizer must be none, sigreg or vicreg, got {cfg.train.regularizer!r}")
    if cfg.train.targets not in TARGETS:
        raise ConfigError(f"train.targets must be one of {', '.join(TARGETS)}, got {cfg.train.targets!r}")
    if cfg.train.pixel_weight < 0:
        raise ConfigError(f"train.pixel_weight must be ≥ 0, got {cfg.train.pixel_weight}")
    if cfg.train.teacher_run and cfg.train.targets != "frozen":
        raise ConfigError("train.teacher_run is the frozen teacher's run folder: set train.targets=frozen with it")
    if cfg.train.target_norm not in ("layer", "clip", "temporal", *BATCH_TARGET_NORMS):
        raise ConfigError("train.target_norm must be layer, clip, temporal, content or local, "
                          f"got {cfg.train.target_norm!r}")
    if cfg.train.target_norm == "temporal" and cfg.model.num_frames // cfg.model.tubelet_size < 2:
        raise ConfigError("train.target_norm=temporal subtracts each position's mean over time, so it needs at "
                          f"least 2 time slices: model.num_frames={cfg.model.num_frames} with "
                          f"model.tubelet_size={cfg.model.tubelet_size} gives "
                          f"{cfg.model.num_frames // cfg.model.tubelet_size}")
    if cfg.train.reg_on not in ("local", "content", "tokens"):
        raise ConfigError(f"train.reg_on must be local, content or tokens, got {cfg.train.reg_on!r}")
    if cfg.train.reg_weight_final >= 0 and cfg.train.regularizer == "none":
        raise ConfigError("train.reg_weight_final schedules the regulariser's weight: set train.regularizer too")
    if cfg.train.vicreg_std <= 0:
        raise ConfigError(f"train.vicreg_std must be positive, got {cfg.train.vicreg_std}")
    if cfg.train.vicreg_cov_weight < 0:
        raise ConfigError(f"train.vicreg_cov_weight must be ≥ 0, got {cfg.train.vicreg_cov_weight}")
    if cfg.train.target_norm in BATCH_TARGET_NORMS and cfg.train.batch_size < 2:
        raise ConfigError(f"train.target_norm={cfg.train.target_norm} subtracts each position's mean over the "
                          "batch: it needs train.batch_size ≥ 2")
    if not 1 <= cfg.train.target_layers <= m.depth:
        raise ConfigError(f"train.target_layers must be in [1, {m.depth}] (the encoder's depth), "
                          f"got {cfg.train.target_layers}")
    if cfg.train.clip_reg_weight < 0 or cfg.train.clip_reg_std <= 0:
        raise ConfigError("train.clip_reg_weight must be ≥ 0 and train.clip_reg_std positive")
    if cfg.train.clip_reg_projector < 0:
        raise ConfigError(f"train.clip_reg_projector must be ≥ 0 (0: the hinge), got {cfg.train.clip_reg_projector}")
    if cfg.train.clip_reg_projector > 0 and cfg.train.clip_reg_weight <= 0:
        raise ConfigError("train.clip_reg_projector shapes the clip term: set train.clip_reg_weight > 0 too")
    if cfg.train.clip_reg_projector > 0 and cfg.train.reg_projector > 0:  # its MLP reads the tokens' own width
        raise ConfigError("train.clip_reg_projector and train.reg_projector cannot both be set")
    if cfg.train.clip_reg_weight > 0 and cfg.train.regularizer == "none":
        raise ConfigError("train.clip_reg_weight adds to the regulariser: set train.regularizer too")
    if cfg.train.global_weight < 0:
        raise ConfigError(f"train.global_weight must be ≥ 0, got {cfg.train.global_weight}")
    if cfg.train.global_weight > 0 and (cfg.train.targets not in ("ema", "frozen") or cfg.train.batch_size < 2):
        raise ConfigError("train.global_weight predicts the teacher's clip embedding, standardised over the batch: "
                          "it needs train.targets ema or frozen and train.batch_size ≥ 2")
    if cfg.train.reg_projector < 0:
        raise ConfigError(f"train.reg_projector must be ≥ 0 (0: no projector), got {cfg.train.reg_projector}")
    if not 0.0 < cfg.train.ema_max_init_fraction <= 1.0:
        raise ConfigError("train.ema_max_init_fraction must be in (0, 1]")
    if cfg.train.schedule_stretch < 1.0:
        raise ConfigError("train.schedule_stretch must be ≥ 1")
    if cfg.train.loss not in ("l1", "smooth_l1", "l2"):
        raise ConfigError(f"train.loss must be l1, smooth_l1 or l2, got {cfg.train.loss!r}")
    if cfg.data.decoder not in ("auto", "pyav", "torchcodec"):
        raise ConfigError(f"data.decoder must be auto, pyav or torchcodec, got {cfg.data.decoder!r}")
    if cfg.data.device_cache not in ("auto", "on", "off"):
        raise ConfigError(f"data.device_cache must be auto, on or off, got {cfg.data.device_cache!r}")
    if cfg.data.frame_stride < 1:
        raise ConfigError("data.frame_stride must be ≥ 1")
    if cfg.data.cache_max_frames < m.num_frames:
        raise ConfigError("data.cache_max_frames must be at least model.num_frames")
    if cfg.train.batch_size < 1 or cfg.train.epochs < 1:
        raise ConfigError("train.batch_size and train.epochs must be ≥ 1")
    if cfg.train.clip_steps < 0:
        raise ConfigError("train.clip_steps must be ≥ 0 (0: the run's length is train.epochs)")
    if not 0.0 <= cfg.data.max_bad_fraction <= 1.0:
        raise ConfigError("data.max_bad_fraction must be in [0, 1]")


def default_cache_side(img_size: int) -> int:
    """8/7 of the crop (the usual "resize 256, crop 224"), rounded to an even number."""
    return int(round(img_size * 8 / 7 / 2) * 2)


def cache_size(cfg: Config) -> int:
    """Side of the cached square frames: a margin above the crop so random crops have room."""
    if cfg.data.cache_size:
        return cfg.data.cache_size
    return default_cache_side(cfg.model.img_size)
