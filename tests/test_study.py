"""The ensemble study's table helpers on a fabricated report, and the synthetic set with domains."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from picojepa.data.sources import load_videos
from picojepa.datasets.synth import generate_domains
from picojepa.errors import DataError
from picojepa.experiment.study import (
    experiment_rows,
    markdown_table,
    pretraining_plan,
    study_figure,
    summarise,
)
from picojepa.metrics import paired_bootstrap_gap

Y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
PREDS = {"general": np.array([0, 1, 2, 0, 1, 2, 0, 0, 0, 0, 0, 0]),
         "partial_1": np.array([0, 1, 2, 1, 1, 1, 0, 1, 2, 1, 1, 1]),
         "partial_2": np.array([2, 2, 2, 0, 1, 2, 0, 1, 2, 0, 2, 2]),
         "soft": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 1]),
         "route": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])}


def _acc(name: str) -> dict:
    return {"micro": float((PREDS[name] == Y).mean())}


def fake_report(seed: int, ci_low: float) -> dict:
    """The parts of report.json the study reads; the gaps' CIs are made up so the summary can count them."""
    gap = {"mean": 0.1, "ci95": [ci_low, 0.3], "ci_includes_zero": ci_low <= 0}
    return {
        "n_test": len(Y), "settings": {"seed": seed},
        "bootstrap": {"n_resamples": 2000, "seed": seed, "metric": "micro"},
        "models": {n: {"accuracy": _acc(n)} for n in ("general", "partial_1", "partial_2")},
        "ensembles": {n: {"accuracy": _acc(n), "gap_vs_general": gap} for n in ("route", "soft")},
        "ece": {"general": 0.2, "partial_1": 0.3, "partial_2": 0.25, "soft": 0.1, "route": 0.05},
        "reference": {"best_single": {"member": "partial_1", "test_accuracy": _acc("partial_1"),
                                      "gap_vs_general": {"mean": -0.05, "ci95": [-0.2, 0.1]}}},
        "ensemble_compute": {"general_clip_steps": 352, "ensemble_clip_steps": 704,
                             "members": {"partial_1": {"pretrain_clip_steps": 352},
                                         "partial_2": {"pretrain_clip_steps": 352}}},
    }


def test_rows_copy_the_report_and_pair_each_aggregation_with_the_best_member() -> None:
    report = json.loads(json.dumps(fake_report(seed=3, ci_low=0.01)))  # as read back from report.json
    rows = {r["name"]: r for r in experiment_rows(report, Y, PREDS, pool="domains", protocol="deep")}
    assert list(rows) == ["general", "best_single", "soft", "route"]  # the report's order, not the file's
    assert rows["general"]["accuracy"] == _acc("general")["micro"] and rows["general"]["clip_steps"] == 352
    assert rows["best_single"]["member"] == "partial_1" and rows["best_single"]["ece"] == 0.3
    soft = rows["soft"]
    assert soft["gap_vs_general"] == {"mean": 0.1, "ci95": [0.01, 0.3]} and soft["clip_steps"] == 704
    expected = paired_bootstrap_gap(Y, PREDS["soft"], PREDS["partial_1"], n_resamples=2000, seed=3)
    assert soft["gap_vs_best"] == {"mean": expected["mean"], "ci95": list(expected["ci95"])}
    assert all(r["pool"] == "domains" and r["seed"] == 3 for r in rows.values())


def test_summary_counts_the_repeats_whose_interval_is_above_zero_and_renders(tmp_path: Path) -> None:
    rows = []
    for seed, low in [(0, 0.01), (1, -0.1), (2, 0.02)]:
        rows += experiment_rows(fake_report(seed, low), Y, PREDS, pool="domains", protocol="deep")
    summary = {s["name"]: s for s in summarise(rows)}
    assert summary["soft"]["repeats"] == 3 and summary["soft"]["gap_vs_general"]["ci_above_zero"] == 2
    assert summary["general"]["gap_vs_general"] is None and summary["general"]["accuracy_std"] == 0.0
    table = markdown_table(list(summary.values()))
    assert table.count("\n") == 2 + 4 and ">0: 2/3" in table and "352 / 704" in table
    assert study_figure(list(summary.values()), tmp_path / "study.png").stat().st_size > 0
    # Parallel processes append seeds in any order; the table lists each seed's gap in seed order.
    shuffled = {s["name"]: s for s in summarise(rows[len(rows) // 3:] + rows[:len(rows) // 3])}
    assert shuffled["soft"]["gap_vs_general"]["per_repeat"] == summary["soft"]["gap_vs_general"]["per_repeat"]


def test_pretraining_plan_counts_shared_encoders_once() -> None:
    every = ["shared", "independent", "deep", "compute-matched", "domains"]
    # General 1 run, deep members 3 (reused by compute-matched), its long General 1, shards 3, domains 3.
    assert pretraining_plan(every, 3, 100, fixed_budget=False) == {"runs_per_repeat": 11,
                                                                  "clip_steps_per_repeat": 100 + 300 + 300 + 200}
    assert pretraining_plan(["independent"], 3, 100, fixed_budget=True)["clip_steps_per_repeat"] == 400
    assert pretraining_plan(["shared"], 3, 100, fixed_budget=False)["runs_per_repeat"] == 1


def test_a_set_with_domains_is_a_labelled_list_and_a_pool_of_families(tmp_path: Path) -> None:
    listing = generate_domains(tmp_path / "set", ["easy", "hard"], classes=2, videos_per_class=1, size=16,
                               frames=4, fps=4, seed=1, workers=1, progress=False)
    labelled = load_videos(listing, require_labels=True)
    assert len(labelled.items) == 4 and labelled.class_names == ["move_left", "move_right"]
    pool = load_videos(tmp_path / "set")
    assert pool.class_names == ["easy", "hard"] and len(pool.items) == 4
    with pytest.raises(DataError, match="distinct"):
        generate_domains(tmp_path / "other", ["easy", "easy"])
    with pytest.raises(DataError, match="difficulty must be one of"):  # refused before any domain is rendered
        generate_domains(tmp_path / "third", ["easy", "bogus"], classes=2, videos_per_class=1, size=16, frames=4)
    assert not (tmp_path / "third").exists()


def test_synth_command_makes_a_set_with_domains(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from picojepa.cli import app

    out = tmp_path / "set"
    result = CliRunner().invoke(app, ["synth", "--out", str(out), "--domains", "easy,medium", "--classes", "2",
                                      "-n", "1", "--size", "16", "--frames", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len((out / "videos.txt").read_text().splitlines()) == 4 and (out / "medium" / "meta.json").is_file()


def test_domain_families_measure_how_well_the_clusters_recover_the_families(tmp_path: Path) -> None:
    from picojepa.experiment.study import domain_families

    groups = [[str(tmp_path / "easy/a/1.mp4"), str(tmp_path / "easy/b/2.mp4")],
              [str(tmp_path / "hard/a/3.mp4"), str(tmp_path / "easy/a/4.mp4")]]
    found = domain_families(groups, tmp_path)
    assert found["per_domain"] == [{"easy": 2}, {"easy": 1, "hard": 1}] and found["purity"] == 0.75
