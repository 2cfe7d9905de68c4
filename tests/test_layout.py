"""The package is layered by stage: no module imports one on a higher floor."""

from __future__ import annotations

import re
from pathlib import Path

import picojepa

FLOORS = [
    {"config", "errors", "utils", "progress", "perf", "metrics"},
    {"models", "masks"},
    {"data"},
    {"datasets"},
    {"train"},
    {"probe"},
    {"ensemble"},
    {"viz"},
    {"experiment", "deploy"},
    {"cli", "__main__"},
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}
ROOT = Path(picojepa.__file__).parent
RELATIVE_IMPORT = re.compile(r"^\s*from (\.+)([\w.]*) import ([\w, ()]+)", re.M)


def _imports(path: Path) -> list[str]:
    """Top-level picojepa entries (package or module) that ``path`` imports, lazily or not."""
    package = list(path.relative_to(ROOT).parent.parts)
    found = []
    for dots, module, names in RELATIVE_IMPORT.findall(path.read_text()):
        up = len(dots) - 1
        base = package[: len(package) - up] if up else package
        target = [*base, *(module.split(".") if module else [])]
        found.append(target[0] if target else names.split(",")[0].strip(" ()"))
    return found


def test_every_top_level_entry_has_a_floor() -> None:
    entries = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
               if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    assert entries <= set(FLOOR), sorted(entries - set(FLOOR))


def test_no_module_imports_a_higher_floor() -> None:
    violations = []
    for path in ROOT.rglob("*.py"):
        top = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if top == "__init__":
            continue  # the package root only re-exports, lazily
        for target in _imports(path):
            if FLOOR.get(target, -1) > FLOOR[top]:
                violations.append(f"{path.relative_to(ROOT)} imports {target}")
    assert not violations, violations
