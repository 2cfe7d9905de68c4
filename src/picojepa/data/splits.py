"""Class-stratified train/val/test splits, disjoint training shards, and ``splits.json`` on disk.

Splits and shards are index arrays into the video list. They are seeded, so the same labels and seed
always give the same assignment, and stored as video paths so a run can be audited and reproduced.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ..errors import ConfigError, DataError
from ..utils import write_json

SPLIT_NAMES = ("train", "val", "test")
SPLITS_FORMAT_VERSION = 1


class ShardCoverageWarning(UserWarning):
    """Some shard has no video of some class (the class has fewer training videos than there are shards)."""


# --------------------------------------------------------------------------------------------- helpers


def _as_labels(labels: ArrayLike) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size == 0:
        raise DataError(f"labels must be a non-empty 1-D sequence of class indices, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        raise DataError("labels must be non-negative integer class indices")
    return arr.astype(np.int64)


def _class_name(label: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= label < len(class_names):
        return f"class {label} ({class_names[label]!r})"
    return f"class {label}"


def _allocate(n: int, exact: np.ndarray, deficit: np.ndarray, minimum: int) -> np.ndarray:
    """Integer counts summing to ``n``, each >= ``minimum`` and otherwise ``floor`` or ``ceil`` of ``exact``.

    Which entries round up is decided by ``deficit`` (how far each split has fallen behind its share over
    the classes done so far), so overall split sizes track the fractions too. ``argmax`` takes the first
    index on ties, which keeps the result deterministic.
    """
    counts = np.maximum(np.floor(exact).astype(np.int64), minimum)
    while counts.sum() > n:  # only when the minimum forced some counts up
        above_share = np.where(counts > minimum, counts - exact - deficit, -np.inf)
        counts[np.argmax(above_share)] -= 1
    while counts.sum() < n:
        behind = np.where(counts < np.ceil(exact), exact + deficit - counts, -np.inf)
        counts[np.argmax(behind)] += 1
    return counts


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (len(SPLIT_NAMES),) or not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise ConfigError(
            f"split fractions must be three positive numbers (train, val, test), got {fractions!r}"
        )
    if abs(f.sum() - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must sum to 1, got {fractions!r} (sum {f.sum():.4f})")
    return f


# --------------------------------------------------------------------------------------------- splitting


def stratified_split(
    labels: Sequence[int] | ArrayLike,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Split video indices into ``train``/``val``/``test`` (sorted int64 arrays), stratified by class.

    Every class gets at least one video in every split, so each class needs at least 3 videos. Within a
    class each split gets the floor or ceiling of its share of the class (beyond the one-video minimum);
    which splits round up is chosen so the overall split sizes also stay close to ``fractions``.
    """
    y = _as_labels(labels)
    f = _check_fractions(fractions)
    counts_per_class = np.bincount(y)
    for label, count in enumerate(counts_per_class):
        if 0 < count < len(SPLIT_NAMES):
            raise DataError(
                f"{_class_name(label, class_names)} has only {count} video(s); every class needs at least "
                f"{len(SPLIT_NAMES)} (one each for train, val and test)"
            )

    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in SPLIT_NAMES]
    deficit = np.zeros(len(SPLIT_NAMES))
    for label in np.flatnonzero(counts_per_class):
        members = rng.permutation(np.flatnonzero(y == label))
        exact = len(members) * f
        counts = _allocate(len(members), exact, deficit, minimum=1)
        deficit += exact - counts
        for part, chunk in zip(parts, np.split(members, np.cumsum(counts)[:-1]), strict=True):
            part.append(chunk)
    return {name: np.sort(np.concatenate(part)) for name, part in zip(SPLIT_NAMES, parts, strict=True)}


def group_keys(paths: Sequence[str | Path], pattern: str, strict: bool = True) -> list[str | None]:
    """The group of every video: the first capture group of ``pattern`` searched in its path (the whole match
    when the pattern has no group), e.g. ``_g(\\d+)_`` for UCF101's subjects or ``^(.*)_\\d+_\\d+`` for
    clips cut from one source video. A path the pattern does not match is an error (``strict``: labelled videos
    must all have a group), or has no group (None: e.g. a pretraining pool's unrelated videos)."""
    import re

    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise ConfigError(f"--group-by {pattern!r} is not a valid regular expression: {e}") from None
    keys, unmatched = [], []
    for path in paths:
        text = Path(path).as_posix()
        match = regex.search(text)
        if match is None:
            unmatched.append(text)
            keys.append(None)
            continue
        keys.append(match.group(1) if regex.groups else match.group(0))
    if unmatched and strict:
        raise DataError(f"--group-by {pattern!r} matches no part of {len(unmatched)} video path(s), e.g. "
                        f"{unmatched[0]!r}; every video needs a group")
    return keys


def grouped_stratified_split(
    labels: Sequence[int] | ArrayLike,
    groups: Sequence[str],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Like :func:`stratified_split`, but whole groups go to one split: no group (a subject, a source video)
    is ever on both sides. See :func:`assign_parts`."""
    f = _check_fractions(fractions)
    part = assign_parts(labels, groups, f, seed, SPLIT_NAMES, class_names)
    return {name: np.flatnonzero(part == k) for k, name in enumerate(SPLIT_NAMES)}


def stratified_folds(
    labels: Sequence[int] | ArrayLike,
    k: int,
    seed: int = 0,
    groups: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """``k`` disjoint folds covering every video once, stratified by class; with ``groups``, whole groups per
    fold (leave-groups-out). Each fold must hold every class."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise ConfigError(f"the number of folds must be an integer ≥ 2, got {k!r}")
    y = _as_labels(labels)
    keys = list(groups) if groups is not None else [str(i) for i in range(len(y))]
    part = assign_parts(y, keys, np.full(k, 1.0 / k), seed, [f"fold {i + 1}" for i in range(k)], class_names)
    return [np.flatnonzero(part == i) for i in range(k)]


def assign_parts(
    labels: Sequence[int] | ArrayLike,
    groups: Sequence[str],
    fractions: Sequence[float] | np.ndarray,
    seed: int,
    part_names: Sequence[str],
    class_names: Sequence[str] | None = None,
) -> np.ndarray:
    """The part (index into ``fractions``) of every video, whole groups at a time. Groups are dealt largest
    first, in a seeded order, each to the part furthest behind its share for the group's classes — first to
    a part that has none of the group's main class yet, so every class reaches every part when it has at
    least as many groups as there are parts (else a :class:`DataError` says which class is short)."""
    y = _as_labels(labels)
    f = np.asarray(fractions, dtype=np.float64)
    if len(groups) != len(y):
        raise DataError(f"got {len(groups)} group keys for {len(y)} videos")
    keys = np.asarray([str(g) for g in groups])
    _, members = np.unique(keys, return_inverse=True)
    num_classes = int(y.max()) + 1
    per_group = np.zeros((int(members.max()) + 1, num_classes), dtype=np.int64)
    np.add.at(per_group, (members, y), 1)
    totals = per_group.sum(axis=0)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(per_group))
    order = order[np.argsort(-per_group[order].sum(axis=1), kind="stable")]
    counts = np.zeros((len(f), num_classes), dtype=np.float64)
    assign = np.empty(len(per_group), dtype=np.int64)
    for g in order:
        mix = per_group[g]
        main = int(np.argmax(mix))
        deficit = ((f[:, None] * totals[None, :] - counts) * mix[None, :]).sum(axis=1) / max(mix.sum(), 1)
        lacking = counts[:, main] == 0
        choice = int(np.argmax(np.where(lacking, deficit, -np.inf))) if lacking.any() else int(np.argmax(deficit))
        assign[g] = choice
        counts[choice] += mix
    for label in np.flatnonzero(totals):
        empty = [part_names[p] for p in range(len(f)) if counts[p, label] == 0]
        if empty:
            n_groups = int((per_group[:, label] > 0).sum())
            unit = "group(s)" if len(per_group) < len(y) else "video(s)"
            raise DataError(f"{_class_name(int(label), class_names)} has {n_groups} {unit}, so {', '.join(empty)} "
                            f"would have none of it; every class needs at least {len(f)} {unit.rstrip('(s)')}s "
                            f"here")
    return assign[members]


def stratified_shards(
    indices: ArrayLike,
    labels: Sequence[int] | ArrayLike,
    n: int,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> list[np.ndarray]:
    """Split ``indices`` into ``n`` disjoint class-stratified shards (sorted int64 arrays).

    ``labels`` is the label of every video (indexed by ``indices``), e.g. the full manifest's labels and
    ``indices = splits["train"]``. Videos of each class are shuffled and dealt round-robin, continuing
    from shard to shard across classes, so per class the shards differ by at most one video and the
    shard sizes overall differ by at most one too.

    A class with fewer videos than shards cannot reach every shard: this is allowed but emits a
    :class:`ShardCoverageWarning` naming the shards and classes (see :func:`missing_classes_per_shard`).
    A shard left with no video at all (``n`` larger than the number of videos) raises :class:`DataError`.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"the number of shards must be a positive integer, got {n!r}")
    y = _as_labels(labels)
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise DataError("indices must be a 1-D array of integer video indices")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= len(y)):
        raise DataError(
            f"indices must lie in [0, {len(y)}) (one label per video), got {idx.min()}..{idx.max()}"
        )
    if len(np.unique(idx)) != len(idx):
        raise DataError("indices contain duplicates; shards must be disjoint")
    if len(idx) < n:
        raise DataError(f"cannot make {n} shards from {len(idx)} videos: some shard would be empty")

    rng = np.random.default_rng(seed)
    shards: list[list[int]] = [[] for _ in range(n)]
    next_shard = 0
    sub_labels = y[idx]
    for label in np.unique(sub_labels):
        for video in rng.permutation(idx[sub_labels == label]):
            shards[next_shard].append(int(video))
            next_shard = (next_shard + 1) % n
    result = [np.sort(np.asarray(s, dtype=np.int64)) for s in shards]

    missing = missing_classes_per_shard(result, y, classes=np.unique(sub_labels))
    if missing:
        detail = "; ".join(
            f"shard {k + 1} lacks {', '.join(_class_name(c, class_names) for c in cls)}"
            for k, cls in missing.items()
        )
        warnings.warn(
            f"some shards have no video of some class: {detail}", ShardCoverageWarning, stacklevel=2
        )
    return result


def missing_classes_per_shard(
    shards: Sequence[ArrayLike], labels: Sequence[int] | ArrayLike, classes: ArrayLike | None = None
) -> dict[int, list[int]]:
    """``{shard index (0-based): [classes with no video in it]}`` for shards missing some class.

    ``classes`` defaults to every class present in the union of the shards.
    """
    y = _as_labels(labels)
    shard_labels = [set(y[np.asarray(s, dtype=np.int64)].tolist()) for s in shards]
    wanted = set().union(*shard_labels) if classes is None else {int(c) for c in np.asarray(classes)}
    return {k: sorted(wanted - present) for k, present in enumerate(shard_labels) if wanted - present}


# --------------------------------------------------------------------------------------------- splits.json


@dataclass
class SplitAssignment:
    """Contents of ``splits.json``: video paths per split (and per shard), their labels, classes, seed."""

    classes: list[str]
    splits: dict[str, list[str]]
    labels: dict[str, str]  # video path -> class name
    shards: list[list[str]] | None = None
    seed: int | None = None

    def label_indices(self, videos: Sequence[str]) -> np.ndarray:
        """Class indices of the given videos, in the order of :attr:`classes`."""
        position = {name: i for i, name in enumerate(self.classes)}
        return np.asarray([position[self.labels[v]] for v in videos], dtype=np.int64)

    def counts(self) -> dict[str, Any]:
        """Videos per split (and per shard, under ``shards``), as shown in reports."""
        counts: dict[str, Any] = {name: len(self.splits[name]) for name in SPLIT_NAMES}
        if self.shards is not None:
            counts["shards"] = [len(s) for s in self.shards]
        return counts


def save_splits(
    path: str | Path,
    videos: Sequence[str],
    labels: Sequence[int] | ArrayLike,
    class_names: Sequence[str],
    splits: Mapping[str, ArrayLike],
    shards: Sequence[ArrayLike] | None = None,
    seed: int | None = None,
) -> SplitAssignment:
    """Write ``splits.json`` (atomically) from index arrays into ``videos``; returns what was written.

    Shards must lie inside the train split, so val/test videos can never leak into member training.
    """
    videos = [str(v) for v in videos]
    y = _as_labels(labels)
    if len(y) != len(videos):
        raise DataError(f"got {len(videos)} videos but {len(y)} labels")
    if y.max() >= len(class_names):
        raise DataError(
            f"labels reach class {int(y.max())} but only {len(class_names)} class names were given"
        )
    names = {name: _index_list(splits, name, len(videos)) for name in SPLIT_NAMES}
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise ConfigError(f"unknown split names {unknown}; expected exactly {', '.join(SPLIT_NAMES)}")
    assignment = SplitAssignment(
        classes=[str(c) for c in class_names],
        splits={name: [videos[i] for i in idx] for name, idx in names.items()},
        labels={},
        shards=None
        if shards is None
        else [[videos[i] for i in _indices(s, len(videos), f"shard {k + 1}")] for k, s in enumerate(shards)],
        seed=None if seed is None else int(seed),
    )
    used = {v for part in assignment.splits.values() for v in part}
    assignment.labels = {v: assignment.classes[int(y[i])] for i, v in enumerate(videos) if v in used}
    _validate_assignment(assignment, source="splits to save")
    write_json(path, _to_json(assignment))
    return assignment


def load_splits(path: str | Path) -> SplitAssignment:
    """Read and validate ``splits.json``: structure, known classes, and disjoint splits and shards."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"splits file not found: {path}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    assignment = _from_json(raw, path)
    _validate_assignment(assignment, source=str(path))
    return assignment


def _indices(idx: ArrayLike, num_videos: int, what: str) -> list[int]:
    arr = np.asarray(idx)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise DataError(f"{what} must be a 1-D array of integer video indices")
    if arr.size and (arr.min() < 0 or arr.max() >= num_videos):
        raise DataError(f"{what} has indices outside [0, {num_videos})")
    return arr.astype(np.int64).tolist()


def _index_list(splits: Mapping[str, ArrayLike], name: str, num_videos: int) -> list[int]:
    if name not in splits:
        raise ConfigError(f"splits must contain {', '.join(SPLIT_NAMES)}; {name!r} is missing")
    return _indices(splits[name], num_videos, f"split {name!r}")


def _to_json(a: SplitAssignment) -> dict[str, Any]:
    return {
        "version": SPLITS_FORMAT_VERSION,
        "seed": a.seed,
        "classes": a.classes,
        "counts": a.counts(),
        "splits": a.splits,
        "shards": a.shards,
        "labels": a.labels,
    }


def _from_json(raw: Any, path: Path) -> SplitAssignment:
    def fail(problem: str) -> DataError:
        return DataError(f"{path}: {problem}")

    if not isinstance(raw, dict):
        raise fail("expected a JSON object at the top level")
    missing = [key for key in ("classes", "splits", "labels") if key not in raw]
    if missing:
        raise fail(f"missing key(s) {', '.join(missing)}")
    if raw.get("version", SPLITS_FORMAT_VERSION) != SPLITS_FORMAT_VERSION:
        raise fail(
            f"unsupported version {raw.get('version')!r} (this pico-JEPA reads {SPLITS_FORMAT_VERSION})"
        )
    if not _is_str_list(raw["classes"]):
        raise fail("'classes' must be a list of class names")
    splits = raw["splits"]
    if not isinstance(splits, dict) or set(splits) != set(SPLIT_NAMES):
        raise fail(f"'splits' must be an object with exactly the keys {', '.join(SPLIT_NAMES)}")
    for name in SPLIT_NAMES:
        if not _is_str_list(splits[name]):
            raise fail(f"split {name!r} must be a list of video paths")
    shards = raw.get("shards")
    if shards is not None and not (isinstance(shards, list) and all(_is_str_list(s) for s in shards)):
        raise fail("'shards' must be null or a list of lists of video paths")
    labels = raw["labels"]
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise fail("'labels' must map each video path to its class name")
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise fail(f"'seed' must be an integer or null, got {seed!r}")
    return SplitAssignment(
        classes=list(raw["classes"]),
        splits={name: list(splits[name]) for name in SPLIT_NAMES},
        labels=dict(labels),
        shards=None if shards is None else [list(s) for s in shards],
        seed=seed,
    )


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _validate_assignment(a: SplitAssignment, source: str) -> None:
    def fail(problem: str) -> DataError:
        return DataError(f"{source}: {problem}")

    if len(set(a.classes)) != len(a.classes):
        raise fail("class names are not unique")
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for video in a.splits[name]:
            if video in seen:
                where = (
                    "twice in split " + name if seen[video] == name else f"in both {seen[video]} and {name}"
                )
                raise fail(f"video {video!r} appears {where}; splits must be disjoint")
            seen[video] = name
    unlabeled = [v for v in seen if v not in a.labels]
    if unlabeled:
        raise fail(f"{len(unlabeled)} video(s) have no label, e.g. {unlabeled[0]!r}")
    unknown = sorted({c for v, c in a.labels.items() if v in seen and c not in a.classes})
    if unknown:
        raise fail(f"labels use unknown class(es) {unknown}; known classes: {a.classes}")
    if a.shards is not None:
        _validate_shards(a.shards, set(a.splits["train"]), fail)


def _validate_shards(shards: list[list[str]], train: set[str], fail: Any) -> None:
    owner: dict[str, int] = {}
    for k, shard in enumerate(shards, start=1):
        if not shard:
            raise fail(f"shard {k} is empty")
        outside = [v for v in shard if v not in train]
        if outside:
            raise fail(f"shard {k} has {len(outside)} video(s) outside the train split, e.g. {outside[0]!r}")
        for video in shard:
            if video in owner:
                raise fail(
                    f"video {video!r} is in shard {owner[video]} and shard {k}; shards must be disjoint"
                )
            owner[video] = k
