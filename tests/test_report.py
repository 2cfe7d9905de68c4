import csv
import dataclasses
import json
from functools import lru_cache

import numpy as np
import pytest

from picojepa.ensemble.aggregation import Ensemble, best_single_member
from picojepa.ensemble.report import (
    ReportInputs,
    build_report,
    format_terminal_tables,
    recompute_from_predictions,
    write_report,
)
from picojepa.errors import ConfigError, DataError

CLASSES = ["archery", "bowling", "cycling"]


def noisy_probs(y, skill, rng, num_classes=3):
    """Probabilities whose argmax is right with probability ``skill``."""
    n = len(y)
    target = np.where(rng.random(n) < skill, y, rng.integers(0, num_classes, n))
    probs = rng.dirichlet(np.ones(num_classes), size=n) * 0.5
    probs[np.arange(n), target] += 0.5
    return probs


def experiment() -> ReportInputs:
    """A fresh (shallow) copy of the cached experiment, so tests may reassign its fields."""
    return dataclasses.replace(_experiment())


@lru_cache(maxsize=1)
def _experiment(num_partials=3, n_val=45, n_test=36, seed=0):
    """General + partial members on val/test and the four aggregations, as an experiment would build them."""
    rng = np.random.default_rng(seed)
    y_val, y_test = np.arange(n_val) % 3, np.arange(n_test) % 3
    skills = [0.85] + [0.55 + 0.05 * k for k in range(num_partials)]
    val = [noisy_probs(y_val, s, rng) for s in skills]
    test = [noisy_probs(y_test, s, rng) for s in skills]
    members = {"val": np.stack(val[1:]), "test": np.stack(test[1:])}
    ensembles, predictions = {}, {}
    for method in ("vote", "soft", "weighted", "stack"):
        ens = Ensemble.from_probabilities(members, method=method, seed=0).fit("val", y_val)
        ensembles[method] = ens.predict_proba("test")
        predictions[method] = ens.predict("test")
    models = {"general": test[0]} | {f"partial_{k + 1}": test[k + 1] for k in range(num_partials)}
    best = f"partial_{best_single_member(members['val'], y_val) + 1}"
    return ReportInputs(
        class_names=CLASSES,
        test_videos=[f"test/{CLASSES[c]}/clip_{i:03d}.mp4" for i, c in enumerate(y_test)],
        test_labels=y_test,
        models=models,
        ensembles=ensembles,
        predictions=predictions,
        split_counts={"train": 108, "val": n_val, "test": n_test, "shards": [36] * num_partials},
        best_single=best,
        compute={"general": {"clip_steps": 12000, "mode": "pretrain+probe", "seconds": 81.5}}
        | {f"partial_{k + 1}": {"clip_steps": 4000, "mode": "probe", "seconds": 27.25} for k in range(num_partials)},
        extra={"preset": "pico", "seeds": [0, 1, 2]},
    )


@pytest.fixture
def written(tmp_path):
    inputs = experiment()
    report = write_report(tmp_path, inputs, figures=[("Accuracy per class", "figures/accuracy.png")], seed=5)
    return tmp_path, inputs, report


def test_files_and_csv_layout(written):
    out_dir, inputs, _ = written
    assert {p.name for p in out_dir.iterdir()} >= {"predictions.csv", "report.json", "report.md"}
    with open(out_dir / "predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video", "label", "model", "pred", *CLASSES]
    names = ["general", "partial_1", "partial_2", "partial_3", "vote", "soft", "weighted", "stack"]
    assert len(rows) - 1 == len(inputs.test_videos) * len(names)
    assert [r[2] for r in rows[1:]][:: len(inputs.test_videos)] == names
    assert "oracle" not in {r[2] for r in rows[1:]}
    vote_rows = [r for r in rows[1:] if r[2] == "vote"]
    fractions = {round(float(v) * 3) for r in vote_rows for v in r[4:]}
    assert fractions <= {0, 1, 2, 3}  # vote probabilities are vote fractions of 3 members
    assert all(r[1] in CLASSES and r[3] in CLASSES for r in rows[1:])


def test_report_json_structure(written):
    out_dir, inputs, report = written
    saved = json.loads((out_dir / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["classes"] == CLASSES
    assert saved["splits"]["test"] == 36
    assert list(saved["models"]) == ["general", "partial_1", "partial_2", "partial_3"]
    assert list(saved["ensembles"]) == ["vote", "soft", "weighted", "stack"]
    for entry in [*saved["models"].values(), *saved["ensembles"].values()]:
        assert set(entry["accuracy"]) >= {"per_class", "macro", "micro"}
        assert list(entry["accuracy"]["per_class"]) == CLASSES
        assert set(entry["confidence"]) >= {"per_class", "mean"}
    for entry in saved["ensembles"].values():
        gap = entry["gap_vs_general"]
        assert gap["n_resamples"] >= 2000 and gap["seed"] == 5
        low, high = gap["ci95"]
        assert low <= gap["mean"] <= high
    assert saved["reference"]["best_single"]["member"] == inputs.best_single
    assert 0 <= saved["reference"]["oracle"]["accuracy"] <= 1
    assert saved["diversity"]["members"] == ["partial_1", "partial_2", "partial_3"]
    assert set(saved["ece"]) == set(saved["models"]) | set(saved["ensembles"])
    assert saved["compute"]["general"]["clip_steps"] == 12000
    assert saved["preset"] == "pico" and saved["seeds"] == [0, 1, 2]


def test_report_json_matches_predictions_csv(written):
    out_dir, _, _ = written
    saved = json.loads((out_dir / "report.json").read_text())
    boot = saved["bootstrap"]
    rebuilt = recompute_from_predictions(out_dir / "predictions.csv", n_resamples=boot["n_resamples"], seed=5)
    rebuilt = json.loads(json.dumps(rebuilt))
    for key in ("classes", "models", "ensembles", "ece", "diversity"):
        assert rebuilt[key] == saved[key], key
    assert rebuilt["reference"]["oracle"] == saved["reference"]["oracle"]


def test_report_markdown_tables(written):
    out_dir, _, report = written
    md = (out_dir / "report.md").read_text()
    header = "| Class | General | Partial 1 | Partial 2 | Partial 3 | Vote | Soft | Weighted | Stack |"
    assert md.count(header) == 2  # accuracy and confidence tables share the layout
    assert "## Accuracy per class (%)" in md and "## Mean confidence per class (%)" in md
    general_archery = 100 * report["models"]["general"]["accuracy"]["per_class"]["archery"]
    assert f"| archery | {general_archery:.1f} |" in md
    assert "| Mean (per class) |" in md
    assert "## Gaps vs General" in md and "95 % CI" in md
    assert "## Diversity" in md and "## Calibration" in md and "## Videos per split" in md
    assert "| shard 1 | 36 |" in md
    assert "## Compute per model" in md and "clip_steps" in md
    assert "![Accuracy per class](figures/accuracy.png)" in md


def test_terminal_tables(written):
    _, _, report = written
    text = format_terminal_tables(report)
    assert "Accuracy per class" in text and "Mean confidence per class" in text and "Gaps vs General" in text
    assert all(c in text for c in CLASSES)
    assert "Weighted" in text


def test_gap_marks_ci_including_zero(written):
    _, _, report = written
    md_rows = [line for line in format_terminal_tables(report).splitlines() if line.startswith("Vote")]
    includes_zero = report["ensembles"]["vote"]["gap_vs_general"]["ci_includes_zero"]
    assert md_rows and ("yes" in md_rows[-1]) == includes_zero


def test_vote_prediction_defaults_to_tie_rule():
    inputs = experiment()
    explicit = build_report(inputs, n_resamples=200)
    inputs.predictions = {k: v for k, v in inputs.predictions.items() if k != "vote"}
    derived = build_report(inputs, n_resamples=200)
    assert derived["ensembles"]["vote"] == explicit["ensembles"]["vote"]


def test_vote_fractions_not_from_members_need_explicit_predictions():
    inputs = experiment()
    inputs.ensembles = dict(inputs.ensembles, vote=inputs.ensembles["soft"])
    inputs.predictions = {}
    with pytest.raises(ConfigError, match="pass predictions\\['vote'\\]"):
        build_report(inputs, n_resamples=100)


def test_report_input_errors():
    inputs = experiment()
    inputs.extra = {"models": 1}
    with pytest.raises(ConfigError, match="overwrite"):
        build_report(inputs, n_resamples=100)
    inputs = experiment()
    inputs.models = {k: v for k, v in inputs.models.items() if k != "general"}
    with pytest.raises(ConfigError, match="general"):
        build_report(inputs, n_resamples=100)
    inputs = experiment()
    inputs.class_names = ["label", "b", "c"]
    with pytest.raises(DataError, match="clash"):
        build_report(inputs, n_resamples=100)
    inputs = experiment()
    inputs.models = dict(inputs.models, member_4=inputs.models["general"])
    with pytest.raises(ConfigError, match="partial_<k>"):
        build_report(inputs, n_resamples=100)


def test_recompute_rejects_inconsistent_csv(written):
    out_dir, _, _ = written
    path = out_dir / "predictions.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([*lines, lines[1]]) + "\n")  # duplicate the first row
    with pytest.raises(DataError, match="duplicate row"):
        recompute_from_predictions(path)


def _tied_vote_inputs() -> tuple[ReportInputs, np.ndarray, np.ndarray]:
    """Four members that split 2-2 between classes 1 and 2 on every video; the tie rule picks class 2 (its
    summed probability is larger) while the argmax of the vote shares would take class 1."""
    n = 12
    y = np.full(n, 2)
    for_1 = np.tile([0.1, 0.5, 0.4], (n, 1))
    for_2 = np.tile([0.0, 0.2, 0.8], (n, 1))
    members = np.stack([for_1, for_1, for_2, for_2])
    ens = Ensemble.from_probabilities({"test": members}, method="vote")
    inputs = ReportInputs(class_names=CLASSES, test_videos=[f"v{i}.mp4" for i in range(n)], test_labels=y,
                          models={"general": for_2, **{f"partial_{k + 1}": members[k] for k in range(4)}},
                          ensembles={"vote": ens.predict_proba("test")}, predictions={"vote": ens.predict("test")})
    return inputs, members, ens.predict("test")


def test_vote_ece_and_confidence_use_the_tie_rule_decision_and_member_probabilities():
    inputs, _, pred = _tied_vote_inputs()
    assert (pred == 2).all()  # tie rule: class 2 has the larger summed probability
    vote = build_report(inputs)["ensembles"]["vote"]
    assert vote["accuracy"]["micro"] == 1.0
    # Confidence: the members' mean probability of the voted class (0.4, 0.4, 0.8, 0.8 → 0.6), not a vote share.
    assert vote["confidence"]["micro"] == pytest.approx(0.6)
    assert vote["vote_share"]["micro"] == pytest.approx(0.5)
    # Every decision is right with confidence 0.6: ECE = |1 − 0.6|. The old argmax-of-shares rule gave
    # class 1 (all wrong) at share 0.5: ECE 0.5.
    assert vote["ece"] == pytest.approx(0.4)


def test_bootstrap_is_stratified_by_class():
    from picojepa.ensemble.evaluation import paired_bootstrap_gap

    y = np.array([0] * 90 + [1] * 10)
    a = y.copy()
    b = y.copy()
    a[90:] = 0  # a misses class 1, b misses class 0
    b[:90] = 1
    fixed = paired_bootstrap_gap(y, a, b, n_resamples=2000, seed=0)
    assert fixed["stratified"] and fixed["ci95"][0] == pytest.approx(fixed["ci95"][1]) == pytest.approx(0.8)
    free = paired_bootstrap_gap(y, a, b, n_resamples=2000, seed=0, stratified=False)
    assert free["ci95"][1] - free["ci95"][0] > 0.1  # class counts vary between resamples
