"""Aggregating already-trained classifiers: hard vote, soft vote, learned weights and stacking.

The functional core works on member probabilities ``probs`` of shape (M members, n samples, C classes).
:class:`Ensemble` wraps it in a scikit-learn-like object (in the spirit of ``VotingClassifier`` and
``StackingClassifier``, but members are never refitted): ``fit`` only learns the aggregation on a
validation set, so test data never influences weights or the stacking model.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from ..errors import ConfigError, DataError, PicoJepaError
from ..metrics import check_labels, check_probs

METHODS = ("vote", "soft", "weighted", "stack")
STACK_FEATURES = ("log", "prob")
LOG_FLOOR = 1e-6  # probabilities are clipped here before taking logs for stacking features

HARD_VOTE_TIE_RULE = (
    "Each member votes for its most probable class (a tie inside one member goes to the lower class "
    "index). The class with the most votes wins; a tie between classes with the same number of votes "
    "is broken by the larger summed probability over all members among the tied classes, then by the "
    "lower class index."
)


class ProbabilisticClassifier(Protocol):
    def predict_proba(self, X: Any) -> np.ndarray: ...


# --------------------------------------------------------------------------------------------- validation


def _check_member_probs(probs: ArrayLike) -> np.ndarray:
    arr = check_probs(probs, ndim=3, name="member probabilities")
    if arr.shape[0] < 1:
        raise DataError("an ensemble needs at least one member")
    return arr


def _check_temperature(temperature: float) -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.floating)):
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ConfigError(f"temperature must be a positive finite number, got {temperature!r}")
    return float(temperature)


def _check_weights(weights: ArrayLike, num_members: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_members,):
        raise ConfigError(f"weights must hold one number per member ({num_members}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ConfigError(f"weights must be non-negative with a positive sum, got {w.tolist()}")
    return w / w.sum()


def _check_fit_labels(y: ArrayLike, probs: np.ndarray) -> np.ndarray:
    y = check_labels(y, probs.shape[2], "validation labels")
    if len(y) != probs.shape[1]:
        raise DataError(
            f"got {len(y)} validation labels for {probs.shape[1]} samples of member probabilities"
        )
    if len(y) == 0:
        raise DataError("cannot fit an aggregation on an empty validation set")
    return y


def _check_stack_C(C: float) -> None:
    if isinstance(C, bool) or not isinstance(C, (int, float, np.floating)) or not np.isfinite(C) or C <= 0:
        raise ConfigError(
            f"stacking C (inverse regularisation strength) must be a positive number, got {C!r}"
        )


# --------------------------------------------------------------------------------------------- voting


def member_predictions(probs: ArrayLike) -> np.ndarray:
    """Each member's argmax, shape (M, n)."""
    return np.argmax(_check_member_probs(probs), axis=2)


def hard_vote(probs: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote of the members' argmaxes. Returns ``(pred (n,), vote_counts (n, C))``.

    Each member votes for its most probable class (a tie inside one member goes to the lower class
    index). The class with the most votes wins; a tie between classes with the same number of votes
    is broken by the larger summed probability over all members among the tied classes, then by the
    lower class index.
    """
    probs = _check_member_probs(probs)
    num_members, _, num_classes = probs.shape
    votes = np.argmax(probs, axis=2)
    counts = (votes[:, :, None] == np.arange(num_classes)).sum(axis=0)
    tied = counts == counts.max(axis=1, keepdims=True)
    summed = np.where(tied, probs.sum(axis=0), -np.inf)
    # Summed probabilities that differ only by float rounding count as equal, so the index decides.
    best = summed >= summed.max(axis=1, keepdims=True) - 1e-9 * num_members
    return np.argmax(best, axis=1), counts


def vote_fractions(probs: ArrayLike) -> np.ndarray:
    """Share of members voting for each class, shape (n, C): the hard vote's "probabilities"."""
    probs = _check_member_probs(probs)
    return hard_vote(probs)[1] / probs.shape[0]


def temperature_scale(probs: ArrayLike, temperature: float = 1.0) -> np.ndarray:
    """softmax(log p / T) along the class axis, i.e. p^(1/T) renormalised; T > 1 flattens, T < 1 sharpens."""
    temperature = _check_temperature(temperature)
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    with np.errstate(divide="ignore"):
        logits = np.log(probs) / temperature
    logits -= logits.max(axis=-1, keepdims=True)
    scaled = np.exp(logits)
    return scaled / scaled.sum(axis=-1, keepdims=True)


def soft_vote(probs: ArrayLike, temperature: float = 1.0, weights: ArrayLike | None = None) -> np.ndarray:
    """(Weighted) mean of the members' temperature-scaled probabilities, shape (n, C).

    Temperature is applied per member as softmax(log p / T); ``weights`` (one per member, non-negative)
    are normalised to sum to 1 and default to uniform.
    """
    probs = _check_member_probs(probs)
    scaled = temperature_scale(probs, temperature)
    w = np.full(len(probs), 1.0 / len(probs)) if weights is None else _check_weights(weights, len(probs))
    return np.tensordot(w, scaled, axes=1)


def fit_weights(
    probs_val: ArrayLike, y_val: ArrayLike, temperature: float = 1.0, max_iter: int = 500
) -> np.ndarray:
    """Member weights (non-negative, summing to 1) maximising the validation log-likelihood of the soft vote.

    The objective, mean log(sum_m w_m p_m[y]), is concave in the weights, so the constrained optimum found
    by SLSQP from uniform weights is the global one (deterministic, no seed needed).
    """
    probs = _check_member_probs(probs_val)
    y = _check_fit_labels(y_val, probs)
    num_members = probs.shape[0]
    if num_members == 1:
        return np.ones(1)
    # p_true[m, i]: member m's (scaled) probability of sample i's true class.
    p_true = temperature_scale(probs, temperature)[:, np.arange(len(y)), y]

    def negative_log_likelihood(w: np.ndarray) -> tuple[float, np.ndarray]:
        mix = np.maximum(w @ p_true, 1e-12)
        return -float(np.mean(np.log(mix))), -(p_true / mix).mean(axis=1)

    uniform = np.full(num_members, 1.0 / num_members)
    result = minimize(
        negative_log_likelihood,
        uniform,
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * num_members,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}],
        options={"maxiter": max_iter, "ftol": 1e-12},
    )
    weights = np.clip(result.x, 0.0, None)
    if not np.all(np.isfinite(weights)) or weights.sum() <= 0:
        return uniform
    weights /= weights.sum()
    # Never return something worse than the starting point if the optimiser stopped early.
    if negative_log_likelihood(weights)[0] > negative_log_likelihood(uniform)[0]:
        return uniform
    return weights


# --------------------------------------------------------------------------------------------- stacking


def stack_features(probs: ArrayLike, features: str = "log") -> np.ndarray:
    """Concatenate member probabilities (or clipped log-probabilities) per sample: (M, n, C) -> (n, M*C)."""
    probs = _check_member_probs(probs)
    if features not in STACK_FEATURES:
        raise ConfigError(f"stacking features must be one of {', '.join(STACK_FEATURES)}, got {features!r}")
    x = np.log(np.clip(probs, LOG_FLOOR, 1.0)) if features == "log" else probs
    return np.transpose(x, (1, 0, 2)).reshape(probs.shape[1], -1)


@dataclass
class StackModel:
    """Multinomial logistic regression on concatenated member outputs, always returning C columns.

    Classes missing from the fitting labels can never be predicted: their column is 0. ``oof_proba`` holds
    out-of-fold predictions on the fitting set when ``fit_stack(cv=k)`` was used (else None).
    """

    model: LogisticRegression
    num_members: int
    num_classes: int
    features: str = "log"
    oof_proba: np.ndarray | None = field(default=None, repr=False)

    @property
    def classes(self) -> np.ndarray:
        """Classes the meta model saw while fitting (the columns it can give non-zero probability)."""
        return self.model.classes_.astype(np.int64)

    @property
    def coef(self) -> np.ndarray:
        """Coefficients as (C, M*C): row k scores class k; rows of classes never seen are 0."""
        return self._expand_rows(self._one_row_per_class(self.model.coef_))

    @property
    def intercept(self) -> np.ndarray:
        """Intercepts, shape (C,), 0 for classes never seen."""
        return self._expand_rows(self._one_row_per_class(self.model.intercept_[:, None]))[:, 0]

    def predict_proba(self, probs: ArrayLike) -> np.ndarray:
        probs = _check_member_probs(probs)
        if probs.shape[0] != self.num_members or probs.shape[2] != self.num_classes:
            raise DataError(
                f"stack model was fitted on {self.num_members} members x {self.num_classes} classes, "
                f"got probabilities of shape {probs.shape}"
            )
        return self.expand_columns(self.model.predict_proba(stack_features(probs, self.features)))

    def predict(self, probs: ArrayLike) -> np.ndarray:
        return np.argmax(self.predict_proba(probs), axis=1)

    def expand_columns(self, proba: np.ndarray) -> np.ndarray:
        """(n, seen classes) -> (n, C), placing each column at its class index."""
        full = np.zeros((proba.shape[0], self.num_classes))
        full[:, self.classes] = proba
        return full

    def _expand_rows(self, rows: np.ndarray) -> np.ndarray:
        full = np.zeros((self.num_classes, rows.shape[1]))
        full[self.classes] = rows
        return full

    def _one_row_per_class(self, per_class: np.ndarray) -> np.ndarray:
        # For two classes scikit-learn keeps a single row scoring the second class; split it symmetrically.
        if len(self.classes) == 2 and per_class.shape[0] == 1:
            return np.vstack([-per_class / 2, per_class / 2])
        return per_class


def fit_stack(
    probs_val: ArrayLike,
    y_val: ArrayLike,
    seed: int = 0,
    features: str = "log",
    C: float = 1.0,
    cv: int | None = None,
    max_iter: int = 1000,
) -> StackModel:
    """Fit a multinomial logistic regression on the members' validation outputs.

    ``C`` is the inverse L2 strength. Classes absent from ``y_val`` get probability 0 (the model still
    returns C columns in class order). With ``cv=k`` the fitting set is also predicted out-of-fold
    (``cross_val_predict``, stratified, shuffled with ``seed``) and stored as ``StackModel.oof_proba``:
    use it to judge the meta model honestly when the fitting set is all you have.
    """
    probs = _check_member_probs(probs_val)
    y = _check_fit_labels(y_val, probs)
    _check_stack_C(C)
    present = np.unique(y)
    if len(present) < 2:
        raise DataError(
            f"stacking needs validation labels of at least two classes, but all {len(y)} are "
            f"class {present[0]}"
        )
    x = stack_features(probs, features)
    model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    stack = StackModel(model=model, num_members=probs.shape[0], num_classes=probs.shape[2], features=features)
    if cv is not None:
        stack.oof_proba = _out_of_fold(stack, x, y, cv, seed, C, max_iter)
    return stack


def _out_of_fold(
    stack: StackModel, x: np.ndarray, y: np.ndarray, cv: int, seed: int, C: float, max_iter: int
) -> np.ndarray:
    smallest = int(np.bincount(y)[np.unique(y)].min())
    if not isinstance(cv, (int, np.integer)) or cv < 2 or cv > smallest:
        raise ConfigError(
            f"cv must be an integer between 2 and the smallest class count of the fitting labels "
            f"({smallest}), "
            f"got {cv!r}"
        )
    folds = StratifiedKFold(n_splits=int(cv), shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        oof = cross_val_predict(
            LogisticRegression(C=C, max_iter=max_iter, random_state=seed),
            x,
            y,
            cv=folds,
            method="predict_proba",
        )
    return stack.expand_columns(oof)  # cross_val_predict orders columns like model.classes_


# --------------------------------------------------------------------------------------------- references


def best_single_member(probs_val: ArrayLike, y_val: ArrayLike) -> int:
    """Index of the member with the highest validation accuracy.

    Ties go to the higher validation log-likelihood, then to the lower member index.
    """
    probs = _check_member_probs(probs_val)
    y = _check_fit_labels(y_val, probs)
    rows = np.arange(len(y))
    accuracy = (np.argmax(probs, axis=2) == y).mean(axis=1)
    log_lik = np.log(np.clip(probs[:, rows, y], 1e-12, None)).mean(axis=1)
    # lexsort sorts by the last key first; negate to rank best first, index order keeps the lower member.
    order = np.lexsort((np.arange(len(probs)), -log_lik, -accuracy))
    return int(order[0])


def oracle_accuracy(probs: ArrayLike, y: ArrayLike) -> float:
    """Fraction of samples that at least one member classifies correctly (an upper bound for selection)."""
    probs = _check_member_probs(probs)
    y = check_labels(y, probs.shape[2])
    if len(y) != probs.shape[1] or len(y) == 0:
        raise DataError(f"got {len(y)} labels for {probs.shape[1]} samples of member probabilities")
    return float(np.mean((np.argmax(probs, axis=2) == y).any(axis=0)))


# --------------------------------------------------------------------------------------------- objects


class PrecomputedMember:
    """A member whose probabilities are already known, so experiments need not recompute them.

    Built from a mapping ``{key: (n_key, C) probabilities}`` (then ``X`` is a key such as ``"val"``) or from
    one (n, C) array (then ``X`` is an array of row indices).
    """

    def __init__(self, probabilities: Mapping[str, ArrayLike] | ArrayLike) -> None:
        if isinstance(probabilities, Mapping):
            self.table: dict[str, np.ndarray] | np.ndarray = {
                str(k): check_probs(v, name=f"probabilities for {k!r}") for k, v in probabilities.items()
            }
        else:
            self.table = check_probs(probabilities)

    def predict_proba(self, X: Any) -> np.ndarray:
        if isinstance(self.table, dict):
            if not isinstance(X, str) or X not in self.table:
                raise DataError(f"precomputed member has probabilities for {sorted(self.table)}, got X={X!r}")
            return self.table[X]
        idx = np.asarray(X)
        if (
            idx.ndim != 1
            or not np.issubdtype(idx.dtype, np.integer)
            or (idx.size and idx.max() >= len(self.table))
        ):
            raise DataError(f"X must be row indices below {len(self.table)} for an array-backed member")
        return self.table[idx]


class Ensemble:
    """Aggregate trained members, each exposing ``predict_proba(X) -> (n, C)``.

    Methods:
      * ``vote``: hard majority vote (see :data:`HARD_VOTE_TIE_RULE`); ``predict_proba`` returns the vote
        fractions (share of members voting for each class), ``predict`` applies the tie rule.
      * ``soft``: mean of temperature-scaled probabilities, optionally with fixed ``weights``.
      * ``weighted``: soft vote whose weights are fitted on validation (:func:`fit_weights`) unless given.
      * ``stack``: logistic regression on member outputs fitted on validation (:func:`fit_stack`).

    ``fit(X_val, y_val)`` learns the aggregation only (no-op for vote/soft); members are never refitted.
    """

    def __init__(
        self,
        members: Sequence[ProbabilisticClassifier],
        method: str = "vote",
        temperature: float = 1.0,
        weights: ArrayLike | None = None,
        seed: int = 0,
        stack_features: str = "log",
        stack_C: float = 1.0,
    ) -> None:
        members = list(members)
        if not members:
            raise ConfigError("an ensemble needs at least one member")
        bad = [i for i, m in enumerate(members) if not callable(getattr(m, "predict_proba", None))]
        if bad:
            raise ConfigError(f"members must have a predict_proba(X) method; members {bad} do not")
        if method not in METHODS:
            raise ConfigError(f"unknown ensemble method {method!r}; choose one of {', '.join(METHODS)}")
        if weights is not None and method in ("vote", "stack"):
            raise ConfigError(f"weights are not used by method {method!r}; use method 'soft' or 'weighted'")
        if stack_features not in STACK_FEATURES:
            raise ConfigError(
                f"stack_features must be one of {', '.join(STACK_FEATURES)}, got {stack_features!r}"
            )
        _check_stack_C(stack_C)
        self.members = members
        self.method = method
        self.temperature = _check_temperature(temperature)
        self.weights = None if weights is None else _check_weights(weights, len(members))
        self.seed = seed
        self.stack_features = stack_features
        self.stack_C = stack_C
        self.weights_: np.ndarray | None = self.weights
        self.stack_: StackModel | None = None

    @classmethod
    def from_probabilities(cls, probabilities: Mapping[str, ArrayLike], **kwargs: Any) -> Ensemble:
        """Ensemble over precomputed member outputs ``{key: (M, n_key, C)}``; then use keys as X.

        Example: ``Ensemble.from_probabilities({"val": pv, "test": pt}, method="weighted").fit("val", y_val)``
        then ``.predict("test")``.
        """
        arrays = {k: _check_member_probs(v) for k, v in probabilities.items()}
        counts = {k: a.shape[0] for k, a in arrays.items()}
        if not arrays or len(set(counts.values())) != 1:
            raise DataError(f"every key needs the same number of members, got {counts}")
        num_members = next(iter(counts.values()))
        members = [PrecomputedMember({k: a[m] for k, a in arrays.items()}) for m in range(num_members)]
        return cls(members, **kwargs)

    def member_proba(self, X: Any) -> np.ndarray:
        """Stacked member probabilities, shape (M, n, C)."""
        outputs = [np.asarray(m.predict_proba(X), dtype=np.float64) for m in self.members]
        shapes = {o.shape for o in outputs}
        if len(shapes) != 1:
            raise DataError(f"members returned probabilities of different shapes: {sorted(shapes)}")
        return _check_member_probs(np.stack(outputs))

    def fit(self, X_val: Any, y_val: ArrayLike) -> Ensemble:
        if self.method in ("vote", "soft") or (self.method == "weighted" and self.weights is not None):
            return self
        probs = self.member_proba(X_val)
        if self.method == "weighted":
            self.weights_ = fit_weights(probs, y_val, temperature=self.temperature)
        else:
            self.stack_ = fit_stack(
                probs, y_val, seed=self.seed, features=self.stack_features, C=self.stack_C
            )
        return self

    def aggregate(self, probs: ArrayLike) -> np.ndarray:
        """Ensemble probabilities (vote fractions for ``vote``) from member probabilities (M, n, C)."""
        probs = _check_member_probs(probs)
        if self.method == "vote":
            return vote_fractions(probs)
        if self.method == "soft":
            return soft_vote(probs, self.temperature, self.weights)
        if self.method == "weighted":
            self._require_fitted(self.weights_)
            return soft_vote(probs, self.temperature, self.weights_)
        self._require_fitted(self.stack_)
        return self.stack_.predict_proba(probs)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.aggregate(self.member_proba(X))

    def predict(self, X: Any) -> np.ndarray:
        probs = self.member_proba(X)
        if self.method == "vote":
            return hard_vote(probs)[0]
        return np.argmax(self.aggregate(probs), axis=1)

    def _require_fitted(self, fitted: object) -> None:
        if fitted is None:
            raise PicoJepaError(
                f"Ensemble(method={self.method!r}) must be fitted with fit(X_val, y_val) first"
            )
