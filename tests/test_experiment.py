"""End-to-end experiment, probe and predict on generated clips with the tiny preset."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.data.splits import load_splits
from picojepa.datasets.synth import generate_dataset
from picojepa.ensemble.report import recompute_from_predictions
from picojepa.errors import CheckpointError, ConfigError, DataError, PicoJepaError
from picojepa.experiment import predict as predict_module
from picojepa.experiment.predict import encoder_groups, predict
from picojepa.experiment.run import ExperimentSettings, run_experiment
from picojepa.probe.classifier import PROBE_GRID, VideoClassifier, load_classifier
from picojepa.probe.heads import AttentiveHead

CLASSES = ["move_left", "move_right", "rotate_cw", "rotate_ccw"]
FAST = ["data.num_workers=0", "train.epochs=1", "train.batch_size=8"]


def general_encoder(out: Path) -> Path:
    return Path(json.loads((out / "report.json").read_text())["encoders"]["general"]["run_dir"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="session")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("syn") / "labelled", classes=CLASSES, videos_per_class=10,
                            size=64, frames=16, fps=8, seed=3, progress=False)


@pytest.fixture(scope="session")
def shared_run(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExperimentSettings]:
    root = tmp_path_factory.mktemp("exp")
    # The labelled folder doubles as the pretraining pool: its val/test videos must be removed from it.
    # Validation halves of 4 videos for 4 classes are below the fits' minimum: allowed here, so the weights,
    # stacker and best single member are fitted (and marked); test_small_fits_... checks the default.
    settings = ExperimentSettings(data=str(labelled), pretrain_data=str(labelled), preset="tiny", overrides=FAST,
                                  probe_epochs=5, mode="shared", low_shot=(1, 3), allow_small_fits=True)
    run_experiment(settings, root / "shared", cache_dir=root / "cache", progress=False, quiet_tables=True)
    return root / "shared", settings


def test_experiment_writes_every_file_with_the_stated_keys(shared_run):
    out, _ = shared_run
    for name in ("report.md", "report.json", "predictions.csv", "splits.json", "ensemble.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == sorted(CLASSES)  # class folders are taken in alphabetical order
    assert set(report["models"]) == {"general", "random_init", "partial_1", "partial_2", "partial_3", "partial_4"}
    assert set(report["ensembles"]) >= {"vote", "soft", "weighted", "stack"}
    for entry in [*report["models"].values(), *report["ensembles"].values()]:
        assert set(entry["accuracy"]) >= {"per_class", "macro", "micro"}
        assert set(entry["confidence"]) >= {"per_class", "mean"}
    for name in ("vote", "soft", "weighted", "stack"):
        gap = report["ensembles"][name]["gap_vs_general"]
        assert gap["ci95"][0] <= gap["mean"] <= gap["ci95"][1]
    assert sum(report["splits"][k] for k in ("train", "val", "test")) == 40
    assert report["splits"]["shards"] == [6, 6, 6, 6]
    assert report["splits"]["val (epoch selection)"] + report["splits"]["val (aggregation fits)"] == 8
    text = (out / "report.md").read_text()
    assert "| shard 1 | 6 |" in text and "validation half B" in text
    assert "Accuracy per class" in (out / "report.md").read_text()


def test_report_has_the_random_init_baseline_gain_chance_and_other_head(shared_run):
    out, _ = shared_run
    report = json.loads((out / "report.json").read_text())
    gain = report["pretraining_gain"]
    general, random = (report["models"][n]["accuracy"]["micro"] for n in ("general", "random_init"))
    assert gain["mean"] == pytest.approx(general - random)
    assert gain["ci95"][0] <= gain["mean"] <= gain["ci95"][1]
    assert report["chance"] == pytest.approx(0.25)
    assert report["other_head"]["head"] == "linear"  # the default head is attentive
    assert report["other_head"]["gain"]["mean"] == pytest.approx(
        report["other_head"]["general"] - report["other_head"]["random_init"])
    low = report["low_shot"]
    assert [r["per_class"] for r in low] == [1, 3] and [r["train_videos"] for r in low] == [4, 12]
    for row in low:
        assert row["gain"]["mean"] == pytest.approx(row["general"] - row["random_init"])
    text = (out / "report.md").read_text()
    assert "Low-shot frozen evaluation" in text
    assert "Pretraining gain:" in text and "chance 25.0 %" in text and "other head (linear)" in text
    # The random-init encoder is the General's starting point: same architecture and seed, 0 steps.
    random_dir = Path(report["encoders"]["random_init"]["run_dir"])
    general_dir = Path(report["encoders"]["general"]["run_dir"])
    assert json.loads((random_dir / "config.json").read_text())["steps"] == 0
    assert json.loads((random_dir / "config.json").read_text())["config"]["model"] == json.loads(
        (general_dir / "config.json").read_text())["config"]["model"]
    # The General's pretraining ran the learning monitor on the training split, from step 0.
    rows = [json.loads(line) for line in (general_dir / "metrics.jsonl").read_text().splitlines()]
    assert next(r["step"] for r in rows if "probe_ema" in r) == 0


def test_every_number_is_recomputable_from_predictions_csv(shared_run):
    out, _ = shared_run
    report = json.loads((out / "report.json").read_text())
    again = recompute_from_predictions(out / "predictions.csv")
    for group in ("models", "ensembles"):
        for name, entry in report[group].items():
            for key in ("macro", "micro"):
                assert again[group][name]["accuracy"][key] == pytest.approx(entry["accuracy"][key]), name
            assert again[group][name]["accuracy"]["per_class"] == pytest.approx(
                entry["accuracy"]["per_class"], nan_ok=True)
            assert again[group][name]["confidence"]["per_class"] == pytest.approx(
                entry["confidence"]["per_class"], nan_ok=True)
    rows = read_csv(out / "predictions.csv")
    assert len(rows) == report["splits"]["test"] * 10  # 6 models (random init included) + 4 aggregations
    assert again["pretraining_gain"] == report["pretraining_gain"]


def test_splits_shards_and_pretraining_pool_never_touch_test(shared_run):
    out, _ = shared_run
    splits = load_splits(out / "splits.json")
    train, val, test = (set(splits.splits[k]) for k in ("train", "val", "test"))
    assert not (train & val or train & test or val & test)
    assert set().union(*map(set, splits.shards)) == train
    report = json.loads((out / "report.json").read_text())
    assert report["pretraining_pool"]["removed_val_test"] == len(val) + len(test)
    general = json.loads((out / "classifiers" / "general" / "config.json").read_text())
    assert set(general["train_videos"]) == train
    for i, shard in enumerate(splits.shards, start=1):
        member = json.loads((out / "classifiers" / f"partial_{i}" / "config.json").read_text())
        assert set(member["train_videos"]) == set(shard)


def test_rerun_reuses_stages_and_refuses_other_settings(shared_run, labelled, tmp_path):
    out, settings = shared_run
    before = (out / "report.json").read_text()
    run_experiment(settings, out, cache_dir=out.parent / "cache", progress=False, quiet_tables=True)
    a, b = json.loads(before), json.loads((out / "report.json").read_text())
    assert a["models"] == b["models"] and a["ensembles"] == b["ensembles"]
    other = ExperimentSettings(**{**settings.__dict__, "members": 3})
    with pytest.raises(PicoJepaError, match="other settings"):
        run_experiment(other, out, cache_dir=out.parent / "cache", progress=False, quiet_tables=True)


def test_independent_heterogeneous_mode_reports_compute(labelled, tmp_path):
    data = tmp_path / "labelled"
    shutil.copytree(labelled, data)
    (data / CLASSES[0] / "broken.mp4").write_bytes(b"\x00" * 100)
    settings = ExperimentSettings(data=str(data), preset="tiny", overrides=FAST, probe_epochs=3,
                                  mode="independent", heterogeneous=True)
    result = run_experiment(settings, tmp_path / "ind", cache_dir=tmp_path / "cache", progress=False,
                            quiet_tables=True)
    report = result.report
    # Without a separate pool, each Partial's encoder pretrains on exactly the videos its head trains on.
    pools = json.loads((tmp_path / "ind" / "pretraining_pools.json").read_text())
    shards = load_splits(tmp_path / "ind" / "splits.json").shards
    for i, shard in enumerate(shards, start=1):
        assert sorted(pools[f"partial_{i}"]) == sorted(shard)
    # The labelled video dropped before the split is recorded.
    skipped = json.loads((tmp_path / "ind" / "skipped.json").read_text())
    assert [Path(s["path"]).name for s in skipped] == ["broken.mp4"] and skipped[0]["stage"] == "labelled scan"
    assert report["skipped"] == 1
    compute = report["ensemble_compute"]
    encoders = report["encoders"]
    assert compute["ensemble_clip_steps"] == sum(encoders[f"partial_{i}"]["clip_steps"] for i in range(1, 5))
    assert compute["general_clip_steps"] == encoders["general"]["clip_steps"]
    heads = {report["heads"][f"partial_{i}"]["head"] for i in range(1, 5)}
    assert heads == {"linear", "attentive", "mlp"}
    widths = {json.loads((Path(encoders[f"partial_{i}"]["run_dir"]) / "config.json").read_text())["config"][
        "model"]["embed_dim"] for i in range(1, 5)}
    assert len(widths) > 1


def test_predict_matches_the_experiment_and_reports_bad_videos(shared_run, labelled, tmp_path):
    out, _ = shared_run
    videos = tmp_path / "videos"
    shutil.copytree(labelled, videos)
    (videos / CLASSES[0] / "broken.mp4").write_bytes(b"\x00" * 100)
    csv_path = tmp_path / "preds.csv"
    result = CliRunner().invoke(app, ["predict", "--models", str(out), "--videos", str(videos), "--out",
                                      str(csv_path), "--aggregate", "stack", "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output and "broken.mp4" in result.output
    rows = read_csv(csv_path)
    assert len(rows) == 40 * 6  # 5 models + the ensemble, the broken video left out
    assert not any("broken" in r["video"] for r in rows)
    # Same videos, same clips, same heads: the experiment's test probabilities are reproduced.
    exp_rows = {(Path(r["video"]).name, r["model"]): r for r in read_csv(out / "predictions.csv")}
    classes = json.loads((out / "report.json").read_text())["classes"]
    checked = 0
    for r in rows:
        key = (Path(r["video"]).name, r["model"])
        if key in exp_rows:
            a = np.array([float(r[c]) for c in classes])
            b = np.array([float(exp_rows[key][c]) for c in classes])
            assert np.allclose(a, b, atol=1e-4), key
            checked += 1
    assert checked == 8 * 5


def test_predict_runs_each_distinct_encoder_once_per_batch(shared_run, labelled, tmp_path, monkeypatch):
    out, _ = shared_run
    calls: list[int] = []
    original = VideoClassifier.tokens_from_clips

    def counting(self, clips):
        calls.append(len(clips))
        return original(self, clips)

    monkeypatch.setattr(VideoClassifier, "tokens_from_clips", counting)
    summary = predict([out], labelled, tmp_path / "p.csv", "vote", "cpu", batch_size=8, workers=0, progress=False)
    # Shared protocol: the General and the 4 Partials have one encoder, so one pass per batch, not five.
    assert summary.videos == 40 and len(calls) == 5
    models = [load_classifier(out / "classifiers" / name) for name in ("general", "partial_1", "partial_2")]
    models.append(load_classifier(out / "classifiers" / "random_init"))
    assert sorted(map(len, encoder_groups(models))) == [1, 3]


def test_predict_with_several_experiments_refuses_one_experiments_fitted_weights(shared_run, labelled, tmp_path):
    out, _ = shared_run
    other = tmp_path / "other"
    shutil.copytree(out, other)
    with pytest.raises(ConfigError, match="fitted on one experiment's members"):
        predict([out, other], labelled, tmp_path / "w.csv", "weighted", "cpu", workers=0, progress=False)
    predict([out, other], labelled / CLASSES[0], tmp_path / "v.csv", "vote", "cpu", workers=0, progress=False)
    rows = read_csv(tmp_path / "v.csv")
    assert {r["model"] for r in rows} == {f"{f}/{m}" for f in (out.name, "other")
                                          for m in ("general", "partial_1", "partial_2", "partial_3", "partial_4")
                                          } | {"ensemble:vote"}


def test_predict_skips_a_video_that_fails_for_any_model(shared_run, labelled, tmp_path, monkeypatch):
    """A video that decodes for model 0 but not for another is predicted by none (and named), instead of
    rows with missing probabilities or a crash."""
    out, _ = shared_run
    strided = tmp_path / "strided"
    shutil.copytree(out / "classifiers" / "general", strided)
    meta = json.loads((strided / "config.json").read_text())
    meta["encoder_config"]["data"]["frame_stride"] = 1  # another sampling setting: decoded separately
    (strided / "config.json").write_text(json.dumps(meta))
    real_loader = predict_module.eval_loader
    loaders: list[int] = []

    class FailingFirstVideo:
        def __init__(self, inner):
            self.inner = inner

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            for items in self.inner:
                yield [(i, None, "injected decode error") if i == 0 else (i, c, e) for i, c, e in items]

    def loader(*args):
        loaders.append(1)
        inner = real_loader(*args)
        return FailingFirstVideo(inner) if len(loaders) == 2 else inner

    monkeypatch.setattr(predict_module, "eval_loader", loader)
    videos = labelled / CLASSES[1]
    first = sorted(videos.glob("*.mp4"))[0]
    summary = predict([out / "classifiers" / "general", strided], videos, tmp_path / "p.csv", "vote", "cpu",
                      workers=0, progress=False)
    assert len(loaders) == 2 and summary.videos == 9
    assert [(Path(p.path).name, p.reason) for p in summary.skipped] == [
        (first.name, "injected decode error (for models strided; skipped for all)")]
    rows = read_csv(tmp_path / "p.csv")
    assert len(rows) == 9 * 3 and first.name not in {Path(r["video"]).name for r in rows}
    assert all(r[c] not in ("", "nan") for r in rows for c in CLASSES)


def test_probe_command_and_classifier_loading(shared_run, labelled, tmp_path):
    out, _ = shared_run
    encoder_dir = general_encoder(out)
    clf_dir = tmp_path / "clf"
    result = CliRunner().invoke(app, ["probe", "--encoder", str(encoder_dir), "--data", str(labelled), "--out",
                                      str(clf_dir), "--epochs", "3", "--head", "attentive", "--quiet",
                                      "--cache-dir", str(out.parent / "cache")])
    assert result.exit_code == 0, result.output
    meta = json.loads((clf_dir / "config.json").read_text())
    assert meta["head"] == "attentive" and meta["class_names"] and 1 <= meta["best_epoch"] <= 3
    # the default head: one per (lr, weight decay) of the grid, saved and loaded as one averaged head
    assert meta["head_members"] == len(PROBE_GRID) == len(meta["history"])
    assert [(h["lr"], h["weight_decay"]) for h in meta["history"]] == list(PROBE_GRID)
    clf = load_classifier(clf_dir)
    assert clf.class_names == meta["class_names"] and len(clf.head.members) == len(PROBE_GRID)
    single = tmp_path / "single"
    result = CliRunner().invoke(app, ["probe", "--encoder", str(encoder_dir), "--data", str(labelled), "--out",
                                      str(single), "--epochs", "2", "--lr", "3e-3", "--no-baseline", "--quiet",
                                      "--cache-dir", str(out.parent / "cache")])
    assert result.exit_code == 0, result.output
    single_meta = json.loads((single / "config.json").read_text())
    assert single_meta["head_members"] == 1 and single_meta["probe"]["lr"] == 3e-3 and not single_meta["probe"]["grid"]
    assert isinstance(load_classifier(single).head, AttentiveHead)
    # A classifier refuses an encoder that changed after its head was trained.
    moved = tmp_path / "enc"
    shutil.copytree(encoder_dir, moved)
    meta["encoder"]["run_dir"] = str(moved)
    (clf_dir / "config.json").write_text(json.dumps(meta))
    (moved / "encoder.safetensors").write_bytes((moved / "encoder.safetensors").read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(CheckpointError, match="changed"):
        load_classifier(clf_dir)


def test_probe_finetune_trains_its_own_encoder_copy(shared_run, labelled, tmp_path):
    out, _ = shared_run
    encoder_dir = general_encoder(out)
    before = (encoder_dir / "encoder.safetensors").read_bytes()
    clf_dir = tmp_path / "ft"
    result = CliRunner().invoke(app, ["probe", "--encoder", str(encoder_dir), "--data", str(labelled), "--out",
                                      str(clf_dir), "--epochs", "2", "--finetune", "--quiet",
                                      "--cache-dir", str(out.parent / "cache")])
    assert result.exit_code == 0, result.output
    assert (encoder_dir / "encoder.safetensors").read_bytes() == before  # the pretrained run is untouched
    meta = json.loads((clf_dir / "config.json").read_text())
    assert meta["encoder_embedded"] and len(meta["history"]) == 2
    assert load_classifier(clf_dir).class_names == meta["class_names"]


def test_saved_shards_must_cover_the_training_split(shared_run, tmp_path):
    out, settings = shared_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("encoders", "features", "classifiers", "members"))
    splits = json.loads((copy / "splits.json").read_text())
    splits["shards"][0] = splits["shards"][0][:-1]  # one training video in no shard
    (copy / "splits.json").write_text(json.dumps(splits))
    with pytest.raises(PicoJepaError, match="do not cover the training split"):
        run_experiment(settings, copy, cache_dir=out.parent / "cache", progress=False, quiet_tables=True)


def test_a_changed_weight_setting_retrains_and_a_cosmetic_one_reuses(labelled, tmp_path):
    def run(name: str, *extra: str) -> Path:
        settings = ExperimentSettings(data=str(labelled), preset="tiny", overrides=[*FAST, *extra], probe_epochs=2,
                                      mode="shared", monitor=False)
        run_experiment(settings, tmp_path / name, cache_dir=tmp_path / "cache", encoders_dir=tmp_path / "enc",
                       progress=False, quiet_tables=True, figures=False)
        return general_encoder(tmp_path / name)

    base = run("a")
    assert run("b", "train.log_every=3", "data.num_workers=0") == base  # where/how often it logs: same weights
    for setting in ("train.ema_start=0.99", "train.warmup_fraction=0.2", "data.min_scale=0.5",
                    "mask.long_range=true", "train.schedule_stretch=1.0"):
        other = run(setting.replace("=", "_"), setting)
        assert other != base and (other / "encoder.safetensors").is_file(), setting
    assert (base / "encoder.safetensors").is_file()  # the earlier encoder is kept, not overwritten


def test_probe_skips_unreadable_videos_lists_them_and_reports_the_random_init_baseline(shared_run, labelled,
                                                                                      tmp_path, monkeypatch):
    from picojepa.data.cache import ClipCache
    from picojepa.data.decode import VideoError

    out, _ = shared_run
    victim = sorted((labelled / CLASSES[1]).glob("*.mp4"))[0]
    real_load = ClipCache.load

    def load(self, video):  # decodes at scan and cache time, breaks when its frames are read
        if Path(video) == victim:
            raise VideoError(video, "undecodable after 3 frames")
        return real_load(self, video)

    monkeypatch.setattr(ClipCache, "load", load)
    clf_dir = tmp_path / "clf"
    result = CliRunner().invoke(app, ["probe", "--encoder", str(general_encoder(out)), "--data", str(labelled),
                                      "--out", str(clf_dir), "--epochs", "2", "--quiet",
                                      "--cache-dir", str(out.parent / "cache")])
    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output and "pretraining gain" in result.output
    skipped = json.loads((clf_dir / "skipped.json").read_text())
    assert [Path(s["path"]) for s in skipped] == [victim] and skipped[0]["stage"] == "decode"
    used = [v for part in load_splits(clf_dir / "splits.json").splits.values() for v in part]
    assert str(victim) not in used and len(used) == 39
    summary = json.loads((clf_dir / "probe.json").read_text())
    assert summary["pretraining_gain"]["mean"] == pytest.approx(
        summary["test_accuracy"] - summary["random_init_test_accuracy"])
    # Too many unreadable videos is refused, not silently trained on.
    result = CliRunner().invoke(app, ["probe", "--encoder", str(general_encoder(out)), "--data", str(labelled),
                                      "--out", str(tmp_path / "clf2"), "--epochs", "1", "--quiet",
                                      "--max-bad-fraction", "0.01", "--cache-dir", str(out.parent / "cache")])
    assert isinstance(result.exception, DataError) and "unusable" in str(result.exception)


def test_repeats_rerun_the_design_with_new_seeds_and_report_the_spread(labelled, tmp_path):
    result = CliRunner().invoke(app, ["experiment", "--data", str(labelled), "--out", str(tmp_path / "rep"),
                                      "--preset", "tiny", "--set", "data.num_workers=0", "--epochs", "1",
                                      "--batch-size", "8", "--probe-epochs", "2", "--num-clips", "1",
                                      "--repeats", "3", "--quiet", "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "± " in result.output and "vote" in result.output
    summary = json.loads((tmp_path / "rep" / "repeats.json").read_text())
    assert summary["seeds"] == [0, 1, 2]
    splits = [load_splits(tmp_path / "rep" / f"seed_{s}" / "splits.json").splits["test"] for s in (0, 1, 2)]
    assert splits[0] != splits[1] != splits[2]  # every repeat draws its own split
    reports = [json.loads((tmp_path / "rep" / f"seed_{s}" / "report.json").read_text()) for s in (0, 1, 2)]
    vote = [r["ensembles"]["vote"]["gap_vs_general"]["mean"] for r in reports]
    assert summary["gaps"]["vote"]["mean"] == pytest.approx(np.mean(vote))
    assert summary["gaps"]["vote"]["std"] == pytest.approx(np.std(vote, ddof=1))
    assert "Mean ± std across repeats" in (tmp_path / "rep" / "repeats.md").read_text()


def test_folds_test_every_video_once_and_pool_the_predictions(labelled, tmp_path):
    out = tmp_path / "folds"
    result = CliRunner().invoke(app, ["experiment", "--data", str(labelled), "--out", str(out), "--preset", "tiny",
                                      "--set", "data.num_workers=0", "--epochs", "1", "--batch-size", "8",
                                      "--probe-epochs", "2", "--num-clips", "1", "--members", "2", "--folds", "3",
                                      "--fractions", "0.5,0.25,0.25", "--quiet",
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    tests = [load_splits(out / f"fold_{k}" / "splits.json").splits for k in (1, 2, 3)]
    tested = [v for split in tests for v in split["test"]]
    every = sorted(str(p) for p in labelled.rglob("*.mp4"))
    assert sorted(tested) == every  # each video tested exactly once
    for split in tests:
        assert not set(split["test"]) & (set(split["train"]) | set(split["val"]))
    summary = json.loads((out / "folds.json").read_text())
    assert summary["videos"] == len(every)
    pooled = recompute_from_predictions(out / "predictions.csv", n_resamples=2000)
    assert summary["pooled"]["pretraining_gain"]["mean"] == pytest.approx(pooled["pretraining_gain"]["mean"])
    per_fold = [read_csv(out / f"fold_{k}" / "predictions.csv") for k in (1, 2, 3)]
    assert sum(len(rows) for rows in per_fold) == len(read_csv(out / "predictions.csv"))
    assert "Pretraining gain" in (out / "folds.md").read_text()
    refused = CliRunner().invoke(app, ["experiment", "--data", str(labelled), "--out", str(tmp_path / "x"),
                                       "--folds", "3", "--repeats", "2"])
    assert refused.exit_code != 0


def test_small_fits_are_not_reported_as_results_and_say_why(shared_run, tmp_path):
    out, settings = shared_run
    report = json.loads((out / "report.json").read_text())  # --allow-small-fits: fitted, and marked
    assert set(report["flags"]) == {"weighted", "stack", "best_single"}
    assert "⚠" in (out / "report.md").read_text() and "--allow-small-fits" in (out / "report.md").read_text()
    strict = ExperimentSettings(**{**settings.__dict__, "allow_small_fits": False})
    result = run_experiment(strict, tmp_path / "strict", cache_dir=out.parent / "cache", progress=False,
                            quiet_tables=True, encoders_dir=out / "encoders")
    report = result.report
    assert set(report["ensembles"]) == {"vote", "soft"}  # no fit on 4 validation videos for 4 classes
    assert set(report["not_fitted"]) == {"weighted", "stack", "best_single"}
    assert "4 validation (aggregation fits) videos for 4 classes" in report["not_fitted"]["stack"]
    assert report["reference"]["best_single"] is None
    assert "last epoch" in report["fitting"]["head_epochs"]  # no epoch chosen on too few videos either
    md = (tmp_path / "strict" / "report.md").read_text()
    assert "Stack: not fitted — 4 validation" in md and "Resolution: 8 test videos" in md and "±10 pp" in md
    assert report["resolution"] == {"test_videos": 8, "half_width_pp": 34.6}
    refused = CliRunner().invoke(app, ["predict", "--models", str(tmp_path / "strict"), "--videos",
                                       str(next(Path(settings.data).rglob("*.mp4"))), "--out",
                                       str(tmp_path / "p.csv"), "--aggregate", "stack"])
    assert refused.exit_code != 0 and "did not fit it" in str(refused.exception)


def test_a_member_whose_shard_lacks_a_class_is_marked_in_the_report():
    from picojepa.ensemble.report import fits_text, marked_name

    report = {"classes": ["a", "b"], "models": {}, "shard_coverage": {"partial_2": ["b"]},
              "flags": {"stack": "3 videos for 2 classes"}, "not_fitted": {"weighted": "3 videos for 2 classes"}}
    assert marked_name("partial_2", report) == "Partial 2 †"
    assert marked_name("stack", report).endswith("⚠") and marked_name("partial_1", report) == "Partial 1"
    text = fits_text(report)
    assert "Partial 2: its training shard has no video of b" in text and "Weighted: not fitted" in text
