"""Synthetic action benchmark: short videos whose class is defined by motion, never by appearance.

Every video shows one two-tone "actor" shape performing the class motion, on a random background with
random distractors, occluders, camera jitter, sensor noise and brightness drift. Appearance (shape,
colours, size, position, orientation) is drawn from the same distribution for every class, so a single
frame carries (almost) no information about the label; only the ordered sequence of frames does.

Each video is reproducible from ``numpy.random.default_rng([seed, class_index, video_index])`` where
``class_index`` is the position in :data:`CLASS_NAMES`, so a video does not change when other classes
are added or removed, and parallel generation gives byte-identical files.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..utils import atomic_write, write_json, write_text

GENERATOR_VERSION = "picojepa-synth-2"

CLASS_NAMES: tuple[str, ...] = (
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",  # clockwise as seen on screen
    "rotate_ccw",
    "approach",  # grows steadily
    "recede",  # shrinks steadily
    "pulse_then_move",  # grows and shrinks back in place, then moves
    "move_then_pulse",  # the same two events in the opposite order
    "oscillate",  # back and forth along a random axis
    "hold_still",
)

DIFFICULTIES = ("easy", "medium", "hard")
BACKGROUNDS = ("static", "changing")

_META_NAME = "meta.json"
_CLASSES_NAME = "classes.txt"


@dataclass(frozen=True)
class _Difficulty:
    distractors: tuple[int, int]  # inclusive range of distractor count
    noise_std: float  # sensor noise, in 0..255 units
    jitter_px: float  # camera shake std at 96 px (scaled with size)
    brightness_drift: float  # max relative gain change over the clip
    occluder_prob: float
    path_frac: tuple[float, float]  # travelled distance as a fraction of the frame size
    rotation_deg: tuple[float, float]  # total rotation over the clip
    scale_factor: tuple[float, float]  # size ratio end/start for approach and recede
    texture_contrast: float


_DIFFICULTY_SETTINGS: dict[str, _Difficulty] = {
    "easy": _Difficulty((0, 1), 2.0, 0.0, 0.05, 0.0, (0.35, 0.6), (200.0, 300.0), (2.0, 2.6), 0.3),
    "medium": _Difficulty((1, 2), 4.0, 0.7, 0.12, 0.4, (0.25, 0.55), (150.0, 300.0), (1.7, 2.5), 0.5),
    "hard": _Difficulty((2, 4), 8.0, 1.4, 0.2, 0.8, (0.18, 0.5), (100.0, 300.0), (1.5, 2.3), 0.8),
}

# Actor radius range as a fraction of the frame size; every class samples sizes inside it.
_RADIUS_RANGE = (0.06, 0.2)
_SHAPES = ("circle", "square", "diamond", "triangle", "cross", "star")
# (axis, sign) of each translation class: axis 0 is x (right), axis 1 is y (down).
_DIRECTIONS = {"move_left": (0, -1), "move_right": (0, 1), "move_up": (1, -1), "move_down": (1, 1)}


@dataclass
class _Track:
    """Per-frame pose of a shape in world pixel coordinates (arrays of length T)."""

    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray
    angle: np.ndarray


# ---------------------------------------------------------------------------------------------------
# Motion: one function per family of classes. All return the actor's track.
#
# Single frames must not reveal the class, so every class draws sizes and positions from (nearly) the
# same per-frame distribution: statics sit where a mover would be at a random moment, sizes follow the
# distribution of a random moment of an approach, and the margin to the border does not depend on size.
# ---------------------------------------------------------------------------------------------------


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _radius_bounds(size: int) -> tuple[float, float]:
    return _RADIUS_RANGE[0] * size, _RADIUS_RANGE[1] * size


def _margin(size: int) -> float:
    """Distance from the border kept by the actor's centre, the same for every size and class."""
    return 0.8 * _radius_bounds(size)[1]


def _scaling_radii(rng: np.random.Generator, size: int, cfg: _Difficulty) -> tuple[float, float]:
    """Start and end radius of a growing actor; both stay inside the shared radius range."""
    lo, hi = _radius_bounds(size)
    factor = rng.uniform(*cfg.scale_factor)
    start = _log_uniform(rng, lo, hi / factor)
    return start, start * factor


def _static_radius(rng: np.random.Generator, size: int, cfg: _Difficulty) -> float:
    # A random moment of a random approach: non-scaling classes then share the approach size marginal.
    start, end = _scaling_radii(rng, size, cfg)
    return float(start * (end / start) ** rng.uniform())


def _path_length(rng: np.random.Generator, size: int, cfg: _Difficulty) -> float:
    return min(rng.uniform(*cfg.path_frac) * size, 0.999 * (size - 2 * _margin(size)))


def _axis_start(rng: np.random.Generator, size: int, delta: float) -> float:
    """Start coordinate of a 1-D move by ``delta`` that stays inside the margins."""
    margin = _margin(size)
    return rng.uniform(margin - min(delta, 0.0), size - margin - max(delta, 0.0))


def _axis_point(rng: np.random.Generator, size: int, cfg: _Difficulty) -> float:
    """A random moment of a random 1-D move: the per-frame coordinate distribution of a mover."""
    length = _path_length(rng, size, cfg)
    return _axis_start(rng, size, length) + length * rng.uniform()


def _static_position(rng: np.random.Generator, size: int, cfg: _Difficulty) -> np.ndarray:
    return np.array([_axis_point(rng, size, cfg), _axis_point(rng, size, cfg)])


def _place_segment(rng: np.random.Generator, size: int, dx: float, dy: float) -> tuple[np.ndarray, np.ndarray]:
    """Random start and end point of a straight path (dx, dy) that stays inside the margins."""
    span = size - 2 * _margin(size)
    shrink = min(1.0, 0.999 * span / max(abs(dx), 1e-6), 0.999 * span / max(abs(dy), 1e-6))
    start = np.array([_axis_start(rng, size, dx * shrink), _axis_start(rng, size, dy * shrink)])
    return start, start + np.array([dx, dy]) * shrink


def _constant(value: float, frames: int) -> np.ndarray:
    return np.full(frames, value, dtype=np.float64)


def _random_angle(rng: np.random.Generator, frames: int) -> np.ndarray:
    return _constant(rng.uniform(0, 2 * np.pi), frames)


def _translate_track(rng: np.random.Generator, class_name: str, size: int, frames: int, cfg: _Difficulty) -> _Track:
    axis, sign = _DIRECTIONS[class_name]
    radius = _static_radius(rng, size, cfg)
    t = np.linspace(0.0, 1.0, frames)
    length = sign * _path_length(rng, size, cfg)
    along = _axis_start(rng, size, length) + length * t
    # The cross coordinate is placed like a mover's along coordinate, so horizontal and vertical movers
    # have the same position distribution; a slight slant keeps paths from being perfectly axis-aligned.
    slant = abs(length) * rng.uniform(-0.25, 0.25)
    margin = _margin(size)
    across = np.clip(_axis_point(rng, size, cfg) + slant * (t - 0.5), margin, size - margin)
    x, y = (along, across) if axis == 0 else (across, along)
    return _Track(x, y, _constant(radius, frames), _random_angle(rng, frames))


def _rotate_track(rng: np.random.Generator, clockwise: bool, size: int, frames: int, cfg: _Difficulty) -> _Track:
    radius = _static_radius(rng, size, cfg)
    pos = _static_position(rng, size, cfg)
    total = np.deg2rad(rng.uniform(*cfg.rotation_deg)) * (1.0 if clockwise else -1.0)
    # Image y points down, so an increasing angle turns clockwise on screen.
    angle = rng.uniform(0, 2 * np.pi) + total * np.linspace(0.0, 1.0, frames)
    return _Track(_constant(pos[0], frames), _constant(pos[1], frames), _constant(radius, frames), angle)


def _scale_track(rng: np.random.Generator, growing: bool, size: int, frames: int, cfg: _Difficulty) -> _Track:
    small, large = _scaling_radii(rng, size, cfg)
    pos = _static_position(rng, size, cfg)
    t = np.linspace(0.0, 1.0, frames)
    if not growing:
        t = 1.0 - t
    radius = small * (large / small) ** t  # geometric growth looks like constant-speed approach
    return _Track(_constant(pos[0], frames), _constant(pos[1], frames), radius, _random_angle(rng, frames))


def _pulse_move_track(rng: np.random.Generator, pulse_first: bool, size: int, frames: int, cfg: _Difficulty) -> _Track:
    """Two events in sequence: a grow-and-shrink pulse in place, and a move in a random direction.

    The pulse ends at its starting size and the direction is uniform, so both orders produce the same
    per-frame distribution of sizes and positions: only the order of events tells them apart.
    """
    peak = rng.uniform(1.5, 1.9)
    base = min(_static_radius(rng, size, cfg) / np.sqrt(peak), _radius_bounds(size)[1] / peak)
    heading = rng.uniform(0, 2 * np.pi)
    length = _path_length(rng, size, cfg)
    start, end = _place_segment(rng, size, length * np.cos(heading), length * np.sin(heading))

    split = min(max(round(frames * rng.uniform(0.42, 0.58)), 1), frames - 1)
    pulse_len, move_len = (split, frames - split) if pulse_first else (frames - split, split)
    pulse = base * peak ** np.sin(np.pi * np.linspace(0.0, 1.0, pulse_len))
    moving = start + (end - start) * np.linspace(0.0, 1.0, move_len)[:, None]

    if pulse_first:
        xy = np.concatenate([np.repeat(start[None, :], pulse_len, 0), moving])
        radius = np.concatenate([pulse, np.full(move_len, base)])
    else:
        xy = np.concatenate([moving, np.repeat(end[None, :], pulse_len, 0)])
        radius = np.concatenate([np.full(move_len, base), pulse])
    return _Track(xy[:, 0], xy[:, 1], radius, _random_angle(rng, frames))


def _oscillate_track(rng: np.random.Generator, size: int, frames: int, cfg: _Difficulty) -> _Track:
    radius = _static_radius(rng, size, cfg)
    axis = rng.uniform(0, np.pi)
    length = _path_length(rng, size, cfg)
    start, end = _place_segment(rng, size, length * np.cos(axis), length * np.sin(axis))
    centre, half = (start + end) / 2, (end - start) / 2
    cycles = rng.uniform(1.5, 3.0)
    wave = np.sin(2 * np.pi * cycles * np.linspace(0.0, 1.0, frames) + rng.uniform(0, 2 * np.pi))
    x, y = centre[0] + half[0] * wave, centre[1] + half[1] * wave
    return _Track(x, y, _constant(radius, frames), _random_angle(rng, frames))


def _still_track(rng: np.random.Generator, size: int, frames: int, cfg: _Difficulty) -> _Track:
    radius = _static_radius(rng, size, cfg)
    pos = _static_position(rng, size, cfg)
    return _Track(
        _constant(pos[0], frames), _constant(pos[1], frames), _constant(radius, frames), _random_angle(rng, frames)
    )


def _actor_track(class_name: str, rng: np.random.Generator, size: int, frames: int, cfg: _Difficulty) -> _Track:
    if class_name in _DIRECTIONS:
        return _translate_track(rng, class_name, size, frames, cfg)
    if class_name in ("rotate_cw", "rotate_ccw"):
        return _rotate_track(rng, class_name == "rotate_cw", size, frames, cfg)
    if class_name in ("approach", "recede"):
        return _scale_track(rng, class_name == "approach", size, frames, cfg)
    if class_name in ("pulse_then_move", "move_then_pulse"):
        return _pulse_move_track(rng, class_name == "pulse_then_move", size, frames, cfg)
    if class_name == "oscillate":
        return _oscillate_track(rng, size, frames, cfg)
    if class_name == "hold_still":
        return _still_track(rng, size, frames, cfg)
    raise ValueError(f"unknown class {class_name!r}; valid classes: {', '.join(CLASS_NAMES)}")


def _distractor_track(rng: np.random.Generator, size: int, frames: int) -> _Track:
    """A small shape wandering with a smoothed random walk: its motion says nothing about the class."""
    radius = rng.uniform(0.035, 0.07) * size
    pos = rng.uniform(radius, size - radius, 2)
    speed = rng.uniform(0.3, 1.2) * size / 96
    heading = rng.uniform(0, 2 * np.pi)
    vel = speed * np.array([np.cos(heading), np.sin(heading)])
    xy = np.empty((frames, 2))
    for t in range(frames):
        xy[t] = pos
        vel = 0.85 * vel + rng.normal(0.0, 0.35 * size / 96, 2)
        pos = pos + vel
        for axis in range(2):  # bounce off the frame border
            if not radius <= pos[axis] <= size - radius:
                vel[axis] = -vel[axis]
                pos[axis] = np.clip(pos[axis], radius, size - radius)
    spin = rng.uniform(-0.1, 0.1)
    angle = rng.uniform(0, 2 * np.pi) + spin * np.arange(frames)
    return _Track(xy[:, 0], xy[:, 1], _constant(radius, frames), angle)


# ---------------------------------------------------------------------------------------------------
# Rendering: everything vectorised over (T, H, W).
# ---------------------------------------------------------------------------------------------------

# Every shape fits inside this many radii of its centre (triangle and star tips reach ~1.2).
_SHAPE_EXTENT = 1.3


@dataclass
class _View:
    """The camera: world coordinates of pixel centres for every frame, shifted by the camera shake."""

    size: int
    camera: np.ndarray  # (T, 2) world offset of the view
    world_x: np.ndarray  # (T, 1, W)
    world_y: np.ndarray  # (T, H, 1)

    @classmethod
    def create(cls, size: int, camera: np.ndarray) -> _View:
        pix = np.arange(size, dtype=np.float32) + 0.5
        cam = camera.astype(np.float32)
        world_x = pix[None, None, :] + cam[:, 0, None, None]
        world_y = pix[None, :, None] + cam[:, 1, None, None]
        return cls(size, camera, world_x, world_y)

    def box(self, track: _Track) -> tuple[slice, slice] | None:
        """Pixel rows/columns that the shape can touch in any frame (None when always off screen)."""
        reach = _SHAPE_EXTENT * track.radius + 1.0
        bounds = []
        for centre, offset in ((track.y, self.camera[:, 1]), (track.x, self.camera[:, 0])):
            lo = int(np.floor(np.min(centre - offset - reach)))
            hi = int(np.ceil(np.max(centre - offset + reach)))
            lo, hi = max(lo, 0), min(hi, self.size)
            if lo >= hi:
                return None
            bounds.append(slice(lo, hi))
        return bounds[0], bounds[1]


def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance to the shape outline in units of the shape radius (< 0 inside)."""
    au, av_ = np.abs(u), np.abs(v)
    if shape == "circle":
        return np.sqrt(u * u + v * v) - 1.0
    if shape == "square":
        return np.maximum(au, av_) - 0.82
    if shape == "diamond":
        return (au + av_ - 1.15) * np.float32(0.7071)
    if shape == "triangle":
        # Pointing up (-v); edges are the three half-planes at 120 degrees.
        edge_up = v * np.float32(-1.0)
        edge_left = np.float32(0.866) * u + np.float32(0.5) * v
        edge_right = np.float32(-0.866) * u + np.float32(0.5) * v
        return np.maximum(np.maximum(edge_up, edge_left), edge_right) - 0.6
    if shape == "cross":
        bar_h = np.maximum(au - 1.0, av_ - 0.38)
        bar_v = np.maximum(au - 0.38, av_ - 1.0)
        return np.minimum(bar_h, bar_v)
    if shape == "star":
        r = np.sqrt(u * u + v * v)
        outline = 0.72 + 0.38 * np.cos(5 * np.arctan2(v, u))
        return (r - outline) * np.float32(0.6)
    raise ValueError(f"unknown shape {shape!r}")


def _composite(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    """In-place alpha blend; ``colour`` is (3,) or broadcastable to ``canvas``."""
    canvas += alpha[..., None] * (colour - canvas)


def _draw_shape(
    canvas: np.ndarray,
    view: _View,
    track: _Track,
    shape: str,
    colours: tuple[np.ndarray, np.ndarray | None],
    split: float = 0.0,
) -> None:
    box = view.box(track)
    if box is None:
        return
    rows, cols = box

    def per_frame(a: np.ndarray) -> np.ndarray:
        return a.astype(np.float32)[:, None, None]

    dx = view.world_x[:, :, cols] - per_frame(track.x)
    dy = view.world_y[:, rows, :] - per_frame(track.y)
    cos, sin, radius = per_frame(np.cos(track.angle)), per_frame(np.sin(track.angle)), per_frame(track.radius)
    u = (cos * dx + sin * dy) / radius  # shape-local coordinates, in radii
    v = (cos * dy - sin * dx) / radius
    # Signed distance in pixels -> anti-aliased coverage.
    alpha = np.clip(0.5 - _shape_distance(shape, u, v) * radius, 0.0, 1.0)
    region = canvas[:, rows, cols]
    main, second = colours
    if second is None:
        _composite(region, alpha, main)
        return
    # Two-tone actor: one side painted in a second colour so that rotation of symmetric shapes is visible.
    side = np.clip(0.5 + (u - split) * radius, 0.0, 1.0)[..., None]
    _composite(region, alpha, main + side * (second - main))


def _random_colour(rng: np.random.Generator, avoid: Sequence[np.ndarray] = (), min_dist: float = 90.0) -> np.ndarray:
    """A random RGB colour at least ``min_dist`` away from ``avoid`` (best effort, so always terminates)."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(30):
        if all(np.linalg.norm(colour - other) >= min_dist for other in avoid):
            break
        colour = rng.uniform(0, 255, 3)
    return colour.astype(np.float32)


def _shifted_grating(view: _View, heading: float, freq: float, phase: float) -> np.ndarray:
    """sin(freq * (world position along heading) + phase) for every frame, as (T, H, W).

    The camera shift only changes the phase per frame, so sin/cos are evaluated once on the pixel grid.
    """
    dir_x, dir_y = np.float32(np.cos(heading)), np.float32(np.sin(heading))
    pix = np.arange(view.size, dtype=np.float32) + 0.5
    base = freq * (dir_x * pix[None, :] + dir_y * pix[:, None])
    shift = (freq * (view.camera @ np.array([dir_x, dir_y])) + phase).astype(np.float32)[:, None, None]
    return np.sin(base)[None] * np.cos(shift) + np.cos(base)[None] * np.sin(shift)


def _background_mix(rng: np.random.Generator, view: _View, cfg: _Difficulty) -> np.ndarray:
    """(T, H, W) or broadcastable mixing weights between the background's two colours."""
    size = view.size
    if rng.uniform() < 0.5:  # linear gradient
        heading = rng.uniform(0, 2 * np.pi)
        centre = size / 2
        ramp = (np.cos(heading) * (view.world_x - centre) + np.sin(heading) * (view.world_y - centre)) / size
        return np.clip(0.5 + 0.7 * ramp, 0.0, 1.0).astype(np.float32)
    mix = np.float32(0.0)  # texture: a few random gratings
    for _ in range(3):
        heading = rng.uniform(0, 2 * np.pi)
        freq = rng.uniform(1.0, 6.0) * 2 * np.pi / size
        mix = mix + _shifted_grating(view, heading, freq, rng.uniform(0, 2 * np.pi))
    return 0.5 + mix * np.float32(cfg.texture_contrast / 6)


def _background(rng: np.random.Generator, view: _View, cfg: _Difficulty, frames: int,
                changing: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The scene background seen through the (shaking) camera: (T, H, W, 3) and its mean colour.

    ``changing``: the pattern is drawn anew for every frame (same two colours), so no part of it can be
    predicted from another time step (Sobal et al. 2022: JEPAs lock onto a static background). Its draws come
    from a child generator, so the rest of the clip (actor, distractors, camera, noise) is the static clip's."""
    low, high = _random_colour(rng), _random_colour(rng)
    mix = _background_mix(rng, view, cfg)  # drawn in both cases, so that the draws after it are the same
    if changing:
        frame_rng = rng.spawn(1)[0]
        shape = (frames, view.size, view.size)
        mix = np.stack([np.broadcast_to(_background_mix(frame_rng, view, cfg), shape)[t] for t in range(frames)])
    image = low + mix[..., None] * (high - low)
    return image.astype(np.float32), (low + high) / 2


def _camera_offsets(rng: np.random.Generator, frames: int, size: int, cfg: _Difficulty) -> np.ndarray:
    """(T, 2) camera shake: a slow random walk plus per-frame jitter."""
    std = cfg.jitter_px * size / 96
    if std == 0:
        return np.zeros((frames, 2))
    drift = np.cumsum(rng.normal(0.0, std * 0.3, (frames, 2)), axis=0)
    return drift + rng.normal(0.0, std, (frames, 2))


def _draw_occluder(canvas: np.ndarray, rng: np.random.Generator, view: _View) -> None:
    """A bar that sweeps across the frame during a random time window, in front of everything."""
    size, frames = view.size, canvas.shape[0]
    width = rng.uniform(0.08, 0.16) * size
    duration = rng.uniform(0.3, 0.8)
    start = rng.uniform(0, 1 - duration)
    progress = (np.linspace(0, 1, frames) - start) / duration
    position = -width + progress * (size + 2 * width)
    if rng.uniform() < 0.5:
        position = size - position
    coord = view.world_x if rng.uniform() < 0.5 else view.world_y
    colour = _random_colour(rng)
    visible = np.flatnonzero((progress >= 0) & (progress <= 1))
    if visible.size == 0:
        return
    dist = np.abs(coord[visible] - position[visible].astype(np.float32)[:, None, None]) - width / 2
    region = canvas[visible]
    _composite(region, np.broadcast_to(np.clip(0.5 - dist, 0.0, 1.0), region.shape[:3]), colour)
    canvas[visible] = region


def render_video(
    class_name: str, rng: np.random.Generator, size: int = 96, frames: int = 32, difficulty: str = "medium",
    draw_actor: bool = True, background: str = "static",
) -> np.ndarray:
    """Render one clip of ``class_name`` as a (T, H, W, 3) uint8 RGB array, using only ``rng``.

    ``draw_actor=False`` renders the same clip's twin without its actor: every random draw is made, so the
    background, distractors, occluder, camera and noise are identical (what an encoder's *actor sensitivity*
    compares). ``background="changing"`` draws the background's pattern anew in every frame (a pretraining-pool
    variant for the scaling study; the actor, distractors, camera and noise are the static clip's)."""
    _validate_render_args(size, frames, difficulty)
    if background not in BACKGROUNDS:
        raise ValueError(f"unknown background {background!r}; valid: {', '.join(BACKGROUNDS)}")
    if class_name not in CLASS_NAMES:
        raise ValueError(f"unknown class {class_name!r}; valid classes: {', '.join(CLASS_NAMES)}")
    cfg = _DIFFICULTY_SETTINGS[difficulty]

    actor = _actor_track(class_name, rng, size, frames, cfg)
    view = _View.create(size, _camera_offsets(rng, frames, size, cfg))
    scene, bg_colour = _background(rng, view, cfg, frames, changing=background == "changing")
    canvas = np.array(np.broadcast_to(scene, (frames, size, size, 3)), dtype=np.float32)

    for _ in range(rng.integers(cfg.distractors[0], cfg.distractors[1] + 1)):
        track = _distractor_track(rng, size, frames)
        shape = _SHAPES[rng.integers(len(_SHAPES))]
        _draw_shape(canvas, view, track, shape, (_random_colour(rng, [bg_colour], 60.0), None))

    actor_shape = _SHAPES[rng.integers(len(_SHAPES))]
    first = _random_colour(rng, [bg_colour])
    second = _random_colour(rng, [first, bg_colour], 70.0)
    split = rng.uniform(-0.3, 0.3)
    if draw_actor:
        _draw_shape(canvas, view, actor, actor_shape, (first, second), split=split)

    if rng.uniform() < cfg.occluder_prob:
        _draw_occluder(canvas, rng, view)

    gain = 1.0 + cfg.brightness_drift * np.linspace(rng.uniform(-1, 1), rng.uniform(-1, 1), frames)
    canvas *= gain.astype(np.float32)[:, None, None, None]
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(cfg.noise_std)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Encoding and dataset generation.
# ---------------------------------------------------------------------------------------------------


def pick_codec() -> str:
    """H.264 when the bundled FFmpeg has libx264, else MPEG-4 part 2 (always built in)."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def rgb_to_yuv420p(frames: np.ndarray) -> list[np.ndarray]:
    """(T, H, W, 3) uint8 RGB -> [Y (T, H, W), U (T, H/2, W/2), V (T, H/2, W/2)] uint8 (BT.601, limited range)."""
    # Converted here rather than by swscale so the pixels handed to the encoder are exactly ours.
    rgb = frames.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    t, h, w = y.shape

    def subsample(plane: np.ndarray) -> np.ndarray:
        return plane.reshape(t, h // 2, 2, w // 2, 2).mean(axis=(2, 4))

    return [np.clip(np.rint(p), 0, 255).astype(np.uint8) for p in (y, subsample(cb), subsample(cr))]


def _yuv_frame(planes: Sequence[np.ndarray], index: int) -> Any:
    """A yuv420p ``av.VideoFrame`` whose every byte is set, row padding included (PyAV leaves it
    uninitialised)."""
    import av

    height, width = planes[0].shape[1:]
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, source in zip(frame.planes, planes, strict=True):
        padded = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
        padded[:, : plane.width] = source[index]
        plane.update(padded.tobytes())
    frame.pts = index
    return frame


def encode_video(frames: np.ndarray, path: str | Path, fps: int, codec: str) -> None:
    """Write (T, H, W, 3) uint8 RGB frames as a yuv420p mp4, single-threaded so bytes are deterministic."""
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frame sides must be even for yuv420p, got {height}x{width}")
    import av  # only here: rendering works without PyAV (e.g. on a GPU image)

    planes = rgb_to_yuv420p(frames)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if codec == "libx264":
            # No lookahead (hence no MB-tree): with it, x264 gave different bytes and pixels for the same
            # frames depending on what the process had encoded before (measured: 58 of 120 re-encodes).
            stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "rc-lookahead=0"}
        else:
            stream.bit_rate = max(400_000, 3 * width * height * fps)
        for index in range(len(frames)):
            container.mux(stream.encode(_yuv_frame(planes, index)))
        container.mux(stream.encode(None))


@dataclass(frozen=True)
class _VideoJob:
    class_name: str
    class_index: int  # index in CLASS_NAMES, so a video is independent of which other classes are chosen
    video_index: int
    path: str
    seed: int
    size: int
    frames: int
    fps: int
    difficulty: str
    codec: str


def _make_video(job: _VideoJob) -> str:
    rng = np.random.default_rng([job.seed, job.class_index, job.video_index])
    clip = render_video(job.class_name, rng, job.size, job.frames, job.difficulty)
    atomic_write(job.path, lambda tmp: encode_video(clip, tmp, job.fps, job.codec))
    return job.path


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _validate_render_args(size: int, frames: int, difficulty: str) -> None:
    if not _is_int(size) or size < 16 or size % 2:
        raise ValueError(f"size must be an even integer >= 16 (yuv420p needs even sides), got {size!r}")
    if not _is_int(frames) or frames < 4:
        raise ValueError(f"frames must be an integer >= 4, got {frames!r}")
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")


def resolve_classes(classes: int | Sequence[str]) -> list[str]:
    """A count picks the first K of CLASS_NAMES; names are checked against CLASS_NAMES."""
    if isinstance(classes, bool):
        raise DataError(f"classes must be a count or a list of class names, got {classes!r}")
    if _is_int(classes):
        if not 1 <= classes <= len(CLASS_NAMES):
            raise DataError(f"classes must be between 1 and {len(CLASS_NAMES)}, got {classes}")
        return list(CLASS_NAMES[:classes])
    if isinstance(classes, str):
        classes = [name.strip() for name in classes.split(",") if name.strip()]
    names = list(classes)
    unknown = [name for name in names if name not in CLASS_NAMES]
    if unknown:
        listed = ", ".join(map(repr, unknown))
        raise DataError(f"unknown synthetic class(es) {listed}; valid classes: {', '.join(CLASS_NAMES)}")
    if len(set(names)) != len(names) or not names:
        raise DataError(f"classes must be a non-empty list without duplicates, got {names}")
    return names


def _validate_args(videos_per_class: int, size: int, frames: int, fps: int, seed: int, difficulty: str) -> None:
    try:
        _validate_render_args(size, frames, difficulty)
    except ValueError as err:
        raise DataError(str(err)) from None
    if not _is_int(videos_per_class) or videos_per_class < 1:
        raise DataError(f"videos_per_class must be a positive integer, got {videos_per_class!r}")
    if not _is_int(fps) or fps < 1:
        raise DataError(f"fps must be a positive integer, got {fps!r}")
    if not _is_int(seed) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")


def _video_relpath(class_name: str, index: int) -> str:
    return f"{class_name}/{class_name}_{index:04d}.mp4"


def _read_meta(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / _META_NAME).read_text())
    except (OSError, ValueError):
        return None


def _files_complete(out: Path, relpaths: Sequence[str]) -> list[str]:
    """Relative paths that are missing or empty."""
    return [rel for rel in relpaths if not (out / rel).is_file() or (out / rel).stat().st_size == 0]


def _remove_previous(out: Path, meta: dict[str, Any] | None) -> None:
    """Delete what an earlier generation wrote (and nothing else) before overwriting it."""
    if meta is None:
        return
    for entry in meta.get("files", []):
        path = out / entry.get("path", "")
        if path.is_file() and path.resolve().is_relative_to(out.resolve()):
            path.unlink()
    for name in meta.get("params", {}).get("classes", []):
        folder = out / name
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for name in (_CLASSES_NAME, _META_NAME):
        (out / name).unlink(missing_ok=True)


def _describe_mismatch(old: dict[str, Any], params: dict[str, Any], old_version: Any) -> str:
    changes = []
    if old_version != GENERATOR_VERSION:
        changes.append(f"generator {old_version!r} -> {GENERATOR_VERSION!r}")
    for key, value in params.items():
        if old.get(key) != value:
            changes.append(f"{key}: {old.get(key)!r} -> {value!r}")
    return "; ".join(changes) or "unreadable meta.json"


def _check_reusable(out: Path, params: dict[str, Any], overwrite: bool) -> dict[str, Any] | None:
    """Return the existing meta when ``out`` holds (part of) this exact dataset; raise on a conflict."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a folder")
    meta = _read_meta(out)
    same = meta is not None and meta.get("params") == params
    if same and meta.get("generator_version") == GENERATOR_VERSION:
        return meta
    if same and meta.get("generator") == "picojepa.datasets.synth":
        # Our own files from an older generator: the same request now renders differently, so replace them.
        print(f"synth: {out} was made by {meta.get('generator_version')!r}; regenerating with "
              f"{GENERATOR_VERSION!r}", file=sys.stderr, flush=True)
        _remove_previous(out, meta)
        return None
    if overwrite:
        _remove_previous(out, meta)
        return None
    if meta is None and not any(out.iterdir()):
        return None
    if meta is None:
        raise DataError(
            f"{out} is not empty and holds no synthetic dataset (no readable {_META_NAME}); "
            "choose an empty folder or pass overwrite=True (--overwrite)"
        )
    details = _describe_mismatch(meta.get("params", {}), params, meta.get("generator_version"))
    raise DataError(
        f"{out} already holds a synthetic dataset generated with different settings ({details}); "
        "use another folder or pass overwrite=True (--overwrite) to replace it"
    )


def _run_jobs(jobs: list[_VideoJob], workers: int, report: Callable[[int], None]) -> None:
    if workers <= 1 or len(jobs) <= 1:
        for done, job in enumerate(jobs, 1):
            _make_video(job)
            report(done)
        return
    chunk = max(1, min(16, len(jobs) // (4 * workers)))
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        for done, _ in enumerate(pool.map(_make_video, jobs, chunksize=chunk), 1):
            report(done)


def _progress_printer(total: int, enabled: bool) -> Callable[[int], None]:
    step = max(1, total // 10)

    def report(done: int) -> None:
        if enabled and (done % step == 0 or done == total):
            print(f"synth: {done}/{total} videos", file=sys.stderr, flush=True)

    return report


def generate_dataset(
    out: str | Path,
    classes: int | Sequence[str] = 10,
    videos_per_class: int = 40,
    size: int = 96,
    frames: int = 32,
    fps: int = 16,
    seed: int = 0,
    difficulty: str = "medium",
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate (or reuse) the synthetic action benchmark in ``out``; returns ``out`` as a Path.

    Layout: ``out/<class>/<class>_<idx:04d>.mp4``, ``out/classes.txt`` and ``out/meta.json``. A folder
    that already holds the same dataset is reused (missing videos of an interrupted run are filled in);
    a folder with different settings is an error unless ``overwrite``.
    """
    class_names = resolve_classes(classes)
    _validate_args(videos_per_class, size, frames, fps, seed, difficulty)
    out = Path(out)
    params = {
        "classes": class_names,
        "videos_per_class": int(videos_per_class),
        "size": int(size),
        "frames": int(frames),
        "fps": int(fps),
        "seed": int(seed),
        "difficulty": difficulty,
    }
    entries = [
        {"path": _video_relpath(name, i), "label": name} for name in class_names for i in range(videos_per_class)
    ]

    existing = _check_reusable(out, params, overwrite)
    todo = set(_files_complete(out, [entry["path"] for entry in entries]))
    if existing is not None and existing.get("complete") and not todo:
        return out

    meta = {
        "generator": "picojepa.datasets.synth",
        "generator_version": GENERATOR_VERSION,
        "params": params,
        "codec": existing["codec"] if existing is not None else pick_codec(),
        "pix_fmt": "yuv420p",
        "num_videos": len(entries),
        "complete": False,
        "classes": class_names,
        "files": entries,
    }
    out.mkdir(parents=True, exist_ok=True)
    # Written before any video so an interrupted run is recognised and resumed rather than refused.
    write_json(out / _META_NAME, meta)
    write_text(out / _CLASSES_NAME, "".join(f"{name}\n" for name in class_names))
    for name in class_names:
        (out / name).mkdir(exist_ok=True)

    jobs = [
        _VideoJob(
            class_name=entry["label"],
            class_index=CLASS_NAMES.index(entry["label"]),
            video_index=index % params["videos_per_class"],
            path=str(out / entry["path"]),
            seed=params["seed"],
            size=params["size"],
            frames=params["frames"],
            fps=params["fps"],
            difficulty=difficulty,
            codec=meta["codec"],
        )
        for index, entry in enumerate(entries)
        if entry["path"] in todo
    ]
    _run_jobs(jobs, workers or os.cpu_count() or 1, _progress_printer(len(jobs), progress))

    meta["complete"] = True
    write_json(out / _META_NAME, meta)
    return out


def read_classes(root: str | Path) -> list[str]:
    """Class names of a generated dataset, in label order."""
    path = Path(root) / _CLASSES_NAME
    if not path.is_file():
        raise DataError(f"{path} not found: is {root} a folder made by picojepa.datasets.synth.generate_dataset?")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


DOMAIN_LIST = "videos.txt"


def domain_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th domain of a domain set made with ``seed``: distinct for every (seed, domain)
    below 100 domains, so no two domains (nor two sets made with other seeds) share a video's random draws."""
    return seed * 100 + index


def generate_domains(
    out: str | Path,
    difficulties: Sequence[str] = DIFFICULTIES,
    classes: int | Sequence[str] = 10,
    videos_per_class: int = 40,
    size: int = 96,
    frames: int = 32,
    fps: int = 16,
    seed: int = 0,
    workers: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """A benchmark made of distinct families of scenes, one per difficulty (nuisance level): the same classes and
    counts in each, so clustering by look has domains to find. Layout: ``out/<difficulty>/`` is a
    :func:`generate_dataset` folder (seed :func:`domain_seed`), and ``out/videos.txt`` lists every video with its
    class (``path label``), the labelled source; ``out`` itself reads as a pool whose folders are the domains.
    Returns the path of the list."""
    if not difficulties or len(set(difficulties)) != len(difficulties):
        raise DataError(f"domains must be distinct difficulties, at least one, got {list(difficulties)}")
    for difficulty in difficulties:  # all checked before the first domain is rendered
        _validate_args(videos_per_class, size, frames, fps, seed, difficulty)
    out = Path(out)
    lines = []
    for k, difficulty in enumerate(difficulties):
        folder = generate_dataset(out / difficulty, classes=classes, videos_per_class=videos_per_class, size=size,
                                  frames=frames, fps=fps, seed=domain_seed(seed, k), difficulty=difficulty,
                                  workers=workers, progress=progress, overwrite=overwrite)
        meta = _read_meta(folder) or {}
        lines += [f"{difficulty}/{entry['path']} {entry['label']}\n" for entry in meta.get("files", [])]
    write_text(out / DOMAIN_LIST, "".join(lines))
    return out / DOMAIN_LIST
