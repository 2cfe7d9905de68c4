"""Where videos come from: class folders, CSV manifests, ``path label`` lists, plain folders.

Every source becomes a :class:`VideoSet`: a list of (path, label) items, the class names in
order, and the problems found while reading it (bad manifest rows, with line numbers).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov"})
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})


@dataclass(frozen=True)
class VideoItem:
    path: Path
    label: int | None = None
    line: int | None = field(default=None, compare=False)  # its manifest row, so problems can name it


@dataclass(frozen=True)
class Problem:
    """An unusable video or manifest row, with the reason in words."""

    path: str
    reason: str
    line: int | None = None  # 1-based line of the manifest row, when it came from one

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else self.path
        return f"{where}: {self.reason}"


@dataclass
class VideoSet:
    items: list[VideoItem]
    class_names: list[str] | None
    source: str
    problems: list[Problem] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return self.class_names is not None

    @property
    def labels(self) -> list[int]:
        if not self.labelled:
            raise DataError(f"{self.source} has no labels: use a class-folder tree or a manifest with labels")
        return [item.label for item in self.items]  # type: ignore[misc]

    def subset(self, indices: list[int] | tuple[int, ...]) -> VideoSet:
        return VideoSet([self.items[i] for i in indices], self.class_names, self.source)


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def load_videos(path: str | Path, require_labels: bool = False) -> VideoSet:
    """Read any supported source. ``require_labels`` turns an unlabelled source into an error."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if path.is_dir():
        videos = _folder(path)
    elif path.suffix.lower() == ".csv":
        videos = _csv_manifest(path)
    elif path.suffix.lower() in LIST_EXTENSIONS:
        videos = _path_label_list(path)
    elif is_video_file(path):
        videos = VideoSet([VideoItem(path)], None, str(path))
    else:
        raise DataError(
            f"{path}: unsupported data source; give a folder, a .csv manifest (video_name,label), "
            f"a .txt list ('path label' per line) or a video file ({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    if not videos.items and not videos.problems:
        raise DataError(f"no video files found in {path} (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    if require_labels and not videos.labelled:
        raise DataError(
            f"{path} has no labels: use a folder per class (root/<class>/<video>) or a manifest with labels"
        )
    return videos


def _walk_videos(root: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and is_video_file(Path(f))]
    return found


def _folder(root: Path) -> VideoSet:
    """``root/<class>/<video>`` when every video sits in a class folder; otherwise unlabelled."""
    top_level = [p for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    if any(is_video_file(p) for p in top_level if not p.is_dir()):
        return VideoSet([VideoItem(p) for p in _walk_videos(root)], None, str(root))
    class_dirs = [p for p in top_level if p.is_dir()]
    per_class = [(d.name, _walk_videos(d)) for d in class_dirs]
    per_class = [(name, vids) for name, vids in per_class if vids]
    names = [name for name, _ in per_class]
    items = [VideoItem(v, label) for label, (_, vids) in enumerate(per_class) for v in vids]
    if len(names) < 2:
        # One folder of videos is a collection, not a classification task.
        return VideoSet([VideoItem(i.path) for i in items], None, str(root))
    return VideoSet(items, names, str(root))


def _read_class_file(folder: Path) -> list[str] | None:
    path = folder / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return names or None


def _resolve(base: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def _assign_labels(rows: list[tuple[int, str, str]], base: Path, source: Path) -> VideoSet:
    """rows of (line, path, raw label) → items; labels are all integers or all class names."""
    problems: list[Problem] = []
    known = _read_class_file(base)
    raw_labels = [raw for _, _, raw in rows]
    numeric = bool(raw_labels) and all(_is_int(r) for r in raw_labels)
    if numeric:
        names = known or [str(v) for v in range(max(int(r) for r in raw_labels) + 1)]
    else:
        names = known or sorted({r for r in raw_labels if not _is_int(r)})
    index = {name: i for i, name in enumerate(names)}
    items = []
    for line, name, raw in rows:
        if numeric:
            label = int(raw)
            if not 0 <= label < len(names):
                problems.append(Problem(name, f"label {label} is outside 0..{len(names) - 1}", line))
                continue
        elif raw in index:
            label = index[raw]
        else:
            reason = (f"unknown label {raw!r} (not in {base / 'classes.txt'})" if known
                      else f"label {raw!r} mixes integers and class names")
            problems.append(Problem(name, reason, line))
            continue
        items.append(VideoItem(_resolve(base, name), label, line))
    return VideoSet(items, names, str(source), problems)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _csv_manifest(path: Path) -> VideoSet:
    """CSV with ``video_name[,label]``; a header row is recognised and skipped."""
    base = path.parent
    problems: list[Problem] = []
    rows: list[tuple[int, str, str]] = []
    unlabelled: list[tuple[int, str]] = []
    try:
        with open(path, newline="") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read manifest {path}: {e}") from e
    width = None
    for lineno, row in enumerate(lines, start=1):
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if lineno == 1 and cells[0].lower() in ("video_name", "video", "path", "filename", "file"):
            width = len(cells)
            continue
        width = width or len(cells)
        if len(cells) != width or width not in (1, 2):
            problems.append(Problem(str(path), f"expected {width or '1 or 2'} column(s), got {len(cells)}", lineno))
        elif not cells[0]:
            problems.append(Problem(str(path), "empty video path", lineno))
        elif width == 2 and not cells[1]:
            problems.append(Problem(cells[0], "empty label", lineno))
        elif width == 2:
            rows.append((lineno, cells[0], cells[1]))
        else:
            unlabelled.append((lineno, cells[0]))
    if width == 1:
        return VideoSet([VideoItem(_resolve(base, n), None, ln) for ln, n in unlabelled], None, str(path), problems)
    videos = _assign_labels(rows, base, path)
    videos.problems = problems + videos.problems
    return videos


def _path_label_list(path: Path) -> VideoSet:
    """V-JEPA-style list: ``path label`` per line (space-separated; the label is the last field)."""
    base = path.parent
    problems: list[Problem] = []
    rows: list[tuple[int, str, str]] = []
    unlabelled: list[tuple[int, str]] = []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read list {path}: {e}") from e
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) == 2 and not is_video_file(Path(parts[1])):
            rows.append((lineno, parts[0], parts[1]))
        else:
            unlabelled.append((lineno, line))
    if rows and unlabelled:
        for lineno, name in unlabelled:
            problems.append(Problem(name, "row has no label while other rows do", lineno))
    if not rows:
        return VideoSet([VideoItem(_resolve(base, n), None, ln) for ln, n in unlabelled], None, str(path), problems)
    videos = _assign_labels(rows, base, path)
    videos.problems = problems + videos.problems
    return videos
