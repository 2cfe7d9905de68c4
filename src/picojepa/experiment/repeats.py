"""``experiment --repeats K``: the whole design K times with K seeds — splits, shards, initialisations and
heads all change — and each gap's mean and spread across repeats.

A paired bootstrap interval covers the sampling of test videos only; the spread across repeats shows the
training variance the bootstrap cannot see. Both are reported side by side.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..ensemble.report import display_name
from ..errors import ConfigError
from ..utils import write_json, write_text
from .run import ExperimentResult, ExperimentSettings, run_experiment


def repeat_seeds(settings: ExperimentSettings, repeats: int) -> list[int]:
    return [settings.seed + r for r in range(repeats)]


def run_repeats(settings: ExperimentSettings, out: str | Path, repeats: int, **kwargs: Any) -> dict[str, Any]:
    """Run the experiment with seeds seed, seed+1, … into ``out/seed_<s>`` and summarise the gaps."""
    if repeats < 2:
        raise ConfigError(f"--repeats must be at least 2 to measure a spread, got {repeats}")
    out = Path(out)
    results: list[ExperimentResult] = []
    for seed in repeat_seeds(settings, repeats):
        run_settings = dataclasses.replace(settings, seed=seed)
        results.append(run_experiment(run_settings, out / f"seed_{seed}", **kwargs))
    summary = summarise([r.report for r in results], [r.out for r in results])
    write_json(out / "repeats.json", summary)
    write_text(out / "repeats.md", render_repeats(summary))
    return summary


def _spread(values: list[float]) -> dict[str, Any]:
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else float("nan")
    return {"values": arr.tolist(), "mean": float(arr.mean()), "std": std,
            "min": float(arr.min()), "max": float(arr.max())}


def summarise(reports: list[dict[str, Any]], outs: list[Path]) -> dict[str, Any]:
    """Per aggregation (and the pretraining gain): the gap of every repeat with its bootstrap CI, and the
    mean ± standard deviation across repeats."""
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, gap: dict[str, Any] | None) -> None:
        if gap is None:
            return
        entry = rows.setdefault(name, {"gaps": [], "ci95": [], "ci_excludes_zero": 0})
        entry["gaps"].append(gap["mean"])
        entry["ci95"].append(gap["ci95"])
        entry["ci_excludes_zero"] += int(not gap["ci_includes_zero"])

    for report in reports:
        add("pretraining_gain", report.get("pretraining_gain"))
        for name, entry in report.get("ensembles", {}).items():
            add(name, entry.get("gap_vs_general"))
        best = (report.get("reference") or {}).get("best_single")
        if best:
            add("best_single", best["gap_vs_general"])
    accuracy = {name: _spread([r["models"][name]["accuracy"]["micro"] for r in reports])
                for name in reports[0]["models"] if all(name in r["models"] for r in reports)}
    return {
        "repeats": len(reports),
        "seeds": [r["settings"]["seed"] for r in reports],
        "runs": [str(p) for p in outs],
        "gaps": {name: {**entry, **{k: v for k, v in _spread(entry["gaps"]).items() if k != "values"}}
                 for name, entry in rows.items()},
        "accuracy": accuracy,
    }


def _pp(value: float, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def render_repeats(summary: dict[str, Any]) -> str:
    k = summary["repeats"]
    lines = [f"# pico-JEPA experiment, {k} repeats (seeds {', '.join(map(str, summary['seeds']))})", "",
             "Each repeat redraws the splits, shards, initialisations and heads. Mean ± standard deviation "
             "across repeats (training variance) next to each repeat's own paired-bootstrap 95 % CI (test "
             "sampling only).", "",
             "| Gap (pp) | Mean ± std across repeats | Per repeat [95 % CI] | CIs excluding 0 |",
             "| :--- | ---: | :--- | ---: |"]
    for name, entry in summary["gaps"].items():
        label = "Pretraining gain (General − random init)" if name == "pretraining_gain" else \
            f"{display_name(name)} − General"
        per_run = "; ".join(f"{_pp(g)} [{_pp(ci[0])}, {_pp(ci[1])}]"
                            for g, ci in zip(entry["gaps"], entry["ci95"], strict=True))
        lines.append(f"| {label} | {_pp(entry['mean'])} ± {_pp(entry['std'], signed=False)} | {per_run} | "
                     f"{entry['ci_excludes_zero']} of {k} |")
    lines += ["", "| Test accuracy (%) | Mean ± std | Min – max |", "| :--- | ---: | ---: |"]
    for name, acc in summary["accuracy"].items():
        lines.append(f"| {display_name(name)} | {_pp(acc['mean'], False)} ± {_pp(acc['std'], False)} | "
                     f"{_pp(acc['min'], False)} – {_pp(acc['max'], False)} |")
    return "\n".join(lines) + "\n"


def format_repeats(summary: dict[str, Any]) -> str:
    """Terminal lines: mean ± spread of each gap."""
    width = max(len(n) for n in summary["gaps"]) + 2
    lines = [f"Gaps over {summary['repeats']} repeats (pp): mean ± std across repeats; CIs excluding 0"]
    for name, entry in summary["gaps"].items():
        lines.append(f"{name:<{width}} {_pp(entry['mean']):>6} ± {_pp(entry['std'], signed=False):<5} "
                     f"({entry['ci_excludes_zero']} of {summary['repeats']})")
    return "\n".join(lines)
