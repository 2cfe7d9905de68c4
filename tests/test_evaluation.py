import math
import time

import numpy as np
import pytest

from picojepa.errors import ConfigError, DataError
from picojepa.metrics import (
    confidence_per_class,
    confusion_matrix,
    evaluate_model,
    expected_calibration_error,
    macro_accuracy,
    mean_confidence,
    micro_accuracy,
    paired_bootstrap_gap,
    pairwise_disagreement,
    per_class_accuracy,
)

Y = np.array([0, 0, 0, 1, 1, 2])
PRED = np.array([0, 0, 1, 1, 0, 2])


def test_accuracies_and_confusion():
    assert confusion_matrix(Y, PRED, 3).tolist() == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert np.allclose(per_class_accuracy(Y, PRED, 3), [2 / 3, 1 / 2, 1])
    assert micro_accuracy(Y, PRED) == pytest.approx(4 / 6)
    assert macro_accuracy(Y, PRED, 3) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_absent_class_is_nan_and_ignored_by_macro():
    acc = per_class_accuracy(Y, PRED, 4)
    assert math.isnan(acc[3])
    assert macro_accuracy(Y, PRED, 4) == pytest.approx(macro_accuracy(Y, PRED, 3))


def test_confidence_is_mean_top_probability_per_true_class():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 0, 1])
    assert np.allclose(confidence_per_class(y, probs), [0.75, 0.7])
    assert mean_confidence(probs) == pytest.approx((0.9 + 0.6 + 0.7) / 3)


def test_ece_known_values():
    # Always confident 1.0 and always right: perfectly calibrated.
    assert expected_calibration_error([0, 1], np.eye(2)) == 0.0
    # Confidence 0.8 everywhere, accuracy 0.5: ECE = |0.5 - 0.8|.
    probs = np.array([[0.8, 0.2]] * 4)
    assert expected_calibration_error([0, 0, 1, 1], probs) == pytest.approx(0.3)
    # Two bins: {0.6 right, 0.6 wrong} -> |0.5-0.6|, {1.0 right} -> 0; weights 2/3 and 1/3.
    probs = np.array([[0.6, 0.4], [0.6, 0.4], [1.0, 0.0]])
    assert expected_calibration_error([0, 1, 0], probs, bins=10) == pytest.approx(2 / 3 * 0.1)


def test_pairwise_disagreement():
    preds = np.array([[0, 1, 2, 0], [0, 1, 2, 1], [1, 0, 2, 1]])
    mean, matrix = pairwise_disagreement(preds)
    assert matrix.tolist() == [[0, 0.25, 0.75], [0.25, 0, 0.5], [0.75, 0.5, 0]]
    assert mean == pytest.approx(0.5)
    assert math.isnan(pairwise_disagreement(preds[:1])[0])


# --------------------------------------------------------------------------------------------- bootstrap


@pytest.mark.parametrize("metric", ["micro", "macro"])
def test_bootstrap_identical_models(metric):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    out = paired_bootstrap_gap(y, pred, pred, metric=metric)
    assert out["mean"] == 0 and out["ci95"] == [0.0, 0.0]
    assert out["ci_includes_zero"] and out["p_value"] == 1.0


@pytest.mark.parametrize("metric", ["micro", "macro"])
def test_bootstrap_always_right_vs_always_wrong(metric):
    y = np.arange(50) % 5
    out = paired_bootstrap_gap(y, y, (y + 1) % 5, metric=metric)
    assert out["mean"] == 1 and out["ci95"] == [1.0, 1.0]
    assert out["fraction_a_better"] == 1.0 and not out["ci_includes_zero"]
    reverse = paired_bootstrap_gap(y, (y + 1) % 5, y, metric=metric)
    assert reverse["mean"] == -1 and reverse["fraction_b_better"] == 1.0


def test_bootstrap_ci_covers_true_difference_and_matches_index_resampling():
    rng = np.random.default_rng(1)
    n = 3000
    y = rng.integers(0, 5, n)
    a_right, b_right = rng.random(n) < 0.8, rng.random(n) < 0.7  # true gap 0.1
    pred_a, pred_b = np.where(a_right, y, (y + 1) % 5), np.where(b_right, y, (y + 2) % 5)
    out = paired_bootstrap_gap(y, pred_a, pred_b, n_resamples=4000, seed=3)
    low, high = out["ci95"]
    assert low < 0.1 < high
    assert out["mean"] == pytest.approx(np.mean(a_right) - np.mean(b_right))

    # The multinomial shortcut has the distribution of naive index resampling.
    idx = np.random.default_rng(5).integers(0, n, size=(4000, n))
    naive = (a_right.astype(float) - b_right)[idx].mean(axis=1)
    assert np.percentile(naive, [2.5, 97.5]) == pytest.approx([low, high], abs=0.004)


def test_bootstrap_macro_matches_index_resampling():
    rng = np.random.default_rng(2)
    n = 400
    y = np.repeat(np.arange(4), [40, 60, 100, 200])
    pred_a = np.where(rng.random(n) < np.array([0.9, 0.5, 0.7, 0.8])[y], y, (y + 1) % 4)
    pred_b = np.where(rng.random(n) < 0.7, y, (y + 1) % 4)
    out = paired_bootstrap_gap(y, pred_a, pred_b, n_resamples=3000, metric="macro")
    assert out["mean"] == pytest.approx(macro_accuracy(y, pred_a, 4) - macro_accuracy(y, pred_b, 4))
    idx = np.random.default_rng(9).integers(0, n, size=(3000, n))
    naive = [macro_accuracy(y[i], pred_a[i], 4) - macro_accuracy(y[i], pred_b[i], 4) for i in idx]
    assert np.percentile(naive, [2.5, 97.5]) == pytest.approx(out["ci95"], abs=0.01)


def test_bootstrap_is_seeded_and_fast():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 10_000)
    a, b = np.where(rng.random(10_000) < 0.7, y, 0), np.where(rng.random(10_000) < 0.6, y, 0)
    start = time.perf_counter()
    first = paired_bootstrap_gap(y, a, b, n_resamples=10_000, seed=4, metric="macro")
    assert time.perf_counter() - start < 2.0
    assert first == paired_bootstrap_gap(y, a, b, n_resamples=10_000, seed=4, metric="macro")


def test_bootstrap_rejects_bad_settings():
    with pytest.raises(ConfigError, match="micro, macro"):
        paired_bootstrap_gap(Y, PRED, PRED, metric="f1")
    with pytest.raises(ConfigError, match="n_resamples"):
        paired_bootstrap_gap(Y, PRED, PRED, n_resamples=0)
    with pytest.raises(DataError, match="same number"):
        paired_bootstrap_gap(Y, PRED[:3], PRED)


# --------------------------------------------------------------------------------------------- summary


def test_evaluate_model_structure():
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    out = evaluate_model([0, 1, 1], probs, ["cat", "dog", "eel"])
    assert out["accuracy"]["per_class"] == {"cat": 1.0, "dog": 0.5, "eel": None}
    assert out["accuracy"]["macro"] == pytest.approx(0.75)
    assert out["accuracy"]["micro"] == pytest.approx(2 / 3)
    assert out["confidence"]["per_class"]["cat"] == pytest.approx(0.9)
    assert out["confidence"]["per_class"]["dog"] == pytest.approx(0.7)
    assert out["confidence"]["mean"] == pytest.approx(0.8)
    assert out["n"] == 3 and 0 <= out["ece"] <= 1
    # an explicit prediction overrides the argmax (used for the hard vote's tie rule)
    assert evaluate_model([0, 1, 1], probs, ["cat", "dog", "eel"], pred=[0, 1, 1])["accuracy"]["micro"] == 1.0


def test_input_validation():
    with pytest.raises(DataError, match="logits"):
        evaluate_model([0], np.array([[2.0, -1.0]]), ["a", "b"])
    with pytest.raises(DataError, match="class names"):
        evaluate_model([0], np.array([[1.0, 0.0]]), ["a"])
    with pytest.raises(DataError, match="only 2 classes"):
        confusion_matrix([0, 2], [0, 1], 2)
