import numpy as np
import pytest

from picojepa.ensemble.aggregation import (
    HARD_VOTE_TIE_RULE,
    Ensemble,
    PrecomputedMember,
    best_single_member,
    fit_stack,
    fit_weights,
    hard_vote,
    oracle_accuracy,
    soft_vote,
    temperature_scale,
    vote_fractions,
)
from picojepa.errors import ConfigError, DataError, PicoJepaError


def one_sample(*member_rows):
    """(M, 1, C) probabilities from one probability row per member."""
    return np.array(member_rows, dtype=np.float64)[:, None, :]


# --------------------------------------------------------------------------------------------- hard vote


def test_majority_wins():
    probs = one_sample([0.6, 0.4, 0.0], [0.1, 0.9, 0.0], [0.2, 0.7, 0.1])
    pred, counts = hard_vote(probs)
    assert pred.tolist() == [1]
    assert counts.tolist() == [[1, 2, 0]]


def test_two_two_tie_broken_by_summed_probability():
    # classes 0 and 2 get two votes each; class 2's summed probability is larger (2.7 vs 1.25).
    probs = one_sample([0.55, 0.05, 0.40], [0.6, 0.0, 0.4], [0.1, 0.0, 0.9], [0.0, 0.0, 1.0])
    pred, counts = hard_vote(probs)
    assert counts.tolist() == [[2, 0, 2]]
    assert pred.tolist() == [2]


def test_two_two_tie_with_equal_sums_goes_to_lower_index():
    probs = one_sample([0.0, 0.7, 0.3], [0.0, 0.6, 0.4], [0.0, 0.3, 0.7], [0.0, 0.4, 0.6])
    pred, counts = hard_vote(probs)
    assert counts.tolist() == [[0, 2, 2]]
    assert pred.tolist() == [1]  # both sums are 2.0 (up to float rounding): the lower index wins


def test_one_one_one_one_tie():
    eye = np.eye(4) * 0.7 + 0.075
    probs = one_sample(*eye)  # each member picks a different class with the same confidence
    assert hard_vote(probs)[0].tolist() == [0]
    probs_sharper = probs.copy()
    probs_sharper[3, 0] = [0.0, 0.0, 0.0, 1.0]  # member 3 is surer of class 3: larger summed probability
    assert hard_vote(probs_sharper)[0].tolist() == [3]


def test_tied_classes_only_compete_among_themselves():
    # class 1 has the largest summed probability but fewer votes than the tied classes 0 and 2.
    # Classes 0 and 2 then tie on summed probability (1.1 each), so the lower index wins.
    probs = one_sample([0.5, 0.45, 0.05], [0.5, 0.45, 0.05], [0.05, 0.45, 0.5], [0.05, 0.45, 0.5], [0.0, 1.0, 0.0])
    pred, votes = hard_vote(probs)
    assert votes.tolist() == [[2, 1, 2]]
    assert pred.tolist() == [0]


def test_vote_fractions_and_tie_rule_text():
    probs = one_sample([0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.6, 0.4])
    assert vote_fractions(probs).tolist() == [[0.75, 0.25]]
    # the CLI quotes HARD_VOTE_TIE_RULE: it must say exactly what hard_vote documents
    assert " ".join(HARD_VOTE_TIE_RULE.split()) in " ".join(hard_vote.__doc__.split())


# --------------------------------------------------------------------------------------------- soft / weights


def test_soft_vote_mean_and_weights():
    probs = one_sample([1.0, 0.0], [0.0, 1.0], [0.5, 0.5])
    assert np.allclose(soft_vote(probs), [[0.5, 0.5]])
    assert np.allclose(soft_vote(probs, weights=[3, 1, 0]), [[0.75, 0.25]])


def test_temperature_is_power_renormalised():
    p = np.array([[0.7, 0.2, 0.1]])
    for t in (0.5, 2.0, 10.0):
        expected = p ** (1 / t) / (p ** (1 / t)).sum()
        assert np.allclose(temperature_scale(p, t), expected)
    assert np.allclose(temperature_scale(np.array([[0.0, 1.0]]), 3.0), [[0.0, 1.0]])  # zeros stay zero


def synthetic_members(n=120, num_classes=3, seed=0):
    """Member 0 is informative, members 1 and 2 are noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n)
    good = np.full((n, num_classes), 0.1)
    good[np.arange(n), y] = 0.8
    good /= good.sum(axis=1, keepdims=True)
    noise = rng.dirichlet(np.ones(num_classes), size=(2, n))
    return np.concatenate([good[None], noise]), y


def test_fit_weights_puts_weight_on_the_good_member():
    probs, y = synthetic_members()
    weights = fit_weights(probs, y)
    assert weights.shape == (3,)
    assert np.all(weights >= 0) and np.isclose(weights.sum(), 1)
    assert weights[0] > 0.95


def test_fit_weights_is_deterministic_and_handles_one_member():
    probs, y = synthetic_members()
    assert np.array_equal(fit_weights(probs, y), fit_weights(probs, y))
    assert fit_weights(probs[:1], y).tolist() == [1.0]


# --------------------------------------------------------------------------------------------- stacking


def test_stack_learns_the_good_member():
    probs, y = synthetic_members(n=300)
    stack = fit_stack(probs, y, seed=0)
    assert np.mean(stack.predict(probs) == y) > 0.9
    assert stack.coef.shape == (3, 9)
    assert np.abs(stack.coef[:, :3]).sum() > np.abs(stack.coef[:, 3:]).sum()


def test_stack_outputs_all_columns_when_validation_lacks_a_class():
    probs, y = synthetic_members(n=200, num_classes=4)
    keep = y != 2
    stack = fit_stack(probs[:, keep], y[keep])
    out = stack.predict_proba(probs)
    assert out.shape == (200, 4)
    assert np.all(out[:, 2] == 0)
    assert np.allclose(out.sum(axis=1), 1)
    assert stack.classes.tolist() == [0, 1, 3]
    # columns stay aligned with class indices: the well-predicted classes land in their own column
    assert np.mean(stack.predict(probs[:, keep]) == y[keep]) > 0.9


def test_stack_with_two_classes_present_and_oof():
    probs, y = synthetic_members(n=200, num_classes=3)
    keep = y != 0
    stack = fit_stack(probs[:, keep], y[keep], cv=3)
    assert stack.coef.shape == (3, 9)
    assert np.all(stack.coef[0] == 0)
    assert stack.oof_proba.shape == (int(keep.sum()), 3)
    assert np.mean(stack.oof_proba.argmax(axis=1) == y[keep]) > 0.9


def test_stack_needs_two_classes():
    probs, _ = synthetic_members(n=10)
    with pytest.raises(DataError, match="at least two classes"):
        fit_stack(probs, np.zeros(10, dtype=int))


# --------------------------------------------------------------------------------------------- isolation


@pytest.mark.parametrize("method", ["weighted", "stack"])
def test_fitting_on_validation_never_sees_test_labels(method):
    probs_val, y_val = synthetic_members(n=150, seed=1)
    probs_test, y_test = synthetic_members(n=90, seed=2)
    y_poisoned = np.random.default_rng(0).permutation(y_test)

    def run(test_labels):
        ens = Ensemble.from_probabilities({"val": probs_val, "test": probs_test}, method=method, seed=0)
        ens.fit("val", y_val)
        fitted = ens.weights_ if method == "weighted" else ens.stack_.coef
        pred = ens.predict("test")
        return fitted, ens.predict_proba("test"), pred, np.mean(pred == test_labels)

    clean, poisoned = run(y_test), run(y_poisoned)
    assert np.array_equal(clean[0], poisoned[0])  # fitted weights / coefficients
    assert np.array_equal(clean[1], poisoned[1])  # test probabilities
    assert np.array_equal(clean[2], poisoned[2])  # test predictions
    assert clean[3] > 0.9 and poisoned[3] < clean[3]  # only the score changes


# ----------------------------------------------------------------------------------------- Ensemble object


class FixedMember:
    def __init__(self, table):
        self.table = table

    def predict_proba(self, X):
        return self.table[np.asarray(X)]


def test_ensemble_methods_match_functional_core():
    probs, y = synthetic_members(n=60)
    members = [FixedMember(p) for p in probs]
    X = np.arange(60)
    vote = Ensemble(members, method="vote")
    assert np.array_equal(vote.predict(X), hard_vote(probs)[0])
    assert np.array_equal(vote.predict_proba(X), vote_fractions(probs))
    soft = Ensemble(members, method="soft", temperature=2.0)
    assert np.allclose(soft.predict_proba(X), soft_vote(probs, temperature=2.0))
    weighted = Ensemble(members, method="weighted").fit(X, y)
    assert np.allclose(weighted.weights_, fit_weights(probs, y))
    fixed = Ensemble(members, method="weighted", weights=[1, 1, 2]).fit(X, y)
    assert np.allclose(fixed.weights_, [0.25, 0.25, 0.5])
    stack = Ensemble(members, method="stack").fit(X, y)
    assert np.allclose(stack.predict_proba(X), fit_stack(probs, y).predict_proba(probs))


def test_precomputed_member_by_rows_and_keys():
    table = np.array([[0.2, 0.8], [0.6, 0.4]])
    assert np.array_equal(PrecomputedMember(table).predict_proba([1]), table[[1]])
    keyed = PrecomputedMember({"test": table})
    assert np.array_equal(keyed.predict_proba("test"), table)
    with pytest.raises(DataError, match="test"):
        keyed.predict_proba("val")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "median"}, "vote, soft, weighted, stack"),
        ({"method": "vote", "weights": [1, 1]}, "not used by method 'vote'"),
        ({"method": "soft", "temperature": 0}, "positive"),
        ({"method": "soft", "weights": [1, -1]}, "non-negative"),
        ({"method": "soft", "weights": [1, 1, 1]}, "one number per member"),
        ({"method": "stack", "stack_features": "raw"}, "log, prob"),
    ],
)
def test_ensemble_rejects_bad_parameters(kwargs, message):
    members = [PrecomputedMember(np.eye(2)), PrecomputedMember(np.eye(2))]
    with pytest.raises(ConfigError, match=message):
        Ensemble(members, **kwargs)


def test_ensemble_must_be_fitted_and_rejects_logits():
    probs, _ = synthetic_members(n=10)
    ens = Ensemble.from_probabilities({"test": probs}, method="stack")
    with pytest.raises(PicoJepaError, match="must be fitted"):
        ens.predict("test")
    with pytest.raises(DataError, match="logits"):
        hard_vote(np.log(probs))


# --------------------------------------------------------------------------------------------- references


def test_best_single_member_uses_validation_and_breaks_ties():
    probs, y = synthetic_members(n=100)
    assert best_single_member(probs, y) == 0
    reordered = probs[[1, 0, 2]]
    assert best_single_member(reordered, y) == 1
    same = np.stack([probs[0], probs[0]])
    assert best_single_member(same, y) == 0


def test_oracle_accuracy():
    probs = np.array(
        [
            [[0.9, 0.1], [0.9, 0.1], [0.9, 0.1]],
            [[0.1, 0.9], [0.9, 0.1], [0.9, 0.1]],
        ]
    )
    y = np.array([1, 1, 0])
    assert oracle_accuracy(probs, y) == pytest.approx(2 / 3)
