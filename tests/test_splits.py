import json
import warnings

import numpy as np
import pytest

from picojepa.data.splits import (
    SPLIT_NAMES,
    ShardCoverageWarning,
    load_splits,
    missing_classes_per_shard,
    save_splits,
    stratified_shards,
    stratified_split,
)
from picojepa.errors import ConfigError, DataError

LABELS = np.repeat(np.arange(5), [3, 4, 7, 10, 23])  # includes classes at the 3-video minimum
SHARD_LABELS = np.repeat(np.arange(5), [6, 8, 9, 12, 25])  # every class has >= 3 training videos


def test_split_is_disjoint_complete_sorted_and_stratified():
    splits = stratified_split(LABELS, seed=1)
    assert list(splits) == list(SPLIT_NAMES)
    union = np.concatenate(list(splits.values()))
    assert sorted(union.tolist()) == list(range(len(LABELS)))  # disjoint and complete
    for idx in splits.values():
        assert np.all(np.diff(idx) > 0)
        assert set(LABELS[idx]) == set(range(5))  # every class in every split
    for label, count in enumerate(np.bincount(LABELS)):
        per_split = [int(np.sum(LABELS[idx] == label)) for idx in splits.values()]
        exact = count * np.array([0.6, 0.2, 0.2])
        # floor/ceil of the exact share, except where the one-video minimum forces more
        assert all(abs(k - e) < 1 or k == 1 for k, e in zip(per_split, exact, strict=True))


def test_split_is_seeded():
    a, b = stratified_split(LABELS, seed=3), stratified_split(LABELS, seed=3)
    c = stratified_split(LABELS, seed=4)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_split_overall_sizes_follow_fractions_with_many_small_classes():
    labels = np.repeat(np.arange(20), 7)  # 4.2 / 1.4 / 1.4 per class
    sizes = {k: len(v) for k, v in stratified_split(labels).items()}
    assert sizes == {"train": 84, "val": 28, "test": 28}


def test_split_needs_three_videos_per_class():
    labels = [0, 0, 0, 1, 1]
    with pytest.raises(DataError, match=r"class 1 \('dog'\) has only 2 video"):
        stratified_split(labels, class_names=["cat", "dog"])


@pytest.mark.parametrize("fractions", [(0.5, 0.5), (0.6, 0.2, 0.1), (0.8, 0.2, 0.0), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(fractions):
    with pytest.raises(ConfigError, match="fractions"):
        stratified_split(LABELS, fractions=fractions)


def test_shards_disjoint_complete_and_balanced():
    train = stratified_split(SHARD_LABELS, seed=0)["train"]
    shards = stratified_shards(train, SHARD_LABELS, n=3, seed=0)
    assert len(shards) == 3
    union = np.concatenate(shards)
    assert len(union) == len(set(union.tolist()))
    assert set(union.tolist()) == set(train.tolist())
    per_class = np.array([np.bincount(SHARD_LABELS[s], minlength=5) for s in shards])
    assert np.all(per_class > 0)
    assert np.all(per_class.max(axis=0) - per_class.min(axis=0) <= 1)
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    again = stratified_shards(train, SHARD_LABELS, n=3, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip(shards, again, strict=True))


def test_shards_warn_when_a_class_cannot_reach_every_shard():
    labels = np.array([0] * 8 + [1] * 2)
    with pytest.warns(ShardCoverageWarning, match="shard 3 lacks class 1"):
        shards = stratified_shards(np.arange(10), labels, n=4)
    assert missing_classes_per_shard(shards, labels) == {2: [1], 3: [1]}


def test_shards_without_missing_classes_do_not_warn():
    labels = np.repeat([0, 1], 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stratified_shards(np.arange(12), labels, n=3)


def test_shards_errors():
    with pytest.raises(DataError, match="some shard would be empty"):
        stratified_shards(np.arange(3), [0, 1, 2], n=4)
    with pytest.raises(ConfigError, match="positive integer"):
        stratified_shards(np.arange(3), [0, 1, 2], n=0)
    with pytest.raises(DataError, match="duplicates"):
        stratified_shards(np.array([0, 0, 1]), [0, 1, 2], n=1)


def _saved(tmp_path, **kwargs):
    videos = [f"clips/v{i}.mp4" for i in range(len(SHARD_LABELS))]
    splits = stratified_split(SHARD_LABELS, seed=7)
    shards = stratified_shards(splits["train"], SHARD_LABELS, n=2, seed=7)
    path = tmp_path / "splits.json"
    save_splits(
        path, videos, SHARD_LABELS, ["a", "b", "c", "d", "e"], splits, shards=shards, seed=7, **kwargs
    )
    return path, videos, splits, shards


def test_save_load_round_trip(tmp_path):
    path, videos, splits, shards = _saved(tmp_path)
    loaded = load_splits(path)
    assert loaded.seed == 7
    assert loaded.classes == ["a", "b", "c", "d", "e"]
    for name in SPLIT_NAMES:
        assert loaded.splits[name] == [videos[i] for i in splits[name]]
        assert loaded.label_indices(loaded.splits[name]).tolist() == SHARD_LABELS[splits[name]].tolist()
    assert loaded.shards == [[videos[i] for i in s] for s in shards]
    assert loaded.counts()["shards"] == [len(s) for s in shards]


def _rewrite(path, change):
    raw = json.loads(path.read_text())
    change(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda raw: raw["splits"]["test"].append(raw["splits"]["train"][0]), "in both train and test"),
        (lambda raw: raw.pop("classes"), "missing key"),
        (lambda raw: raw["splits"].pop("val"), "exactly the keys"),
        (lambda raw: raw["shards"][0].append(raw["splits"]["test"][0]), "outside the train split"),
        (lambda raw: raw["shards"][1].append(raw["shards"][0][0]), "shards must be disjoint"),
        (lambda raw: raw["labels"].update({raw["splits"]["val"][0]: "zebra"}), "unknown class"),
        (lambda raw: raw["splits"].update({"val": "oops"}), "list of video paths"),
    ],
)
def test_load_rejects_broken_files(tmp_path, change, message):
    path, *_ = _saved(tmp_path)
    _rewrite(path, change)
    with pytest.raises(DataError, match=message):
        load_splits(path)


def test_load_rejects_missing_and_invalid_json(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_splits(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_splits(bad)


def test_save_rejects_overlapping_splits(tmp_path):
    splits = {"train": np.array([0, 1]), "val": np.array([1]), "test": np.array([2])}
    with pytest.raises(DataError, match="splits must be disjoint"):
        save_splits(tmp_path / "s.json", ["x", "y", "z"], [0, 0, 0], ["a"], splits)
    assert not (tmp_path / "s.json").exists()


def test_grouped_split_never_puts_a_group_on_both_sides():
    from picojepa.data.splits import grouped_stratified_split

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 40)
    groups = [f"c{c}-s{rng.integers(0, 8)}" for c in labels]  # subjects with unequal numbers of clips
    for seed in range(5):
        split = grouped_stratified_split(labels, groups, (0.6, 0.2, 0.2), seed=seed)
        assert sorted(np.concatenate(list(split.values())).tolist()) == list(range(len(labels)))
        owner = {}
        for name, idx in split.items():
            for i in idx:
                assert owner.setdefault(groups[i], name) == name, groups[i]
            assert set(labels[idx]) == set(range(4))  # every class on every side
        assert abs(len(split["train"]) / len(labels) - 0.6) < 0.15


def test_grouped_split_explains_a_class_with_too_few_groups():
    from picojepa.data.splits import grouped_stratified_split

    labels = np.array([0] * 6 + [1] * 6)
    groups = ["a"] * 3 + ["b"] * 3 + [f"x{i}" for i in range(6)]
    with pytest.raises(DataError, match="2 group"):
        grouped_stratified_split(labels, groups, (0.6, 0.2, 0.2), class_names=["zumba", "abseiling"])


def test_group_keys_take_the_first_capture_group_and_refuse_unmatched_paths():
    from picojepa.data.splits import group_keys

    paths = ["ucf/v_Run_g01_c02.avi", "ucf/v_Run_g01_c03.avi", "ucf/v_Jump_g07_c01.avi"]
    assert group_keys(paths, r"_g(\d+)_") == ["01", "01", "07"]
    assert group_keys(paths, r"v_[A-Za-z]+") == ["v_Run", "v_Run", "v_Jump"]
    with pytest.raises(DataError, match="matches no part"):
        group_keys([*paths, "other/clip.mp4"], r"_g(\d+)_")
    assert group_keys([*paths, "other/clip.mp4"], r"_g(\d+)_", strict=False)[-1] is None
    with pytest.raises(ConfigError, match="regular expression"):
        group_keys(paths, "(")


def test_pretraining_pool_loses_the_held_out_groups_videos(tmp_path):
    from picojepa.experiment.run import pretraining_pool
    from picojepa.experiment.settings import ExperimentSettings, LabelledData

    pool = tmp_path / "pool"
    pool.mkdir()
    for name in ("v_Run_g01_c01.mp4", "v_Run_g01_c09.mp4", "v_Run_g02_c01.mp4", "unrelated.mp4"):
        (pool / name).write_bytes(b"")  # listed, never decoded here
    paths = [str(tmp_path / "lab" / n) for n in ("v_Run_g01_c02.mp4", "v_Run_g02_c02.mp4", "v_Run_g03_c02.mp4")]
    data = LabelledData(prepared=None, paths=paths, labels=np.zeros(3, dtype=int), class_names=["run"],
                        split_idx={"train": np.array([1]), "val": np.array([2]), "test": np.array([0])},
                        shard_idx=[])
    settings = ExperimentSettings(data=str(tmp_path / "lab"), pretrain_data=str(pool), group_by=r"_g(\d+)_")
    kept, meta = pretraining_pool(settings, data)
    assert sorted(p.path.name for p in kept.items) == ["unrelated.mp4", "v_Run_g02_c01.mp4"]  # g01 is test's
    assert meta["removed_val_test"] == 2
    settings.group_by = None
    assert len(pretraining_pool(settings, data)[0].items) == 4
