"""What the predictor has to guess: one clip of a real video with its masked tubelets shaded.

Rows are the time slices of the tubelet grid (each row shows that slice's frames); a masked tubelet is
a p×p square darkened in every frame of its slice, and since pico-JEPA masks the same spatial positions
in every slice, the shaded squares line up from row to row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..config import Config
from ..data.dataset import clip_indices, eval_starts
from ..data.decode import VideoError, decode_strided
from ..errors import ConfigError, DataError
from ..masks import MaskGenerator
from .style import new_figure, save, styled

MASK_TYPES = ("tube", "multiblock")
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


def draw_mask(cfg: Config, mask_type: str | None = None, seed: int = 0) -> np.ndarray:
    """One (H'·W',) spatial mask as pretraining would draw it, for ``mask_type`` (default: the config's)."""
    mask_type = mask_type or cfg.mask.type
    if mask_type not in MASK_TYPES:
        raise ConfigError(f"unknown mask type {mask_type!r}; choose one of: {', '.join(MASK_TYPES)}")
    generator = MaskGenerator(encoder_grid(cfg), dataclasses.replace(cfg.mask, type=mask_type))
    return generator(1, seed).spatial[0].numpy()


def plot_masks(video: Path, out: Path, cfg: Config, mask_type: str | None = None, seed: int = 0) -> Path:
    """Draw the centred clip of ``video`` with one mask (``mask_type`` or the config's) shaded; return the path."""
    video, out = Path(video), Path(out)
    mask_type = mask_type or cfg.mask.type
    spatial = draw_mask(cfg, mask_type, seed)
    clip = centre_clip(video, cfg)
    grid = encoder_grid(cfg)
    shaded, _ = shade_masked(clip, spatial, grid[1:], cfg.model.patch_size)
    return save(_figure(shaded, spatial, grid, cfg, mask_type, seed, video.name), out)


@styled
def _figure(shaded: np.ndarray, spatial: np.ndarray, grid: tuple[int, int, int], cfg: Config, mask_type: str,
            seed: int, video_name: str):
    slices, t = grid[0], cfg.model.tubelet_size
    tile = 1.9
    fig = new_figure(t * tile + 0.9, slices * tile + 1.3)
    axes = fig.subplots(slices, t, squeeze=False)
    for s in range(slices):
        for j in range(t):
            index = s * t + j
            _tile(axes[s, j], shaded[index], spatial.reshape(grid[1:]), cfg.model.patch_size)
            axes[s, j].set_title(f"clip frame {index + 1}", fontsize=9, pad=3)
        axes[s, 0].set_ylabel(f"time slice {s + 1}", fontsize=10)
    masked, total = int(spatial.sum()), spatial.size
    fig.suptitle(f"{mask_type} mask: {masked}/{total} tubelets per slice masked ({masked / total:.0%})\n"
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
