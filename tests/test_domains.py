"""Domain shards with routing (``experiment --mode domains``): domains from the unlabelled pool alone, one
member per domain, and the ``route`` aggregation in the experiment and in ``predict``."""

from __future__ import annotations

import csv
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.config import load_config
from picojepa.data.sources import VideoItem, VideoSet, load_videos
from picojepa.datasets.synth import generate_dataset
from picojepa.deploy.scoring import make_scorer
from picojepa.errors import ConfigError, DataError
from picojepa.experiment.domains import (
    cluster_domains,
    load_routing,
    pool_domains,
    route,
    routing_encoder,
    routing_weights,
    squared_distances,
    video_embeddings,
)
from picojepa.experiment.predict import predict
from picojepa.experiment.run import ExperimentSettings, run_experiment
from picojepa.train.pretrain import save_initial_encoder

CLASSES = ["move_left", "move_right", "rotate_cw"]
FAST = ["data.num_workers=0", "train.epochs=1", "train.batch_size=8"]
MEMBERS = 2
PARTIALS = [f"partial_{i}" for i in range(1, MEMBERS + 1)]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("syn") / "labelled", classes=CLASSES, videos_per_class=8,
                            size=64, frames=16, fps=8, seed=7, progress=False)


@pytest.fixture(scope="module")
def domains_run(labelled: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExperimentSettings]:
    root = tmp_path_factory.mktemp("domains")
    settings = ExperimentSettings(data=str(labelled), preset="tiny", overrides=FAST, members=MEMBERS, mode="domains",
                                  seed=5, probe_epochs=2, num_clips=2, probe_grid=False, monitor=False,
                                  allow_small_fits=True)
    run_experiment(settings, root / "exp", cache_dir=root / "cache", progress=False, figures=False,
                   quiet_tables=True)
    return root / "exp", settings


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def probabilities(rows: list[dict[str, str]], model: str, classes: list[str]) -> dict[str, np.ndarray]:
    return {Path(r["video"]).name: np.array([float(r[c]) for c in classes]) for r in rows if r["model"] == model}


# ------------------------------------------------------------------------------------ arrays
def test_routing_weights_sum_to_one_and_favour_the_nearest_centroid():
    centroids = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    videos = np.array([[0.5, 0.2], [3.6, 0.3], [0.1, 3.9], [2.0, 2.0]])
    w = routing_weights(videos, centroids, tau=1.0)
    assert w.shape == (4, 3) and np.allclose(w.sum(1), 1.0) and (w > 0).all()
    assert w[:3].argmax(1).tolist() == [0, 1, 2]
    assert np.isclose(w[3, 1], w[3, 2])  # equally far from two centroids: equal weights
    # softmax(−d²/τ): the ratio of two weights is exp((d²_j − d²_i)/τ), and a larger τ flattens the mixture.
    d2 = squared_distances(videos, centroids)
    assert w[0, 0] / w[0, 1] == pytest.approx(np.exp(d2[0, 1] - d2[0, 0]))
    assert routing_weights(videos, centroids, tau=100.0)[0].max() < w[0].max()
    far = routing_weights(np.array([[1e4, 0.0]]), centroids, tau=1e-3)  # no overflow far from everything
    assert np.allclose(far, [[0.0, 1.0, 0.0]])
    with pytest.raises(ConfigError, match="τ"):
        routing_weights(videos, centroids, tau=0.0)


def test_route_is_the_per_video_mixture_of_the_members():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(2, 4))  # 2 members, 4 videos, 3 classes
    weights = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.25, 0.75]])
    mixed = route(probs, weights)
    assert np.allclose(mixed[0], probs[0, 0]) and np.allclose(mixed[1], probs[1, 1])
    assert np.allclose(mixed[3], 0.25 * probs[0, 3] + 0.75 * probs[1, 3])
    assert np.allclose(mixed.sum(1), 1.0)
    with pytest.raises(DataError, match="routing weights"):
        route(probs, weights.T)


def test_clustering_takes_features_alone_and_rejects_a_one_video_domain():
    assert list(inspect.signature(cluster_domains).parameters) == ["features", "n", "seed"]
    rng = np.random.default_rng(1)
    blobs = np.concatenate([rng.normal(0, 0.1, (6, 4)), rng.normal(5, 0.1, (5, 4))])
    domains = cluster_domains(blobs, 2, seed=0)
    assert sorted(np.bincount(domains.assignment).tolist()) == [5, 6]
    own = squared_distances(blobs, domains.centroids)[np.arange(len(blobs)), domains.assignment]
    assert domains.tau == pytest.approx(np.median(own))
    with_outlier = np.concatenate([rng.normal(0, 0.1, (8, 4)), [[100.0, 100.0, 100.0, 100.0]]])
    with pytest.raises(DataError, match="at least 2"):
        cluster_domains(with_outlier, 2, seed=0)


# ------------------------------------------------------------------------------------ domains from the pool
def test_domains_are_the_same_when_the_labels_are_permuted(labelled, tmp_path):
    cfg = load_config("tiny", None, FAST)
    encoder = save_initial_encoder(cfg, tmp_path / "random_init")
    pool = load_videos(labelled, require_labels=True)
    labels = np.asarray(pool.labels)
    permuted = np.random.default_rng(0).permutation(labels)
    assert (permuted != labels).any()
    relabelled = VideoSet([VideoItem(it.path, int(p)) for it, p in zip(pool.items, permuted, strict=True)],
                          pool.class_names, pool.source)
    unlabelled = VideoSet([VideoItem(it.path) for it in pool.items], None, pool.source)
    groups = []
    for k, videos in enumerate((pool, relabelled, unlabelled)):
        out = tmp_path / f"run_{k}"
        out.mkdir()
        domains = pool_domains(videos, encoder, cfg, 3, seed=0, num_clips=2, out=out, cache_dir=tmp_path / "cache")
        assert all(not d.labelled for d in domains)  # a member's pool carries no labels
        groups.append([sorted(str(it.path) for it in d.items) for d in domains])
        saved = json.loads((out / "domains.json").read_text())
        assert saved["domains"] == [[str(it.path) for it in d.items] for d in domains]
    assert groups[0] == groups[1] == groups[2]
    assert sorted(p for g in groups[0] for p in g) == sorted(str(it.path) for it in pool.items)


def test_each_member_pretrains_on_its_own_domain_and_heads_use_every_label(domains_run):
    out, settings = domains_run
    report = json.loads((out / "report.json").read_text())
    pools = json.loads((out / "pretraining_pools.json").read_text())
    saved = json.loads((out / "domains.json").read_text())
    assert len(saved["domains"]) == MEMBERS and saved["sizes"] == [len(d) for d in saved["domains"]]
    for name, domain in zip(PARTIALS, saved["domains"], strict=True):
        assert sorted(pools[name]) == sorted(domain) and len(domain) >= 2
        assert report["encoders"][name]["videos"] == len(domain)
        assert report["heads"][name]["train_videos"] == report["splits"]["train"]
    assert not set(saved["domains"][0]) & set(saved["domains"][1])
    assert sorted(pools["partial_1"] + pools["partial_2"]) == sorted(pools["general"])
    assert len({report["encoders"][n]["run_dir"] for n in ["general", *PARTIALS]}) == MEMBERS + 1
    # The embedding encoder is the experiment's random-init baseline (the General's architecture and seed).
    assert Path(saved["encoder"]["run_dir"]) == Path(report["encoders"]["random_init"]["run_dir"]).resolve()
    assert saved["encoder"]["seed"] == settings.seed
    assert report["domains"]["sizes"] == saved["sizes"] and report["domains"]["tau"] == saved["tau"] > 0
    assert "domains mode" in report["ensemble_compute"]["note"]


def test_the_route_row_is_the_distance_weighted_mixture_reported_like_the_others(domains_run):
    out, settings = domains_run
    report = json.loads((out / "report.json").read_text())
    gap = report["ensembles"]["route"]["gap_vs_general"]
    assert gap["ci95"][0] <= gap["mean"] <= gap["ci95"][1]
    assert list(report["ensembles"]) == ["vote", "soft", "weighted", "stack", "route"]
    text = (out / "report.md").read_text()
    assert "| Route |" in text and "## Domains (routing)" in text and f"into {MEMBERS} domains of " in text
    fitted = json.loads((out / "ensemble.json").read_text())["methods"]["route"]
    assert fitted["tau"] == json.loads((out / "domains.json").read_text())["tau"]
    # Recompute the mixture from the members' test probabilities and the saved centroids and τ.
    rows, classes = read_csv(out / "predictions.csv"), report["classes"]
    routed = probabilities(rows, "route", classes)
    members = [probabilities(rows, name, classes) for name in PARTIALS]
    names = sorted(routed)
    routing = load_routing(out / "domains.json")
    by_name = {Path(r["video"]).name: Path(r["video"]) for r in rows}
    cfg = load_config("tiny", None, FAST)
    emb, ok = video_embeddings(routing_encoder(routing), [by_name[n] for n in names], cfg, settings.num_clips)
    assert ok.all() and len(names) == report["splits"]["test"]
    expected = route(np.stack([[m[n] for n in names] for m in members]),
                     routing_weights(emb, routing.centroids, routing.tau))
    assert np.allclose(np.stack([routed[n] for n in names]), expected, atol=1e-4)


# ------------------------------------------------------------------------------------ predict and export
def test_predict_route_reproduces_the_experiment_and_export_refuses_it(domains_run, labelled, tmp_path):
    out, _ = domains_run
    csv_path = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", "--models", str(out), "--videos", str(labelled), "--out",
                                      str(csv_path), "--aggregate", "route", "--workers", "0", "--device", "cpu",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    assert "24 videos" in result.output and "accuracy ensemble:route" in result.output
    classes = json.loads((out / "report.json").read_text())["classes"]
    new = probabilities(read_csv(csv_path), "ensemble:route", classes)
    old = probabilities(read_csv(out / "predictions.csv"), "route", classes)
    assert old and all(np.allclose(new[n], p, atol=1e-3) for n, p in old.items())
    result = CliRunner().invoke(app, ["export", "--models", str(out), "--out", str(tmp_path / "onnx"),
                                      "--aggregate", "route", "--quiet"])
    assert result.exit_code != 0 and "cannot be exported to ONNX" in str(result.exception or result.output)
    with pytest.raises(ConfigError, match="torch runtime only"):
        make_scorer("torch", [out], "route", "cpu")
    with pytest.raises(ConfigError, match="--mode domains"):  # two folders: no single experiment's domains
        predict([out, out], labelled, tmp_path / "q.csv", "route", "cpu", workers=0, progress=False)
