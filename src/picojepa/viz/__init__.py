"""Figures: mask views, t-SNE maps of embeddings, pretraining curves and report charts.

Every function writes one image atomically and returns its path; plotting is headless (Agg) and
leaves matplotlib's global state alone. Model names (``general``, ``partial_k``, ``vote``, ``soft``,
``weighted``, ``stack``, ``best_single``, ``oracle``) keep one colour across all figures.

Names are imported on first use, so mounting ``picojepa viz`` in the CLI costs no matplotlib/torch import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "plot_curves": "curves",
    "read_metrics": "curves",
    "plot_masks": "masks",
    "shade_masked": "masks",
    "tubelet_pixel_mask": "masks",
    "accuracy_bars": "report_figures",
    "confidence_bars": "report_figures",
    "confusion_matrices": "report_figures",
    "confusion_matrices_from_arrays": "report_figures",
    "MODEL_COLORS": "style",
    "model_color": "style",
    "save": "style",
    "embed_videos": "tsne",
    "plot_tsne": "tsne",
    "silhouette": "tsne",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
