"""The experiment report's figures, drawn from numbers the experiment already holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import warn


def experiment_figures(out: Path, report: dict[str, Any], encoder_dirs: dict[str, Path], encoder_names: list[str],
                       mode: str, class_names: list[str], labels: np.ndarray, pooled: dict[str, np.ndarray],
                       y_test: np.ndarray, test_preds: dict[str, np.ndarray], seed: int = 0,
                       progress: bool = True) -> list[tuple[str, str]]:
    """Write out/figures/*.png; returns (caption, path relative to out) for report.md. A figure that
    fails is named in a warning with its error and left out; the report is still written."""
    from .. import viz

    fig_dir = out / "figures"
    made: list[tuple[str, str]] = []

    def attempt(caption: str, name: str, draw: Callable[[Path], Any]) -> None:
        path = fig_dir / name
        try:
            draw(path)
        except Exception as e:  # a broken figure must not cost the user the whole report
            warn(f"figure {name} was not drawn: {type(e).__name__}: {e}")
            return
        made.append((caption, f"figures/{name}"))

    attempt("Accuracy per class: General, the random-init encoder (same architecture and seed, same head), each "
            "Partial and each aggregation, with the chance level; below, the pretraining gain and each "
            "aggregation's gap to General with paired-bootstrap 95 % CIs.", "accuracy.png",
            lambda p: viz.accuracy_bars(report, p))
    attempt("Mean confidence per class: the probability a model gives the class it predicts; for the vote, the "
            "members' mean probability of the voted class.",
            "confidence.png", lambda p: viz.confidence_bars(report, p))
    attempt("Confusion matrices on the test split (rows: true class, normalised).", "confusions.png",
            lambda p: viz.confusion_matrices_from_arrays(y_test, test_preds, class_names, p))
    if mode == "shared":
        panels = [("General = every Partial (one shared encoder)", pooled["general"], labels)]
        caption = ("t-SNE of pooled clip embeddings of all labelled videos. In the shared protocol General and "
                   "the Partials use one encoder, so there is one map; silhouette computed in embedding space.")
    else:
        panels = [(name.replace("_", " ").capitalize(), pooled[name], labels) for name in encoder_names]
        caption = ("t-SNE of pooled clip embeddings of all labelled videos, one map per encoder; silhouette "
                   "computed in embedding space.")
    attempt(caption, "tsne.png", lambda p: viz.plot_tsne(panels, class_names, p, seed=seed, progress=progress))
    runs = [encoder_dirs[name] for name in encoder_names]
    attempt("Pretraining curves: loss, learning rate, weight decay, EMA momentum, the collapse diagnostics "
            "(target feature std, effective rank) and, for the General, the learning monitor (probe accuracy of "
            "the EMA and online encoders; dashed: random init).", "pretraining_curves.png",
            lambda p: viz.plot_curves(runs, p, labels=encoder_names))
    return made
