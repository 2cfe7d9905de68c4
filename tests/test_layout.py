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


def _module_graph() -> dict[str, set[str]]:
    """picojepa module → the picojepa modules it imports (relative imports, lazy or guarded ones too)."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = list(path.relative_to(ROOT).parent.parts)
        targets = set()
        for dots, module, names in RELATIVE_IMPORT.findall(path.read_text()):
            up = len(dots) - 1
            base = package[: len(package) - up] if up else package
            target = ".".join([*base, *(module.split(".") if module else [])])
            for imported in (n.split(" as ")[0].strip(" ()\n") for n in names.split(",")):
                child = f"{target}.{imported}" if target else imported
                targets.add(child if (ROOT / child.replace(".", "/")).with_suffix(".py").exists()
                            or (ROOT / child.replace(".", "/")).is_dir() else target)
        graph[name] = targets - {name, ""}
    return graph


def test_no_module_imports_itself_through_others() -> None:
    graph = _module_graph()
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in trail:
                cycles.append(" → ".join([*trail[trail.index(nxt):], nxt]))
            elif len(trail) < 12:
                visit(nxt, [*trail, nxt])

    for start in sorted(graph):
        visit(start, [start])
    # a package's __init__ re-exporting its own modules is not a cycle of the code
    real = sorted({c for c in cycles if not any(c.startswith(f"{p} → {p}.") for p in graph)})
    assert not real, real[:5]
