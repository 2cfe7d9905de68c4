"""Metrics on label and probability arrays: accuracy, confidence, calibration, diversity, paired bootstrap.

Everything here works on plain numpy arrays: ``y`` holds integer class labels of shape (n,), ``probs``
holds class probabilities of shape (n, C) and ``pred`` holds predicted labels of shape (n,).
Classes absent from ``y`` get ``NaN`` in per-class arrays (``None`` in the dicts made for JSON).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .errors import ConfigError, DataError

PROB_SUM_TOLERANCE = 1e-3
GAP_METRICS = ("micro", "macro")


# --------------------------------------------------------------------------------------------- validation


def check_labels(y: ArrayLike, num_classes: int | None = None, name: str = "labels") -> np.ndarray:
    """Return ``y`` as a 1-D int64 array, checking values are integers in ``[0, num_classes)``."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D sequence of class indices, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    whole_floats = np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0)
    if not np.issubdtype(arr.dtype, np.integer) and not whole_floats:
        raise DataError(f"{name} must be integer class indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 0:
        raise DataError(f"{name} must be non-negative class indices, found {int(arr.min())}")
    if num_classes is not None and arr.max() >= num_classes:
        raise DataError(f"{name} contain class {int(arr.max())} but there are only {num_classes} classes")
    return arr


def check_probs(probs: ArrayLike, ndim: int = 2, name: str = "probabilities") -> np.ndarray:
    """Return ``probs`` as float64 with ``ndim`` dims whose last axis is a probability distribution."""
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != ndim:
        layout = "(n samples, C classes)" if ndim == 2 else "(M members, n samples, C classes)"
        raise DataError(f"{name} must have shape {layout}, got shape {arr.shape}")
    if arr.shape[-1] < 1:
        raise DataError(f"{name} must have at least one class column")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise DataError(f"{name} must be finite and non-negative (did you pass logits instead of softmax?)")
    sums = arr.sum(axis=-1)
    if sums.size and np.max(np.abs(sums - 1.0)) > PROB_SUM_TOLERANCE:
        worst = float(sums.flat[np.argmax(np.abs(sums - 1.0))])
        raise DataError(
            f"{name} must sum to 1 over classes (a row sums to {worst:.4f}); pass softmax outputs"
        )
    return arr


def _check_same_length(**arrays: np.ndarray) -> int:
    lengths = {name: len(a) for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise DataError(f"arrays must have the same number of samples, got {lengths}")
    return next(iter(lengths.values()))


def _require_samples(n: int) -> None:
    if n == 0:
        raise DataError("cannot evaluate on an empty set (0 samples)")


# --------------------------------------------------------------------------------------------- accuracy


def predictions_from_probs(probs: ArrayLike) -> np.ndarray:
    """Argmax over classes (ties go to the lower class index)."""
    return np.argmax(check_probs(probs), axis=1)


def confusion_matrix(y: ArrayLike, pred: ArrayLike, num_classes: int) -> np.ndarray:
    """(C, C) counts: rows are true classes, columns are predicted classes."""
    y = check_labels(y, num_classes, "labels")
    pred = check_labels(pred, num_classes, "predictions")
    _check_same_length(labels=y, predictions=pred)
    return np.bincount(y * num_classes + pred, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def per_class_accuracy(y: ArrayLike, pred: ArrayLike, num_classes: int) -> np.ndarray:
    """Recall of each true class, shape (C,); NaN for classes with no sample in ``y``."""
    cm = confusion_matrix(y, pred, num_classes)
    support = cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)


def micro_accuracy(y: ArrayLike, pred: ArrayLike) -> float:
    """Fraction of samples predicted correctly."""
    y, pred = check_labels(y), check_labels(pred, name="predictions")
    _require_samples(_check_same_length(labels=y, predictions=pred))
    return float(np.mean(y == pred))


def macro_accuracy(y: ArrayLike, pred: ArrayLike, num_classes: int) -> float:
    """Mean of the per-class accuracies over the classes present in ``y``."""
    per_class = per_class_accuracy(y, pred, num_classes)
    _require_samples(int(np.sum(~np.isnan(per_class))))
    return float(np.nanmean(per_class))


# --------------------------------------------------------------------------------------------- confidence


def confidence_per_class(y: ArrayLike, probs: ArrayLike) -> np.ndarray:
    """Mean top probability ("certeza") over the samples of each true class, shape (C,); NaN when absent.

    The top probability is the model's confidence in its own prediction, whether right or wrong.
    """
    probs = check_probs(probs)
    num_classes = probs.shape[1]
    y = check_labels(y, num_classes)
    _check_same_length(labels=y, probabilities=probs)
    return _mean_per_class(y, probs.max(axis=1), num_classes)


def _mean_per_class(y: np.ndarray, values: np.ndarray, num_classes: int) -> np.ndarray:
    support = np.bincount(y, minlength=num_classes)
    sums = np.bincount(y, weights=values, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, sums / np.maximum(support, 1), np.nan)


def mean_confidence(probs: ArrayLike) -> float:
    """Mean top probability over all samples."""
    probs = check_probs(probs)
    _require_samples(len(probs))
    return float(probs.max(axis=1).mean())


def expected_calibration_error(y: ArrayLike, probs: ArrayLike, bins: int = 15, pred: ArrayLike | None = None,
                               confidence: ArrayLike | None = None) -> float:
    """Top-label expected calibration error of the decisions ``pred`` (default: the argmax).

    Sum over equal-width confidence bins (lo, hi] of |B|/n * |accuracy(B) - confidence(B)|. The confidence
    of a decision is ``confidence`` when given, else the probability of the predicted class (the top
    probability for argmax decisions); accuracy is whether the decision is right.
    """
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    probs = check_probs(probs)
    y = check_labels(y, probs.shape[1])
    n = _check_same_length(labels=y, probabilities=probs)
    _require_samples(n)
    pred = np.argmax(probs, axis=1) if pred is None else check_labels(pred, probs.shape[1], "predictions")
    conf = probs[np.arange(n), pred] if confidence is None else np.asarray(confidence, dtype=np.float64)
    correct = (pred == y).astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    gap = np.abs(
        np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=conf, minlength=bins)
    )
    # |sum(correct) - sum(conf)| / n per bin equals |B|/n * |acc(B) - conf(B)|.
    return float(gap[count > 0].sum() / n)


# --------------------------------------------------------------------------------------------- diversity


def pairwise_disagreement(preds_members: ArrayLike) -> tuple[float, np.ndarray]:
    """Fraction of samples on which two members predict different classes.

    ``preds_members`` has shape (M, n). Returns the mean over the M(M-1)/2 member pairs (NaN when M < 2)
    and the symmetric (M, M) matrix with zeros on the diagonal.
    """
    preds = np.asarray(preds_members)
    if preds.ndim != 2:
        raise DataError(f"member predictions must have shape (M members, n samples), got {preds.shape}")
    num_members, n = preds.shape
    _require_samples(n)
    matrix = (preds[:, None, :] != preds[None, :, :]).mean(axis=2)
    if num_members < 2:
        return float("nan"), matrix
    upper = matrix[np.triu_indices(num_members, k=1)]
    return float(upper.mean()), matrix


# --------------------------------------------------------------------------------------------- bootstrap


def paired_bootstrap_gap(
    y: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    n_resamples: int = 2000,
    seed: int = 0,
    metric: str = "micro",
    stratified: bool = True,
) -> dict[str, Any]:
    """Paired bootstrap of accuracy(a) - accuracy(b) over the test samples.

    Each resample draws test videos with replacement and scores both models on the same draw. Stratified
    (the default), each class is resampled on its own with its own count — a test split has fixed class
    counts, so a resample should too; otherwise n videos are drawn from all. Because the statistic only
    depends on how many drawn videos fall in each (true class, a right?, b right?) cell, the draw is made
    directly as multinomial cell counts, which has exactly the distribution of resampling video indices
    but costs O(resamples x classes) instead of O(resamples x n).

    Returns ``mean`` (the gap on the full test set, the point estimate), ``ci95`` ([low, high] percentile
    interval), ``ci_includes_zero``, ``bootstrap_mean``, ``fraction_a_better`` / ``fraction_b_better``
    (share of resamples with gap > 0 / < 0), ``p_value`` (approximate two-sided bootstrap p-value:
    twice the smaller tail share of resamples at or beyond 0, capped at 1), plus the settings used.
    For ``metric="macro"`` a class missing from a resample is left out of that resample's mean.
    """
    if metric not in GAP_METRICS:
        raise ConfigError(f"metric must be one of {', '.join(GAP_METRICS)}, got {metric!r}")
    if not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    y = check_labels(y)
    pred_a, pred_b = check_labels(pred_a, name="predictions a"), check_labels(pred_b, name="predictions b")
    n = _check_same_length(labels=y, predictions_a=pred_a, predictions_b=pred_b)
    _require_samples(n)
    num_classes = int(y.max()) + 1

    # Cell index = class * 4 + 2 * (a right) + (b right).
    cells = y * 4 + 2 * (pred_a == y) + (pred_b == y)
    cell_probs = np.bincount(cells, minlength=4 * num_classes) / n
    observed = _gap_from_cell_counts(np.bincount(cells, minlength=4 * num_classes)[None], metric)[0]

    rng = np.random.default_rng(seed)
    if stratified:
        cell_counts = np.bincount(cells, minlength=4 * num_classes).reshape(num_classes, 4)
        counts = np.zeros((n_resamples, num_classes, 4), dtype=np.int64)
        for c in np.flatnonzero(cell_counts.sum(axis=1)):
            support = int(cell_counts[c].sum())
            counts[:, c] = rng.multinomial(support, cell_counts[c] / support, size=n_resamples)
        counts = counts.reshape(n_resamples, -1)
    else:
        counts = rng.multinomial(n, cell_probs, size=n_resamples)
    gaps = _gap_from_cell_counts(counts, metric)
    low, high = np.percentile(gaps, [2.5, 97.5])
    tail = min(np.mean(gaps <= 0), np.mean(gaps >= 0))
    return {
        "mean": float(observed),
        "ci95": [float(low), float(high)],
        "ci_includes_zero": bool(low <= 0 <= high),
        "bootstrap_mean": float(gaps.mean()),
        "fraction_a_better": float(np.mean(gaps > 0)),
        "fraction_b_better": float(np.mean(gaps < 0)),
        "p_value": float(min(1.0, 2 * tail)),
        "metric": metric,
        "stratified": bool(stratified),
        "n_resamples": int(n_resamples),
        "seed": int(seed),
        "n": int(n),
    }


def _gap_from_cell_counts(counts: np.ndarray, metric: str) -> np.ndarray:
    """Accuracy gap a - b for each row of (R, 4C) cell counts laid out as class * 4 + 2 * a_ok + b_ok."""
    cells = counts.reshape(len(counts), -1, 4).astype(np.float64)  # (R, C, [neither, b only, a only, both])
    a_right = cells[:, :, 2] + cells[:, :, 3]
    b_right = cells[:, :, 1] + cells[:, :, 3]
    support = cells.sum(axis=2)
    if metric == "micro":
        return (a_right.sum(axis=1) - b_right.sum(axis=1)) / support.sum(axis=1)
    present = support > 0
    per_class_gap = np.where(present, (a_right - b_right) / np.maximum(support, 1), 0.0)
    return per_class_gap.sum(axis=1) / present.sum(axis=1)


# --------------------------------------------------------------------------------------------- summary


def nan_to_none(values: np.ndarray | Sequence[float]) -> list[float | None]:
    """JSON has no NaN: turn NaN entries into None."""
    return [None if np.isnan(v) else float(v) for v in np.asarray(values, dtype=np.float64)]


def evaluate_model(
    y: ArrayLike,
    probs: ArrayLike,
    class_names: Sequence[str],
    pred: ArrayLike | None = None,
    ece_bins: int = 15,
    confidence: ArrayLike | None = None,
) -> dict[str, Any]:
    """Metrics of one model on one labelled set, in the layout used by ``report.json``.

    ``pred`` defaults to the argmax of ``probs``; pass it when the decision rule differs (the hard vote's
    tie rule). ``confidence`` (n,) is each decision's confidence, by default the probability of the
    predicted class (the top probability for argmax decisions). Returns ``accuracy`` (``per_class``
    class -> fraction, ``macro``, ``micro``), ``confidence`` (``per_class`` class -> mean confidence,
    ``mean`` over classes as in the published table, ``micro`` over videos), ``ece`` of those decisions
    and confidences, and ``n``. Classes absent from ``y`` map to None.
    """
    probs = check_probs(probs)
    num_classes = probs.shape[1]
    if len(class_names) != num_classes:
        raise DataError(f"got {len(class_names)} class names for probabilities with {num_classes} columns")
    y = check_labels(y, num_classes)
    pred = np.argmax(probs, axis=1) if pred is None else check_labels(pred, num_classes, "predictions")
    n = _check_same_length(labels=y, probabilities=probs, predictions=pred)
    _require_samples(n)

    acc = per_class_accuracy(y, pred, num_classes)
    decision_conf = probs[np.arange(n), pred] if confidence is None else np.asarray(confidence, dtype=np.float64)
    conf = _mean_per_class(y, decision_conf, num_classes)
    return {
        "accuracy": {
            "per_class": dict(zip(class_names, nan_to_none(acc), strict=True)),
            "macro": float(np.nanmean(acc)),
            "micro": float(np.mean(pred == y)),
        },
        "confidence": {
            "per_class": dict(zip(class_names, nan_to_none(conf), strict=True)),
            "mean": float(np.nanmean(conf)),
            "micro": float(decision_conf.mean()),
        },
        "ece": expected_calibration_error(y, probs, bins=ece_bins, pred=pred, confidence=decision_conf),
        "n": int(n),
    }
