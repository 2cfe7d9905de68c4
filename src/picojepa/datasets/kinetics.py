"""Kinetics subset manifests: an unlabelled pretraining list and a small labelled list.

Works from the usual on-disk layout ``<root>/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``
and, optionally, the official annotation CSV (``label,youtube_id,time_start,time_end,split``). With the
CSV, rows whose video is absent are reported as missing instead of being silently dropped.
"""

from __future__ import annotations

import csv
import difflib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DataError
from ..utils import atomic_write, write_json

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov")
PRETRAIN_CSV = "pretrain.csv"
LABELLED_CSV = "labelled.csv"
REPORT_JSON = "kinetics_subsets.json"

# Official CSVs and common download scripts do not agree on the name of the validation split.
_SPLIT_ALIASES = {
    "train": ("train", "training"),
    "val": ("val", "validate", "validation", "valid"),
    "test": ("test", "testing"),
}
_REQUIRED_COLUMNS = ("label", "youtube_id", "time_start", "time_end")


@dataclass
class KineticsSubsetReport:
    """What was written and what could not be used, per class."""

    root: str
    split: str
    out: str
    source: str  # "annotations" or "folders"
    pretrain_classes: list[str]
    labelled_classes: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # usable videos per class
    missing: dict[str, list[str]] = field(default_factory=dict)  # annotated but absent (root-relative)
    unreadable: dict[str, list[dict[str, str]]] = field(default_factory=dict)  # {"path", "reason"}
    num_pretrain_videos: int = 0
    num_labelled_videos: int = 0
    pretrain_csv: str = ""
    labelled_csv: str = ""
    report_json: str = ""

    @property
    def num_missing(self) -> int:
        return sum(len(paths) for paths in self.missing.values())

    @property
    def num_unreadable(self) -> int:
        return sum(len(items) for items in self.unreadable.values())

    def summary(self) -> str:
        lines = [
            f"Kinetics subsets from {self.root} (split {self.split!r}, from {self.source})",
            f"  pretraining: {len(self.pretrain_classes)} classes, {self.num_pretrain_videos} videos -> "
            f"{self.pretrain_csv}",
            f"  labelled:    {len(self.labelled_classes)} classes, {self.num_labelled_videos} videos -> "
            f"{self.labelled_csv}",
        ]
        width = max((len(name) for name in self.counts), default=0)
        for name in _ordered_union(self.pretrain_classes, self.labelled_classes):
            tags = [tag for tag, group in (("P", self.pretrain_classes), ("L", self.labelled_classes)) if name in group]
            problems = []
            if self.missing.get(name):
                problems.append(f"{len(self.missing[name])} missing")
            if self.unreadable.get(name):
                problems.append(f"{len(self.unreadable[name])} unreadable")
            note = f"  ({', '.join(problems)})" if problems else ""
            lines.append(f"    [{''.join(tags):2s}] {name:{width}s} {self.counts.get(name, 0):6d}{note}")
        if self.num_missing or self.num_unreadable:
            lines.append(
                f"  {self.num_missing} missing and {self.num_unreadable} unreadable files were left out; "
                f"details in {self.report_json}"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Candidate:
    """One expected video of a class: its path, and whether it exists at all."""

    label: str
    path: Path
    exists: bool


# ---------------------------------------------------------------------------------------------------
# Name matching
# ---------------------------------------------------------------------------------------------------


def _normalise(name: str) -> str:
    """Folder/label key that ignores case, spaces vs underscores and punctuation ("person's" -> "persons")."""
    spaced = re.sub(r"[\s_]+", " ", name.strip().lower())
    return re.sub(r"[^0-9a-z ]", "", spaced)


def _alphabetical_key(name: str) -> str:
    # Sort as published, the same whether folders use spaces or underscores.
    return name.lower().replace("_", " ")


def _ordered_union(*groups: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for group in groups:
        seen.update(dict.fromkeys(group))
    return list(seen)


def _close_matches(name: str, available: Sequence[str]) -> str:
    by_key = {_normalise(candidate): candidate for candidate in available}
    keys = difflib.get_close_matches(_normalise(name), list(by_key), n=5, cutoff=0.5)
    return ", ".join(repr(by_key[key]) for key in keys) or "none"


# ---------------------------------------------------------------------------------------------------
# Locating the split and its classes
# ---------------------------------------------------------------------------------------------------


def _split_dir(root: Path, split: str) -> Path:
    if not root.is_dir():
        raise DataError(f"Kinetics root {root} does not exist or is not a folder")
    for name in _SPLIT_ALIASES.get(split, (split,)):
        if (root / name).is_dir():
            return root / name
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    hint = f"; it holds {', '.join(found[:12])}{' ...' if len(found) > 12 else ''}" if found else " (it is empty)"
    raise DataError(
        f"no {split!r} split folder in {root}{hint}. Expected <root>/<split>/<label>/<video>.mp4; "
        "if root is itself a split folder, pass its parent as root and its name as split"
    )


def _class_folders(split_dir: Path) -> dict[str, Path]:
    """Class folders of a split, keyed by their normalised name."""
    return {_normalise(p.name): p for p in sorted(split_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and not p.name.startswith("."))


# ---------------------------------------------------------------------------------------------------
# Annotation CSV
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Annotation:
    label: str
    youtube_id: str
    start: int
    end: int

    @property
    def file_stem(self) -> str:
        return f"{self.youtube_id}_{self.start:06d}_{self.end:06d}"


def _read_annotations(path: Path, split: str) -> list[_Annotation]:
    if not path.is_file():
        raise DataError(f"annotation file {path} not found")
    accepted_splits = set(_SPLIT_ALIASES.get(split, (split,)))
    rows: list[_Annotation] = []
    seen: set[tuple[str, str]] = set()
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        reader.fieldnames = header
        absent = [name for name in _REQUIRED_COLUMNS if name not in header]
        if absent:
            raise DataError(
                f"{path} lacks column(s) {', '.join(absent)}; expected a header like "
                f"'label,youtube_id,time_start,time_end,split' but found {','.join(header) or 'nothing'}"
            )
        for line_no, row in enumerate(reader, start=2):
            if "split" in header and (row.get("split") or "").strip() not in accepted_splits:
                continue
            annotation = _parse_row(row, path, line_no)
            key = (annotation.label, annotation.file_stem)
            if key not in seen:  # the official CSVs repeat a few clips
                seen.add(key)
                rows.append(annotation)
    return rows


def _parse_row(row: dict[str, str | None], path: Path, line_no: int) -> _Annotation:
    try:
        return _Annotation(
            label=(row["label"] or "").strip(),
            youtube_id=(row["youtube_id"] or "").strip(),
            start=int(float(row["time_start"] or "")),
            end=int(float(row["time_end"] or "")),
        )
    except (TypeError, ValueError):
        raise DataError(f"{path}, line {line_no}: cannot read times from row {dict(row)}") from None


def _find_video(folder: Path | None, stem: str) -> Path | None:
    if folder is None:
        return None
    for ext in VIDEO_EXTENSIONS:
        candidate = folder / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    return None


def _candidates_from_annotations(
    rows: Sequence[_Annotation], split_dir: Path, classes: Sequence[str]
) -> list[_Candidate]:
    folders = _class_folders(split_dir)
    wanted = set(classes)
    candidates = []
    for row in rows:
        if row.label not in wanted:
            continue
        # The label folder may use spaces or underscores (or drop punctuation): match on normalised names.
        folder = folders.get(_normalise(row.label))
        found = _find_video(folder, row.file_stem)
        expected = found or (folder or split_dir / row.label) / f"{row.file_stem}.mp4"
        candidates.append(_Candidate(row.label, expected, found is not None))
    return candidates


def _candidates_from_folders(split_dir: Path, classes: Sequence[str]) -> list[_Candidate]:
    folders = _class_folders(split_dir)
    return [_Candidate(name, path, True) for name in classes for path in _videos_in(folders[_normalise(name)])]


# ---------------------------------------------------------------------------------------------------
# Class choice and video checks
# ---------------------------------------------------------------------------------------------------


def _choose_classes(
    available: Sequence[str],
    num_pretrain_classes: int,
    num_labelled_classes: int,
    labelled_classes: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    ordered = sorted(available, key=_alphabetical_key)
    if num_pretrain_classes < 1:
        raise DataError(f"num_pretrain_classes must be at least 1, got {num_pretrain_classes}")
    if num_pretrain_classes > len(ordered):
        raise DataError(f"asked for {num_pretrain_classes} pretraining classes but only {len(ordered)} are available")
    pretrain = ordered[:num_pretrain_classes]
    if labelled_classes is None:
        if not 1 <= num_labelled_classes <= num_pretrain_classes:
            raise DataError(
                f"num_labelled_classes must be between 1 and num_pretrain_classes ({num_pretrain_classes}), "
                f"got {num_labelled_classes}"
            )
        return pretrain, pretrain[:num_labelled_classes]
    return pretrain, _resolve_explicit(labelled_classes, ordered)


def _resolve_explicit(names: Sequence[str] | str, available: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    by_key = {_normalise(name): name for name in available}
    resolved = []
    for name in names:
        match = by_key.get(_normalise(name))
        if match is None:
            raise DataError(
                f"labelled class {name!r} is not among the {len(available)} available classes; "
                f"close matches: {_close_matches(name, available)}"
            )
        resolved.append(match)
    if not resolved or len(set(resolved)) != len(resolved):
        raise DataError(f"labelled_classes must be a non-empty list without duplicates, got {list(names)}")
    return resolved


def _unreadable_reason(path: Path, check_decodable: bool) -> str | None:
    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
    except OSError as err:
        return f"cannot stat: {err}"
    return _decode_problem(path) if check_decodable else None


def _decode_problem(path: Path) -> str | None:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return "no video stream"
            for _ in container.decode(video=0):
                return None
            return "no decodable video frame"
    except Exception as err:  # PyAV raises many error types; any of them means "cannot use this file"
        return f"{type(err).__name__}: {err}"


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _relative(path: Path, start: Path) -> str:
    # Forward slashes keep manifests portable between systems.
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(start))).as_posix()


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)

    atomic_write(path, write)


def _available_classes(
    rows: Sequence[_Annotation] | None, split_dir: Path, annotations: str | Path | None, split: str
) -> list[str]:
    """Class names offered by the annotations (for this split) or, without them, by the class folders."""
    if rows is not None:
        available = sorted({row.label for row in rows if row.label}, key=_alphabetical_key)
        if not available:
            raise DataError(f"{annotations} has no rows for split {split!r}")
        return available
    available = sorted((p.name for p in _class_folders(split_dir).values()), key=_alphabetical_key)
    if not available:
        raise DataError(f"{split_dir} holds no class folders; expected {split_dir}/<label>/<video>.mp4")
    return available


def _sort_candidates(
    candidates: Iterable[_Candidate], report: KineticsSubsetReport, root: Path, check_decodable: bool
) -> dict[str, list[Path]]:
    """Usable videos per class; missing and unreadable ones are recorded in ``report`` instead."""
    usable: dict[str, list[Path]] = {name: [] for name in report.counts}
    for item in candidates:
        shown = _relative(item.path, root)
        if not item.exists:
            report.missing[item.label].append(shown)
            continue
        reason = _unreadable_reason(item.path, check_decodable)
        if reason is not None:
            report.unreadable[item.label].append({"path": shown, "reason": reason})
            continue
        usable[item.label].append(item.path)
        report.counts[item.label] += 1
    return usable


def build_kinetics_subsets(
    root: str | Path,
    out: str | Path,
    annotations: str | Path | None = None,
    split: str = "train",
    num_pretrain_classes: int = 10,
    num_labelled_classes: int = 4,
    labelled_classes: Sequence[str] | None = None,
    check_decodable: bool = False,
    verbose: bool = False,
) -> KineticsSubsetReport:
    """Write ``pretrain.csv`` (first C classes, alphabetical) and ``labelled.csv`` (M classes) into ``out``.

    Manifest paths are relative to ``out``. Annotated videos that are absent are reported as missing;
    empty files (and, with ``check_decodable``, files PyAV cannot decode) are reported as unreadable.
    """
    root, out = Path(root), Path(out)
    split_dir = _split_dir(root, split)
    rows = _read_annotations(Path(annotations), split) if annotations is not None else None
    available = _available_classes(rows, split_dir, annotations, split)
    pretrain, labelled = _choose_classes(available, num_pretrain_classes, num_labelled_classes, labelled_classes)
    chosen = _ordered_union(pretrain, labelled)
    if rows is not None:
        candidates = _candidates_from_annotations(rows, split_dir, chosen)
    else:
        candidates = _candidates_from_folders(split_dir, chosen)

    report = KineticsSubsetReport(
        root=str(root),
        split=split,
        out=str(out),
        source="annotations" if rows is not None else "folders",
        pretrain_classes=pretrain,
        labelled_classes=labelled,
        counts=dict.fromkeys(chosen, 0),
        missing={name: [] for name in chosen},
        unreadable={name: [] for name in chosen},
        pretrain_csv=str(out / PRETRAIN_CSV),
        labelled_csv=str(out / LABELLED_CSV),
        report_json=str(out / REPORT_JSON),
    )
    usable = _sort_candidates(candidates, report, root, check_decodable)
    pretrain_rows = [[_relative(path, out)] for name in pretrain for path in usable[name]]
    labelled_rows = [[_relative(path, out), name] for name in labelled for path in usable[name]]
    report.num_pretrain_videos, report.num_labelled_videos = len(pretrain_rows), len(labelled_rows)

    out.mkdir(parents=True, exist_ok=True)
    totals = {"num_missing": report.num_missing, "num_unreadable": report.num_unreadable}
    annotations_path = str(annotations) if annotations is not None else None
    write_json(out / REPORT_JSON, {**asdict(report), **totals, "annotations": annotations_path})
    if not pretrain_rows or not labelled_rows:
        raise DataError(
            f"no usable videos for the {'pretraining' if not pretrain_rows else 'labelled'} classes in "
            f"{split_dir} ({report.num_missing} missing, {report.num_unreadable} unreadable); "
            f"details in {out / REPORT_JSON}"
        )
    _write_csv(out / PRETRAIN_CSV, ["video_name"], pretrain_rows)
    _write_csv(out / LABELLED_CSV, ["video_name", "label"], labelled_rows)
    if verbose:
        print(report.summary())
    return report
