"""Charts of the experiment report: per-class accuracy with the gaps vs General, confidence per class, and
confusion matrices, each written as one PNG.

The bar charts read the ``report.json`` dict (:func:`picojepa.ensemble.report.build_report`); the confusion matrices
read ``predictions.csv`` (or the same labels and predictions as arrays).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.lines import Line2D

from ..ensemble.report import GENERAL, marked_name, read_predictions_csv
from ..errors import DataError
from .style import label_name, model_color, new_figure, save, styled, tick_rotation, wrap_labels

MEAN_GROUP = "Mean\n(per class)"
OVERALL_GROUP = "Overall\n(per video)"
MAX_ANNOTATED_CLASSES = 12  # beyond this, count labels in confusion cells become unreadable
GAP_PANEL_INCHES = 11.0  # the gap panel's widest: a handful of rows needs no more
LEGEND_INCHES = 3.0  # room taken by the model legend right of the bar charts and by the y label


# ----------------------------------------------------------------------------------------------- helpers


def _entries(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, entry) for General, the Partials, then the aggregations, in report order."""
    if "models" not in report or "classes" not in report:
        raise DataError("not a pico-JEPA report: 'classes' and 'models' are required")
    return list(report["models"].items()) + list(report.get("ensembles", {}).items())


def _fraction(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _group_values(entry: Mapping[str, Any], metric: str, classes: Sequence[str], mean_key: str) -> np.ndarray:
    """Per-class values, then the per-class mean and the per-video value, in percent."""
    block = entry[metric]
    values = [_fraction(block["per_class"].get(c)) for c in classes]
    values += [_fraction(block.get(mean_key)), _fraction(block.get("micro"))]
    return 100 * np.asarray(values)


def _bars(ax, report: Mapping[str, Any], metric: str, mean_key: str) -> tuple[np.ndarray, float]:
    """Grouped bars (one group per class + mean + overall, one bar per model); returns group centres and
    the bar width."""
    classes = list(report["classes"])
    entries = _entries(report)
    groups = len(classes) + 2
    centres = np.arange(groups, dtype=float)
    width = 0.84 / len(entries)
    for k, (name, entry) in enumerate(entries):
        offsets = centres - 0.42 + (k + 0.5) * width
        ax.bar(offsets, _group_values(entry, metric, classes, mean_key), width, color=model_color(name, k),
               edgecolor="white", linewidth=0.3, label=marked_name(name, report, label_name(name)))
    ax.axvline(len(classes) - 0.5, color="#999999", linewidth=0.8, linestyle=":")  # classes | summaries
    labels = [*wrap_labels(classes, 11), MEAN_GROUP, OVERALL_GROUP]
    rotation = tick_rotation(labels, _slot_inches(ax, groups))
    if rotation:  # wrapped lines would interleave once rotated: one line per label instead
        labels = [c.replace("_", " ") for c in classes] + [g.replace("\n", " ") for g in (MEAN_GROUP, OVERALL_GROUP)]
    ax.set_xticks(centres)
    ax.set_xticklabels(labels, rotation=rotation, ha="right" if rotation else "center",
                       rotation_mode="anchor" if rotation else "default")
    ax.set_xlim(-0.5, groups - 0.5)
    ax.set_ylim(0, 105)
    ax.grid(True, axis="y")
    ax.set_axisbelow(True)
    return centres, width


def _slot_inches(ax, groups: int) -> float:
    return max(ax.figure.figure.get_figwidth() - LEGEND_INCHES, 1.0) / groups


def _bar_figure_size(report: Mapping[str, Any]) -> tuple[float, float]:
    groups = len(report["classes"]) + 2
    bars = len(_entries(report))
    return float(np.clip(LEGEND_INCHES + 1.0 + groups * (0.065 * bars + 0.3), 9.0, 18.0)), 4.6


# ----------------------------------------------------------------------------------------------- accuracy


def accuracy_bars(report: Mapping[str, Any], out: str | Path) -> Path:
    """Per-class accuracy of every model and aggregation (grouped bars), and each aggregation's gap vs
    General with its paired-bootstrap 95 % CI."""
    return save(_accuracy_figure(report), out)


@styled
def _accuracy_figure(report: Mapping[str, Any]):
    width, height = _bar_figure_size(report)
    gaps = _gap_rows(report)
    gap_height = 1.3 + 0.32 * len(gaps) if gaps else 0.0
    fig = new_figure(width, height + gap_height)
    # Subfigures keep the two panels' layouts independent: long gap labels must not squeeze the bars.
    top, bottom = fig.subfigures(2, 1, height_ratios=[height, gap_height]) if gaps else (fig, None)
    bar_ax = top.subplots()
    centres, _ = _bars(bar_ax, report, "accuracy", "macro")
    bar_ax.set_ylabel("accuracy (%)")
    bar_ax.set_title(f"Test accuracy per class ({report.get('n_test', '?')} test videos)")
    handles, labels = bar_ax.get_legend_handles_labels()
    chance = report.get("chance")
    if chance:
        bar_ax.axhline(100 * chance, color="#555555", linewidth=1.0, linestyle=(0, (4, 3)), zorder=0.5)
        handles.append(Line2D([], [], color="#555555", linestyle=(0, (4, 3)), linewidth=1.0))
        labels.append(f"chance ({100 * chance:.0f} %)")
    oracle = (report.get("reference") or {}).get("oracle")
    if oracle:  # an overall number: drawn over the overall group only
        x = centres[-1]
        bar_ax.hlines(100 * oracle["accuracy"], x - 0.46, x + 0.46, colors=model_color("oracle"), linewidth=2,
                      linestyles="--")
        handles.append(Line2D([], [], color=model_color("oracle"), linestyle="--", linewidth=2))
        labels.append(f"Oracle (any Partial\nright): {100 * oracle['accuracy']:.1f} %")
    top.legend(handles, labels, loc="outside right upper", frameon=False)
    if bottom is not None:
        _gap_panel(_gap_axes(bottom, width), gaps, report)
    return fig


def _pp(fraction: float) -> float:
    """Fraction → percentage points rounded as printed, so "-0.0" never appears."""
    return round(100 * float(fraction), 1) + 0.0


def _gap_axes(subfig, width: float):
    """The gap panel's axes, at most GAP_PANEL_INCHES wide: a few rows need no more."""
    if width <= GAP_PANEL_INCHES + 1:
        return subfig.subplots()
    ax, spare = subfig.subplots(1, 2, width_ratios=[GAP_PANEL_INCHES, width - GAP_PANEL_INCHES])
    spare.set_visible(False)
    return ax


def _gap_rows(report: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """(name for the colour, label, gap entry): the pretraining gain (General vs random init, its own sign
    convention: right of 0 = pretraining helped), each aggregation, then the best single member."""
    gain = report.get("pretraining_gain")
    rows = [("random_init", "Pretraining gain (General − random init)", gain)] if gain else []
    rows += [(name, marked_name(name, report, label_name(name)), e["gap_vs_general"])
             for name, e in report.get("ensembles", {}).items() if "gap_vs_general" in e]
    best = (report.get("reference") or {}).get("best_single")
    if best and "gap_vs_general" in best:
        label = marked_name("best_single", report, f"Best single ({label_name(best['member'])})")
        rows.append(("best_single", label, best["gap_vs_general"]))
    return rows


def _gap_panel(ax, gaps: list[tuple[str, str, Mapping[str, Any]]], report: Mapping[str, Any]) -> None:
    ys = np.arange(len(gaps))[::-1]
    labels = []
    for y, (name, label, gap) in zip(ys, gaps, strict=True):
        mean, (lo, hi) = _pp(gap["mean"]), (_pp(v) for v in gap["ci95"])
        color = model_color(name)
        significant = not gap.get("ci_includes_zero", lo <= 0 <= hi)
        ax.errorbar(mean, y, xerr=[[mean - lo], [hi - mean]], fmt="o", color=color, ecolor=color, capsize=4,
                    markersize=6, linewidth=1.6, markerfacecolor=color if significant else "white")
        labels.append(f"{label}: {mean:+.1f} pp [{lo:+.1f}, {hi:+.1f}]{' *' if significant else ''}")
    ax.axvline(0, color="#444444", linewidth=1)
    ax.set_yticks(ys)
    ax.set_yticklabels(labels)  # numbers beside the names: never on top of whiskers or the zero line
    ax.set_ylim(-0.6, len(gaps) - 0.4)
    reach = max([abs(100 * v) for _, _, g in gaps for v in g["ci95"]] + [1.0])
    ax.set_xlim(-1.1 * reach, 1.1 * reach)  # symmetric: left of 0 reads as "worse than General" at a glance
    metric = (report.get("bootstrap") or {}).get("metric", "micro")
    ax.set_xlabel(f"gap in {metric} accuracy (percentage points)\n"
                  "whiskers: paired bootstrap 95 % CI · filled marker and *: the CI excludes 0")
    ax.set_title("Gaps (right of 0: pretraining helped / the aggregation beats General)")
    ax.grid(True, axis="x")
    ax.set_axisbelow(True)


# ----------------------------------------------------------------------------------------------- confidence


def confidence_bars(report: Mapping[str, Any], out: str | Path) -> Path:
    """Mean confidence (top probability) per true class for every model and aggregation."""
    return save(_confidence_figure(report), out)


@styled
def _confidence_figure(report: Mapping[str, Any]):
    fig = new_figure(*_bar_figure_size(report))
    ax = fig.subplots()
    _bars(ax, report, "confidence", "mean")
    ax.set_ylabel("mean confidence (%)")
    ax.set_title("Mean confidence per true class (probability of the predicted class, right or wrong; "
                 "vote: members' mean probability of the voted class)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside right upper", frameon=False)
    return fig


# ----------------------------------------------------------------------------------------------- confusion


def confusion_counts(y: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(y), np.asarray(pred)), 1)
    return counts


def confusion_matrices(predictions_csv: str | Path, out: str | Path) -> Path:
    """One row-normalised confusion matrix per model and aggregation, from ``predictions.csv``."""
    outputs = read_predictions_csv(predictions_csv)
    names = outputs.model_names + outputs.ensemble_names
    return confusion_matrices_from_arrays(outputs.y, {n: outputs.preds[n] for n in names}, outputs.classes, out)


def confusion_matrices_from_arrays(y: np.ndarray, preds: Mapping[str, np.ndarray], class_names: Sequence[str],
                                   out: str | Path) -> Path:
    """Same figure from labels (n,) and predicted labels per name (n,), names in display order."""
    if not preds:
        raise DataError("no predictions to draw")
    C = len(class_names)
    matrices = {name: confusion_counts(y, p, C) for name, p in preds.items()}
    return save(_confusion_figure(matrices, list(class_names)), out)


@styled
def _confusion_figure(matrices: Mapping[str, np.ndarray], classes: list[str]):
    n, C = len(matrices), len(classes)
    cols = min(n, int(np.ceil(np.sqrt(1.5 * n))))  # a landscape grid: 8 panels → 4×2, 13 → 5×3
    rows = -(-n // cols)
    side = float(np.clip(0.26 * C + 1.0, 2.2, 5.5))
    fig = new_figure(cols * side + 1.6, rows * (side + 0.35) + 0.9)
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    x_labels, y_labels = _tick_labels(classes)
    image = None
    for k, (name, counts) in enumerate(matrices.items()):
        ax = axes[k // cols, k % cols]
        image = _matrix(ax, counts)
        correct = np.trace(counts) / max(counts.sum(), 1)
        ax.set_title(f"{label_name(name)} · {100 * correct:.1f} %", fontweight="bold" if name == GENERAL else "normal")
        _matrix_ticks(ax, x_labels, y_labels, show_y=k % cols == 0)
    for k in range(n, rows * cols):
        axes[k // cols, k % cols].set_visible(False)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.6, label="share of the true class")
    fig.suptitle("Confusion matrices (rows: true class, normalised; numbers: video counts)")
    return fig


def _matrix(ax, counts: np.ndarray):
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    if len(counts) <= MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8 if len(counts) <= 8 else 6.5,
                    color="white" if share[i, j] > 0.55 else "#222222")
    for spine in ax.spines.values():
        spine.set_visible(True)
        spine.set_color("#BBBBBB")
    return image


def _tick_labels(classes: list[str]) -> tuple[list[str], list[str]]:
    """(x, y) tick labels: names when short; otherwise numbers on x, keyed by "name  k" on y."""
    names = [c.replace("_", " ") for c in classes]
    if len(names) <= 5 and max(len(n) for n in names) <= 9:
        return names, names
    numbers = [str(k) for k in range(1, len(names) + 1)]
    return numbers, [f"{n}  {k}" for n, k in zip(names, numbers, strict=True)]


def _matrix_ticks(ax, x_labels: list[str], y_labels: list[str], show_y: bool) -> None:
    # x labels on every panel (short, one line) so every row gets the same layout and the matrices the same size.
    ticks = np.arange(len(x_labels))
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xticklabels(x_labels, fontsize=8)
    ax.set_yticklabels(y_labels if show_y else [], fontsize=8)
    ax.set_xlabel("predicted", fontsize=9)
    if show_y:
        ax.set_ylabel("true")
    ax.tick_params(length=0)
