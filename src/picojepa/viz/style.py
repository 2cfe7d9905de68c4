"""One look for every figure: colour-blind-safe colours fixed per model, readable fonts, atomic PNG writes.

Figures are built on :class:`matplotlib.figure.Figure` with the Agg canvas and never through
``pyplot``'s global state, so plotting works without a display and does not switch the backend of an
interactive session that imports pico-JEPA.
"""

from __future__ import annotations

import functools
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..errors import PicoJepaError
from ..utils import atomic_write

# Okabe & Ito (2008), "Color Universal Design": distinguishable under the common colour-vision deficiencies.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

# Partial members are one family of greys (dark → light) so the eye separates them from General (black)
# and from the aggregations (saturated Okabe–Ito hues); their order in the legend tells them apart.
PARTIAL_GREYS = ("#3F3F3F", "#5A5A5A", "#747474", "#8C8C8C", "#A3A3A3", "#B8B8B8", "#CBCBCB", "#DCDCDC")

MODEL_COLORS: dict[str, str] = {
    "general": OKABE_ITO["black"],
    "random_init": "#B8860B",  # dark goldenrod: the baseline, visible on white
    **{f"partial_{k}": grey for k, grey in enumerate(PARTIAL_GREYS, start=1)},
    "vote": OKABE_ITO["orange"],
    "soft": OKABE_ITO["blue"],
    "weighted": OKABE_ITO["bluish_green"],
    "stack": OKABE_ITO["vermillion"],
    "best_single": OKABE_ITO["reddish_purple"],
    "oracle": OKABE_ITO["sky_blue"],
}

# Classes: Okabe–Ito without black (kept for General), then Paul Tol's "muted" scheme, then a colour map.
CLASS_COLORS = (
    OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["bluish_green"], OKABE_ITO["vermillion"],
    OKABE_ITO["reddish_purple"], OKABE_ITO["sky_blue"], OKABE_ITO["yellow"],
    "#332288", "#882255", "#44AA99", "#999933", "#AA4499", "#117733", "#DDCC77", "#CC6677",
)
CLASS_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

RC = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": False,
    "grid.color": "#DDDDDD",
    "grid.linewidth": 0.6,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}

F = TypeVar("F", bound=Callable[..., Any])


def styled(fn: F) -> F:
    """Run a plotting function with the house style, leaving the global rcParams untouched."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(RC):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def fit_text(text: str, width_inches: float, fontsize: float = 12.0) -> str:
    """Wrap ``text`` onto lines that fit ``width_inches`` at ``fontsize`` points (average glyph ≈ 0.55 em)."""
    chars = max(12, int(width_inches * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(line, chars, break_long_words=False) for line in text.splitlines())


def new_figure(width: float, height: float) -> Figure:
    """A headless figure (Agg canvas) with constrained layout, so labels never overlap."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Write ``fig`` atomically (readers never see half a file) and release it.

    The format follows the suffix (PNG when there is none; PDF and SVG work too).
    """
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".png")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in fig.canvas.get_supported_filetypes():
        raise PicoJepaError(f"cannot write a figure as {path.suffix!r}: use .png, .pdf or .svg")
    with matplotlib.rc_context(RC):  # layout and text are finalised at draw time, under the same style
        atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi))
    fig.clear()
    _close_if_managed(fig)
    return path


def _close_if_managed(fig: Figure) -> None:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


# Names that are not model names (custom run labels) take colours no model name uses (Paul Tol's "muted").
OTHER_COLORS = ("#332288", "#882255", "#44AA99", "#999933", "#AA4499", "#117733", "#DDCC77", "#CC6677")


def model_color(name: str, index: int = 0) -> str:
    """The fixed colour of a model/ensemble name; any other name gets a colour no model uses, by ``index``."""
    return MODEL_COLORS.get(name, OTHER_COLORS[index % len(OTHER_COLORS)])


def class_color(index: int) -> Any:
    if index < len(CLASS_COLORS):
        return CLASS_COLORS[index]
    return matplotlib.colormaps["turbo"]((index * 0.618034) % 1.0)  # golden-ratio steps spread far-apart hues


def class_marker(index: int) -> str:
    return CLASS_MARKERS[(index // len(CLASS_COLORS)) % len(CLASS_MARKERS)]


def label_name(name: str) -> str:
    """``partial_3`` → ``Partial 3``; names that are not model names are shown as they are."""
    from ..ensemble.report import display_name, is_model_name

    if is_model_name(name) or name in MODEL_COLORS:
        return display_name(name)
    return name


def wrap_labels(labels: Sequence[str], width: int = 14) -> list[str]:
    """Break long tick labels (class names) over lines; underscores count as spaces."""
    return [textwrap.fill(str(label).replace("_", " "), width=width, break_long_words=False) or str(label)
            for label in labels]


def tick_rotation(labels: Sequence[str], slots: float) -> int:
    """Rotate category tick labels when they would not fit side by side (``slots`` inches per label)."""
    longest = max((max(len(line) for line in str(lab).splitlines()) for lab in labels), default=0)
    return 0 if longest * 0.075 <= slots else 35
