"""Ensemble protocols beyond the published one (deep ensembles) and their compute accounting, on a tiny
experiment built from generated clips."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.config import load_config
from picojepa.datasets.synth import generate_dataset
from picojepa.errors import ConfigError
from picojepa.experiment.predict import predict, resolve_models
from picojepa.experiment.run import ExperimentSettings, encoder_configs, ensemble_compute, plan_members, run_experiment
from picojepa.experiment.settings import Member
from picojepa.probe.classifier import PROBE_GRID

CLASSES = ["move_left", "move_right", "rotate_cw"]
FAST = ["data.num_workers=0", "train.epochs=1", "train.batch_size=8"]
MEMBERS = 3
PARTIALS = [f"partial_{i}" for i in range(1, MEMBERS + 1)]
PROBE_BATCH = 64  # ProbeConfig's default batch size


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("syn") / "labelled", classes=CLASSES, videos_per_class=8,
                            size=64, frames=16, fps=8, seed=7, progress=False)


@pytest.fixture(scope="module")
def deep_run(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExperimentSettings]:
    root = tmp_path_factory.mktemp("deep")
    settings = ExperimentSettings(data=str(labelled), preset="tiny", overrides=FAST, members=MEMBERS, mode="deep",
                                  seed=5, probe_epochs=3, num_clips=2, monitor=False, allow_small_fits=True)
    run_experiment(settings, root / "exp", cache_dir=root / "cache", progress=False, figures=False,
                   quiet_tables=True)
    return root / "exp", settings


def run_config(report: dict, name: str) -> dict:
    return json.loads((Path(report["encoders"][name]["run_dir"]) / "config.json").read_text())


def test_unknown_mode_names_the_valid_ones():
    with pytest.raises(ConfigError, match="shared, independent, deep, compute-matched"):
        ExperimentSettings(data="x", mode="bagging").validate()


def test_deep_mode_gives_each_partial_its_own_encoder_and_seed_on_the_whole_pool_and_all_labels(deep_run):
    out, settings = deep_run
    report = json.loads((out / "report.json").read_text())
    train = report["splits"]["train"]
    assert "shards" not in report["splits"] and report["shard_coverage"] == {}
    pools = json.loads((out / "pretraining_pools.json").read_text())
    splits = json.loads((out / "splits.json").read_text())
    dirs = {report["encoders"][name]["run_dir"] for name in ["general", *PARTIALS]}
    assert len(dirs) == MEMBERS + 1  # every Partial pretrained its own encoder
    for i, name in enumerate(PARTIALS):
        assert sorted(pools[name]) == sorted(pools["general"]) and len(pools[name]) == train
        assert run_config(report, name)["config"]["train"]["seed"] == settings.seed + 1 + i
        assert report["compute"][name]["seed"] == settings.seed + 1 + i
        assert report["compute"][name]["encoder"] == name
        assert report["heads"][name]["train_videos"] == train == report["heads"]["general"]["train_videos"]
        saved = json.loads((out / "classifiers" / name / "config.json").read_text())
        assert sorted(saved["train_videos"]) == sorted(splits["splits"]["train"])
    assert run_config(report, "general")["config"]["train"]["seed"] == settings.seed


def test_compute_accounting_sums_what_the_runs_recorded(deep_run):
    out, settings = deep_run
    report = json.loads((out / "report.json").read_text())
    compute = report["ensemble_compute"]
    recorded = {}
    for name in ["general", *PARTIALS]:
        meta = run_config(report, name)
        assert meta["finished"] and meta["steps"] > 0
        recorded[name] = meta["steps"] * meta["batch_size"]
        entry = compute["general"] if name == "general" else compute["members"][name]
        assert entry["pretrain_clip_steps"] == recorded[name] == report["compute"][name]["pretrain_clip_steps"]
        assert (entry["pretrain_steps"], entry["pretrain_batch"]) == (meta["steps"], meta["batch_size"])
    train = report["splits"]["train"]
    # Every head of the grid runs probe_epochs epochs of ceil(train videos × clips / batch) steps.
    head_steps = len(PROBE_GRID) * settings.probe_epochs * math.ceil(train * settings.num_clips / PROBE_BATCH)
    assert {n: report["heads"][n]["head_steps"] for n in ["general", *PARTIALS]} == dict.fromkeys(
        ["general", *PARTIALS], head_steps)
    total = sum(recorded[n] for n in PARTIALS)
    assert compute["ensemble"] == {"pretrain_clip_steps": total, "head_steps": MEMBERS * head_steps}
    assert compute["ensemble_clip_steps"] == total and compute["general_clip_steps"] == recorded["general"]
    # Same pool, batch and epochs for every encoder: the ensemble costs MEMBERS Generals.
    assert compute["ratio_ensemble_to_general"] == MEMBERS
    assert compute["head_steps_ratio_ensemble_to_general"] == MEMBERS
    text = (out / "report.md").read_text()
    assert "## Compute: ensemble vs General" in text
    assert f"Ensemble total / General: pretraining clip-steps ×{MEMBERS}, head steps ×{MEMBERS}" in text
    assert f"| Ensemble total | – | – | – | {total} | {MEMBERS * head_steps} |" in text


def test_compute_matched_general_pretrains_as_long_as_the_whole_ensemble(labelled, tmp_path):
    settings = ExperimentSettings(data=str(labelled), preset="tiny", overrides=FAST, members=2,
                                  mode="compute-matched", probe_epochs=2, num_clips=2, probe_grid=False,
                                  monitor=False, allow_small_fits=True)
    report = run_experiment(settings, tmp_path / "exp", cache_dir=tmp_path / "cache", progress=False, figures=False,
                            quiet_tables=True).report
    general, members = run_config(report, "general"), [run_config(report, n) for n in ("partial_1", "partial_2")]
    assert general["config"]["train"]["epochs"] == 2 * members[0]["config"]["train"]["epochs"] == 2
    assert general["steps"] == sum(m["steps"] for m in members) > 0
    compute = report["ensemble_compute"]
    assert compute["ensemble_clip_steps"] == compute["general_clip_steps"] == general["steps"] * general["batch_size"]
    assert compute["ratio_ensemble_to_general"] == 1.0 and compute["general_length_factor"] == 2
    # The heads are the deep protocol's: every member on all the training labels.
    assert {report["heads"][n]["train_videos"] for n in ("general", "partial_1", "partial_2")} == {
        report["splits"]["train"]}
    text = (tmp_path / "exp" / "report.md").read_text()
    assert "pretraining clip-steps ×1, " in text and "compute-matched mode" in text


def test_deep_heterogeneous_members_vary_architecture_and_seed_and_compute_matched_scales_general_only():
    base = load_config("tiny", None, FAST)
    deep = ExperimentSettings(data="x", mode="deep", heterogeneous=True, seed=3)
    configs = encoder_configs(deep, base)
    assert [configs[f"partial_{i}"].train.seed for i in range(1, 5)] == [4, 5, 6, 7]
    assert len({configs[f"partial_{i}"].model.embed_dim for i in range(1, 5)}) > 1
    assert len({configs[f"partial_{i}"].mask.ratio for i in range(1, 5)}) > 1
    assert configs["general"].to_dict() == base.to_dict()
    assert [m.seed for m in plan_members(ExperimentSettings(data="x", mode="deep", seed=3))][2:] == [4, 5, 6, 7]
    matched = encoder_configs(ExperimentSettings(data="x", mode="compute-matched", members=3), base)
    assert matched["general"].train.epochs == 3 * base.train.epochs
    assert all(matched[f"partial_{i}"].train.epochs == base.train.epochs for i in range(1, 4))
    budget = load_config("tiny", None, [*FAST, "train.clip_steps=40"])
    matched = encoder_configs(ExperimentSettings(data="x", mode="compute-matched", members=3), budget)
    assert matched["general"].train.clip_steps == 120 and matched["general"].train.epochs == budget.train.epochs


def test_an_encoder_shared_by_the_members_is_counted_once():
    members = [Member("general", "general", "linear", 0), Member("random_init", "random_init", "linear", 0),
               Member("partial_1", "general", "linear", 0), Member("partial_2", "general", "mlp", 0)]
    encoders = {"general": {"steps": 10, "batch_size": 8, "clip_steps": 80},
                "random_init": {"steps": 0, "batch_size": 0, "clip_steps": 0}}
    heads = {"general": {"head_steps": 40}, "random_init": {"head_steps": 40}, "partial_1": {"head_steps": 12},
             "partial_2": {"head_steps": 8}}
    compute = ensemble_compute(ExperimentSettings(data="x", members=2), members, encoders, heads)
    assert compute["ensemble"] == {"pretrain_clip_steps": 80, "head_steps": 20}
    assert compute["ratio_ensemble_to_general"] == 1.0 and compute["head_steps_ratio_ensemble_to_general"] == 0.5
    assert set(compute["members"]) == {"partial_1", "partial_2"}


def test_predict_and_export_accept_a_deep_folder(deep_run, labelled, tmp_path):
    out, _ = deep_run
    models = resolve_models([out])
    assert models.names == ["general", *PARTIALS] and models.members == PARTIALS
    summary = predict([out], labelled / CLASSES[0], tmp_path / "p.csv", "soft", "cpu", workers=0, progress=False)
    assert summary.videos == 8
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
    export = tmp_path / "onnx"
    result = CliRunner().invoke(app, ["export", "--models", str(out), "--out", str(export), "--aggregate", "soft",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((export / "manifest.json").read_text())
    assert [m["name"] for m in manifest["models"]] == ["general", *PARTIALS]
    assert manifest["ensemble"]["members"] == PARTIALS
