"""What the predictor has to guess: one clip of a real video with its masked tubelets shaded.

Rows are the time slices of the tubelet grid (each row shows that slice's frames); a masked tubelet is
a p×p square darkened in every frame of its slice. ``tube`` and ``multiblock`` mask the same spatial
positions in every slice, so the shaded squares line up from row to row; ``future`` (and
``mask.future_slices`` > 0 with the others) hides the last slices whole.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..config import Config, MaskConfig
from ..data.dataset import clip_indices, eval_starts
from ..data.decode import VideoError, decode_strided
from ..errors import ConfigError, DataError
from ..masks import MaskGenerator
from .style import new_figure, save, styled

MASK_TYPES = ("tube", "multiblock", "future")
SHADE_RGB = np.array([18, 24, 64], dtype=np.float32)  # dark navy: masked areas read as "hidden", not as content
SHADE_ALPHA = 0.65
OUTLINE = "#F0E442"  # Okabe–Ito yellow: visible on dark and bright videos alike


def encoder_grid(cfg: Config) -> tuple[int, int, int]:
    """(T', H', W') tubelet grid of the encoder described by ``cfg``."""
    m = cfg.model
    return m.num_frames // m.tubelet_size, m.img_size // m.patch_size, m.img_size // m.patch_size


def tubelet_pixel_mask(spatial: np.ndarray, grid_hw: tuple[int, int], patch: int) -> np.ndarray:
    """(H'·W',) spatial mask, True = masked → (H'·p, W'·p) pixel mask."""
    gh, gw = grid_hw
    return np.asarray(spatial, dtype=bool).reshape(gh, gw).repeat(patch, axis=0).repeat(patch, axis=1)


def shade_masked(frames: np.ndarray, spatial: np.ndarray, grid_hw: tuple[int, int],
                 patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Blend the masked tubelets of uint8 frames (T, S, S, 3) towards a dark shade.

    Returns the shaded frames and the (S, S) pixel mask that was shaded; pixels outside it are unchanged.
    """
    pixels = tubelet_pixel_mask(spatial, grid_hw, patch)
    if frames.shape[1:3] != pixels.shape:
        raise ValueError(f"frames of {frames.shape[1:3]} do not match a {grid_hw} grid of {patch}-px tubelets")
    shaded = frames.copy()
    # Grey then tint: hidden content stays faintly visible but never looks like context, even in dark videos.
    grey = frames[:, pixels].astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    blended = (1 - SHADE_ALPHA) * grey[..., None] + SHADE_ALPHA * SHADE_RGB
    shaded[:, pixels] = np.round(blended).astype(np.uint8)
    return shaded, pixels


def centre_clip(video: Path, cfg: Config) -> np.ndarray:
    """The centred evaluation clip of ``video`` as uint8 (num_frames, img_size, img_size, 3)."""
    d, m = cfg.data, cfg.model
    try:
        frames = decode_strided(video, m.img_size, d.frame_stride, d.target_fps, d.cache_max_frames)
    except VideoError as e:
        raise DataError(f"cannot show masks on {video}: {e.reason}") from e
    start = eval_starts(len(frames), m.num_frames, 1)[0]
    return frames[clip_indices(len(frames), m.num_frames, start)]


def mask_config(cfg: Config, mask_type: str | None = None, future_slices: int | None = None) -> MaskConfig:
    """The config's mask with another type or future split; ``future`` alone defaults to the last slice."""
    mask_type = mask_type or cfg.mask.type
    if mask_type not in MASK_TYPES:
        raise ConfigError(f"unknown mask type {mask_type!r}; choose one of: {', '.join(MASK_TYPES)}")
    if future_slices is None:
        future_slices = max(cfg.mask.future_slices, 1) if mask_type == "future" else cfg.mask.future_slices
    slices = encoder_grid(cfg)[0]
    if not 0 <= future_slices < slices or (mask_type == "future" and future_slices < 1):
        raise ConfigError(f"future slices must be in [{int(mask_type == 'future')}, {slices - 1}] for {slices} "
                          f"time slices, not {future_slices}")
    return dataclasses.replace(cfg.mask, type=mask_type, future_slices=future_slices)


def draw_mask(cfg: Config, mask_type: str | None = None, seed: int = 0) -> np.ndarray:
    """One (H'·W',) spatial mask as pretraining would draw it, for ``mask_type`` (default: the config's)."""
    generator = MaskGenerator(encoder_grid(cfg), mask_config(cfg, mask_type))
    return generator(1, seed).spatial[0].numpy()


def draw_slice_masks(cfg: Config, mask_type: str | None = None, seed: int = 0,
                     future_slices: int | None = None) -> np.ndarray:
    """(T', H'·W') masks, True = predicted, read from the target indices pretraining would draw."""
    grid = encoder_grid(cfg)
    batch = MaskGenerator(grid, mask_config(cfg, mask_type, future_slices))(1, seed)
    masked = np.zeros(grid[0] * grid[1] * grid[2], dtype=bool)
    masked[batch.target[0].numpy()] = True
    return masked.reshape(grid[0], grid[1] * grid[2])


def plot_masks(video: Path, out: Path, cfg: Config, mask_type: str | None = None, seed: int = 0,
               future_slices: int | None = None) -> Path:
    """Draw the centred clip of ``video`` with one mask (``mask_type`` or the config's) shaded; return the path."""
    video, out = Path(video), Path(out)
    mask = mask_config(cfg, mask_type, future_slices)
    masks = draw_slice_masks(cfg, mask.type, seed, mask.future_slices)
    clip = centre_clip(video, cfg)
    grid, t = encoder_grid(cfg), cfg.model.tubelet_size
    shaded = np.concatenate([shade_masked(clip[s * t:(s + 1) * t], masks[s], grid[1:], cfg.model.patch_size)[0]
                             for s in range(grid[0])])
    return save(_figure(shaded, masks, grid, cfg, mask, seed, video.name), out)


@styled
def _figure(shaded: np.ndarray, masks: np.ndarray, grid: tuple[int, int, int], cfg: Config, mask: MaskConfig,
            seed: int, video_name: str):
    slices, t = grid[0], cfg.model.tubelet_size
    tile = 1.9
    fig = new_figure(t * tile + 0.9, slices * tile + 1.3)
    axes = fig.subplots(slices, t, squeeze=False)
    for s in range(slices):
        for j in range(t):
            index = s * t + j
            _tile(axes[s, j], shaded[index], masks[s].reshape(grid[1:]), cfg.model.patch_size)
            axes[s, j].set_title(f"clip frame {index + 1}", fontsize=9, pad=3)
        axes[s, 0].set_ylabel(f"time slice {s + 1}", fontsize=10)
    past = masks[:grid[0] - mask.future_slices]
    what = (f"{int(past[0].sum())}/{past.shape[1]} tubelets per slice masked" if mask.type != "future"
            else "past slices all context")
    what += (f"\nlast {mask.future_slices} slice(s) predicted whole · {masks.mean():.0%} of tubelets masked"
             if mask.future_slices else f" ({masks.mean():.0%})")
    fig.suptitle(f"{mask.type} mask: {what}\n"
                 f"{video_name} · {cfg.model.img_size} px · tubelets {t}×{cfg.model.patch_size}×"
                 f"{cfg.model.patch_size} · seed {seed}", fontsize=11)
    legend = [Patch(facecolor=SHADE_RGB / 255, alpha=SHADE_ALPHA, label="masked (predicted)"),
              Patch(facecolor="white", edgecolor="#888888", label="context (seen by the encoder)"),
              Line2D([], [], color=OUTLINE, linewidth=1.5, label="border between the two")]
    fig.legend(handles=legend, loc="outside lower center", ncol=1 if t < 3 else 3, frameon=False)
    return fig


def _tile(ax, frame: np.ndarray, mask_hw: np.ndarray, patch: int) -> None:
    ax.imshow(frame, interpolation="nearest")
    edges = np.arange(patch, frame.shape[0], patch) - 0.5
    for e in edges:  # tubelet boundaries, faint so the picture stays readable
        ax.axhline(e, color="white", alpha=0.25, linewidth=0.4)
        ax.axvline(e, color="white", alpha=0.25, linewidth=0.4)
    ax.add_collection(LineCollection(mask_outline(mask_hw, patch), colors=OUTLINE, linewidths=1.2))
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#888888")


def mask_outline(mask_hw: np.ndarray, patch: int) -> list[list[tuple[float, float]]]:
    """Pixel-space segments on the border between masked and visible tubelets (image edges excluded)."""
    gh, gw = mask_hw.shape
    segments = []
    for i in range(1, gh):  # horizontal edges between rows i-1 and i
        y = i * patch - 0.5
        segments += [[(j * patch - 0.5, y), ((j + 1) * patch - 0.5, y)]
                     for j in np.flatnonzero(mask_hw[i - 1] != mask_hw[i])]
    for j in range(1, gw):  # vertical edges between columns j-1 and j
        x = j * patch - 0.5
        segments += [[(x, i * patch - 0.5), (x, (i + 1) * patch - 0.5)]
                     for i in np.flatnonzero(mask_hw[:, j - 1] != mask_hw[:, j])]
    return segments
