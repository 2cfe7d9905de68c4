"""Kinetics subset manifests built from a small fake tree laid out like Kinetics."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from picojepa.datasets.kinetics import build_kinetics_subsets
from picojepa.datasets.synth import encode_video
from picojepa.errors import DataError

# Folder names as they appear on disk: spaces, underscores and a comma.
CLASS_FOLDERS = {
    "zumba": ["z1", "z2"],
    "air drumming": ["a1", "a2", "a3"],
    "abseiling": ["b1", "b2"],
    "arm_wrestling": ["w1"],
    "cooking, egg": ["c1", "c2"],
}
EMPTY = {"air drumming": "a3"}  # exists but 0 bytes
CORRUPT = {"abseiling": "b2"}  # non-empty garbage: only caught by check_decodable


def _clip_name(youtube_id: str) -> str:
    return f"{youtube_id}_000010_000020.mp4"


@pytest.fixture(scope="module")
def tiny_mp4(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("mp4") / "tiny.mp4"
    encode_video(np.full((2, 16, 16, 3), 128, np.uint8), path, fps=4, codec="mpeg4")
    return path.read_bytes()


@pytest.fixture()
def kinetics_root(tmp_path: Path, tiny_mp4: bytes) -> Path:
    root = tmp_path / "kinetics400"
    for label, ids in CLASS_FOLDERS.items():
        folder = root / "train" / label
        folder.mkdir(parents=True)
        for youtube_id in ids:
            data = b"" if EMPTY.get(label) == youtube_id else tiny_mp4
            if CORRUPT.get(label) == youtube_id:
                data = b"not a video at all"
            (folder / _clip_name(youtube_id)).write_bytes(data)
        (folder / "notes.txt").write_text("not a video")
    (root / "val" / "zumba").mkdir(parents=True)
    (root / "val" / "zumba" / _clip_name("v1")).write_bytes(tiny_mp4)
    return root


def _annotation_csv(path: Path) -> Path:
    rows = [
        ("abseiling", "b1", "train"),
        ("abseiling", "gone1", "train"),  # file absent
        ("air drumming", "a1", "train"),
        ("air drumming", "a2", "train"),
        ("air drumming", "a3", "train"),  # empty file
        ("arm wrestling", "w1", "train"),  # folder uses an underscore
        ("arm wrestling", "gone2", "train"),
        ("cooking, egg", "c1", "train"),  # comma inside a quoted label
        ("zumba", "v1", "val"),  # other split: ignored
        ("bowling", "x9", "val"),
    ]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["label", "youtube_id", "time_start", "time_end", "split"])
        writer.writerows([label, yid, 10, 20, split] for label, yid, split in rows)
    return path


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def _resolves(out: Path, relative: str) -> bool:
    return not Path(relative).is_absolute() and (out / relative).is_file()


def test_folder_scan_picks_alphabetical_classes(kinetics_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests" / "k400"
    report = build_kinetics_subsets(kinetics_root, out, num_pretrain_classes=4, num_labelled_classes=2)

    assert report.source == "folders"
    assert report.pretrain_classes == ["abseiling", "air drumming", "arm_wrestling", "cooking, egg"]
    assert report.labelled_classes == ["abseiling", "air drumming"]
    # The empty file is left out and reported; notes.txt is not a video.
    assert report.counts == {"abseiling": 2, "air drumming": 2, "arm_wrestling": 1, "cooking, egg": 2}
    assert report.unreadable["air drumming"] == [
        {"path": f"train/air drumming/{_clip_name('a3')}", "reason": "empty file (0 bytes)"}
    ]
    assert report.num_missing == 0

    pretrain = _read_csv(out / "pretrain.csv")
    assert pretrain[0] == ["video_name"] and len(pretrain) == 1 + 7
    assert all(len(row) == 1 and _resolves(out, row[0]) for row in pretrain[1:])
    assert pretrain[1][0] == f"../../kinetics400/train/abseiling/{_clip_name('b1')}"

    labelled = _read_csv(out / "labelled.csv")
    assert labelled[0] == ["video_name", "label"]
    assert [row[1] for row in labelled[1:]] == ["abseiling"] * 2 + ["air drumming"] * 2
    assert all(_resolves(out, row[0]) for row in labelled[1:])

    saved = json.loads((out / "kinetics_subsets.json").read_text())
    assert saved["counts"] == report.counts and saved["unreadable"] == report.unreadable
    summary = report.summary()
    assert "4 classes, 7 videos" in summary and "1 unreadable" in summary


def test_annotations_report_missing_files(kinetics_root: Path, tmp_path: Path) -> None:
    annotations = _annotation_csv(tmp_path / "train.csv")
    out = tmp_path / "out"
    report = build_kinetics_subsets(
        kinetics_root, out, annotations=annotations, num_pretrain_classes=4, num_labelled_classes=4
    )
    assert report.source == "annotations"
    # Classes come from the CSV (spaces, not the folder's underscore); the val-only ones are not offered.
    assert report.pretrain_classes == ["abseiling", "air drumming", "arm wrestling", "cooking, egg"]
    assert report.counts == {"abseiling": 1, "air drumming": 2, "arm wrestling": 1, "cooking, egg": 1}
    assert report.missing == {
        "abseiling": [f"train/abseiling/{_clip_name('gone1')}"],
        "air drumming": [],
        "arm wrestling": [f"train/arm_wrestling/{_clip_name('gone2')}"],
        "cooking, egg": [],
    }
    assert report.num_unreadable == 1

    labelled = _read_csv(out / "labelled.csv")
    assert ["../kinetics400/train/cooking, egg/" + _clip_name("c1"), "cooking, egg"] in labelled
    assert ["../kinetics400/train/arm_wrestling/" + _clip_name("w1"), "arm wrestling"] in labelled
    assert all(_resolves(out, row[0]) for row in labelled[1:])
    assert "2 missing" in report.summary()


def test_val_split_with_annotations(kinetics_root: Path, tmp_path: Path) -> None:
    annotations = _annotation_csv(tmp_path / "val.csv")
    report = build_kinetics_subsets(
        kinetics_root, tmp_path / "o", annotations, split="val", num_pretrain_classes=2, labelled_classes=["zumba"]
    )
    assert report.pretrain_classes == ["bowling", "zumba"]
    assert report.counts == {"bowling": 0, "zumba": 1}
    assert report.missing["bowling"] == [f"val/bowling/{_clip_name('x9')}"]
    # A labelled list without a single usable video is an error, with the report left for inspection.
    with pytest.raises(DataError, match=r"no usable videos for the labelled classes.*1 missing"):
        build_kinetics_subsets(
            kinetics_root,
            tmp_path / "p",
            annotations,
            split="val",
            labelled_classes=["bowling"],
            num_pretrain_classes=2,
        )
    assert json.loads((tmp_path / "p" / "kinetics_subsets.json").read_text())["counts"]["bowling"] == 0


def test_explicit_labelled_classes(kinetics_root: Path, tmp_path: Path) -> None:
    report = build_kinetics_subsets(
        kinetics_root, tmp_path / "o", num_pretrain_classes=2, labelled_classes=["arm wrestling", "zumba"]
    )
    # Names match folders regardless of spaces vs underscores; labelled classes may lie outside pretraining.
    assert report.labelled_classes == ["arm_wrestling", "zumba"]
    assert report.counts["zumba"] == 2
    with pytest.raises(DataError, match=r"'zumbaa'.*close matches: 'zumba'"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", labelled_classes=["zumbaa"], num_pretrain_classes=2)


def test_check_decodable_reports_corrupt_files(kinetics_root: Path, tmp_path: Path) -> None:
    quick = build_kinetics_subsets(kinetics_root, tmp_path / "a", num_pretrain_classes=1, num_labelled_classes=1)
    assert quick.counts == {"abseiling": 2}
    checked = build_kinetics_subsets(
        kinetics_root, tmp_path / "b", num_pretrain_classes=1, num_labelled_classes=1, check_decodable=True
    )
    assert checked.counts == {"abseiling": 1}
    [problem] = checked.unreadable["abseiling"]
    assert problem["path"].endswith(_clip_name("b2")) and problem["reason"]


def test_errors_are_helpful(kinetics_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        build_kinetics_subsets(tmp_path / "nowhere", tmp_path / "o")
    with pytest.raises(DataError, match=r"no 'test' split folder.*it holds train, val"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", split="test")
    (kinetics_root / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", split="test")
    with pytest.raises(DataError, match="only 5 are available"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", num_pretrain_classes=10)
    with pytest.raises(DataError, match="num_labelled_classes"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", num_pretrain_classes=2, num_labelled_classes=3)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("youtube_id,time_start\nabc,1\n")
    with pytest.raises(DataError, match="lacks column"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", annotations=bad_csv)
    with pytest.raises(DataError, match="not found"):
        build_kinetics_subsets(kinetics_root, tmp_path / "o", annotations=tmp_path / "absent.csv")
