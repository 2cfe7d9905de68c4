"""ONNX export, ONNX Runtime prediction, int8 and streaming, on a tiny experiment built from generated clips."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_square, write_video
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.config import preset
from picojepa.data.dataset import FrameStore, eval_loader
from picojepa.datasets.synth import generate_dataset
from picojepa.deploy.export import export_graph
from picojepa.deploy.graphs import EnsembleGraph, HardVote
from picojepa.deploy.manifest import INPUT, read_manifest
from picojepa.deploy.onnx_support import INSTALL_HINT, open_session, require_onnx
from picojepa.deploy.scoring import OnnxScorer, TorchScorer, cache_settings_of, prepare_clips
from picojepa.deploy.stream import stream_windows
from picojepa.ensemble.aggregation import hard_vote
from picojepa.errors import CheckpointError, ConfigError, PicoJepaError
from picojepa.experiment.predict import predict
from picojepa.experiment.run import ExperimentSettings, run_experiment
from picojepa.models import VideoViT
from picojepa.probe.classifier import VideoClassifier, load_classifier
from picojepa.probe.heads import LinearHead

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install 'picojepa[onnx]'")

REAL_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-clips"
CLASSES = ["move_left", "move_right", "rotate_cw"]
PARTIALS = "partial_1,partial_2,partial_3,partial_4"
runner = CliRunner()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_dataset(tmp_path_factory.mktemp("labelled") / "labelled", classes=CLASSES, videos_per_class=8,
                            size=64, frames=16, fps=8, seed=5, progress=False)


@pytest.fixture(scope="module")
def experiment(videos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny preset, shared protocol: a General model and 4 Partials, 2 clips per video."""
    root = tmp_path_factory.mktemp("deploy")
    # its validation halves are below the fits' minimum: allowed, so every aggregation can be exported
    settings = ExperimentSettings(data=str(videos), preset="tiny", probe_epochs=5, num_clips=2, mode="shared",
                                  overrides=["data.num_workers=0", "train.epochs=1", "train.batch_size=8"],
                                  allow_small_fits=True)
    run_experiment(settings, root / "exp", cache_dir=root / "cache", progress=False, figures=False, quiet_tables=True)
    return root / "exp"


@pytest.fixture(scope="module")
def exported(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("onnx") / "export"
    result = runner.invoke(app, ["export", "--models", str(experiment), "--out", str(out), "--int8", "--quiet"])
    assert result.exit_code == 0, result.output
    return out


# ------------------------------------------------------------------------------------------- export
def test_export_writes_every_graph_and_a_manifest_a_consumer_can_follow(exported):
    import onnx

    manifest = read_manifest(exported)
    raw = json.loads((exported / "manifest.json").read_text())
    assert manifest.classes == CLASSES and manifest.opset == 17
    assert [m.name for m in manifest.models] == ["general", "partial_1", "partial_2", "partial_3", "partial_4"]
    assert [m.ensemble_member for m in manifest.models] == [False, True, True, True, True]
    assert manifest.ensemble.aggregation == "vote" and manifest.ensemble.members == PARTIALS.split(",")
    assert "lower class index" in raw["tie_rule"]
    s = manifest.sampling
    assert (s.frames, s.size, s.resize_side, s.frame_stride, s.clips_per_video) == (8, 64, 74, 2, 2)
    assert raw["input"]["name"] == INPUT and len(raw["preparation"]) == 4
    assert raw["checks"]["max_abs_difference"] <= 1e-4
    for file in manifest.files():
        model = onnx.load(str(exported / file))
        onnx.checker.check_model(model)
        (inp,) = model.graph.input
        dims = inp.type.tensor_type.shape.dim
        assert inp.name == "clips" and [d.dim_param for d in dims[:2]] == ["videos", "clips_per_video"]
        assert [d.dim_value for d in dims[2:]] == [3, 8, 64, 64]
        outputs = [o.name for o in model.graph.output]
        assert outputs == (["probabilities", "prediction", "member_probabilities"] if "ensemble" in file
                           else ["probabilities"])
        assert any(op.version == 17 for op in model.opset_import if op.domain in ("", "ai.onnx"))
    for m in manifest.models:
        assert (exported / m.int8_file).stat().st_size < 0.6 * (exported / m.file).stat().st_size


def test_graphs_match_torch_on_real_clips(experiment, exported):
    if not REAL_CLIPS.is_dir():
        pytest.skip("shared real clips not present")
    manifest = read_manifest(exported)
    paths = sorted(REAL_CLIPS.glob("*.mp4"))
    store = FrameStore(paths, cache_settings_of(manifest.sampling), cache=None)
    items = next(iter(eval_loader(store, 8, manifest.sampling.clips_per_video, len(paths), 0)))
    assert all(err is None for _, _, err in items)
    clips = np.stack([c for _, c, _ in items])  # (3 videos, K, T, S, S, 3) uint8
    x = {INPUT: prepare_clips(clips, manifest.sampling.size)}
    want = {}
    for m in manifest.models:
        want[m.name] = load_classifier(experiment / "classifiers" / m.name).proba_from_clips(
            torch.from_numpy(clips.reshape(-1, *clips.shape[2:]))).numpy()
        got = open_session(exported / m.file).run(None, x)[0]
        assert np.abs(got - want[m.name]).max() < 1e-4, m.name
        assert (got.argmax(1) == want[m.name].argmax(1)).all(), m.name
    fractions, prediction, members = open_session(exported / manifest.ensemble.file).run(None, x)
    torch_members = np.stack([want[n] for n in manifest.ensemble.members])
    assert np.abs(members - torch_members).max() < 1e-4
    pred, counts = hard_vote(members.astype(np.float64))
    assert (prediction == pred).all() and np.array_equal(fractions, counts / 4)
    assert (prediction == hard_vote(torch_members)[0]).all()


@pytest.fixture(scope="module")
def test_split(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The experiment's test videos, in class folders."""
    root = tmp_path_factory.mktemp("test-split")
    splits = json.loads((experiment / "splits.json").read_text())
    for video in splits["splits"]["test"]:
        (root / splits["labels"][video]).mkdir(exist_ok=True)
        (root / splits["labels"][video] / Path(video).name).symlink_to(video)
    return root


@pytest.mark.parametrize("method", ["vote", "weighted", "stack"])  # soft is weighted with equal weights
def test_onnx_predict_reproduces_torch_predict_on_the_test_split(experiment, exported, test_split, tmp_path, method):
    """Same videos, same CSV: every row's prediction equal, probabilities within 1e-4, and the ensemble row, from
    the ensemble graph, equal to predict's aggregation of the torch members."""
    out = exported
    if method != "vote":  # the ensemble members only: weighted and stack need all of them, general is not one
        out = tmp_path / "onnx"
        result = runner.invoke(app, ["export", "--models", str(experiment), "--out", str(out), "--aggregate",
                                     method, "--members", PARTIALS, "--quiet"])
        assert result.exit_code == 0, result.output
    torch_csv, onnx_csv = tmp_path / "torch.csv", tmp_path / "onnx.csv"
    predict([experiment], test_split, torch_csv, method, "cpu", workers=0, progress=False)
    result = runner.invoke(app, ["predict", "--models", str(out), "--runtime", "onnx", "--videos", str(test_split),
                                 "--out", str(onnx_csv), "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"accuracy ensemble:{method}" in result.output
    models = {m.name for m in read_manifest(out).models} | {f"ensemble:{method}"}
    want = [r for r in read_csv(torch_csv) if r["model"] in models]
    got = read_csv(onnx_csv)
    videos = len(list(test_split.rglob("*.mp4")))
    assert videos >= 3 and len(got) == len(want) == videos * len(models)
    for a, b in zip(got, want, strict=True):
        assert (a["video"], a["model"], a["pred"], a["label"]) == (b["video"], b["model"], b["pred"], b["label"])
        assert max(abs(float(a[c]) - float(b[c])) for c in CLASSES) < 1e-4


def test_int8_graphs_load_and_run_close_to_fp32(exported, videos, tmp_path):
    fp32, int8 = (OnnxScorer(exported, int8=q) for q in (False, True))
    store = FrameStore(sorted(videos.rglob("*.mp4"))[:6], cache_settings_of(fp32.sampling), cache=None)
    clips = np.stack([c for _, c, _ in next(iter(eval_loader(store, 8, 2, 6, 0)))])
    a, b = fp32(clips), int8(clips)
    assert np.allclose(b.models.sum(-1), 1, atol=1e-5)
    # int8 kernels differ between CPUs (with or without VNNI): a tiny model's worst probability moved 0.068 on one
    error = np.abs(a.models - b.models)
    assert error.mean() < 0.03 and error.max() < 0.1, (error.mean(), error.max())
    result = runner.invoke(app, ["predict", "--models", str(exported), "--runtime", "onnx", "--int8", "--videos",
                                 str(videos), "--out", str(tmp_path / "int8.csv"), "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    assert len(read_csv(tmp_path / "int8.csv")) == 24 * 6


# ------------------------------------------------------------------------------------------- the vote tie rule
def dyadic_probabilities(rng: np.random.Generator, members: int, samples: int) -> np.ndarray:
    """(members, samples, 4) probabilities made of exactly representable values, so that votes and summed
    probabilities tie often."""
    rows = np.array([[0.5, 0.25, 0.25, 0.0], [0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]],
                    dtype=np.float32)
    picked = rows[rng.integers(len(rows), size=(members, samples))]
    return rng.permuted(picked, axis=2)


def test_vote_graph_reproduces_the_tie_rule_on_crafted_ties(tmp_path):
    crafted = np.array([  # (members, samples, classes): sample i is case i
        [[0.55, 0.05, 0.40, 0.0], [0.0, 0.7, 0.3, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.45, 0.05, 0.0]],
        [[0.60, 0.00, 0.40, 0.0], [0.0, 0.6, 0.4, 0.0], [0.0, 1.0, 0.0, 0.0], [0.5, 0.45, 0.05, 0.0]],
        [[0.10, 0.00, 0.90, 0.0], [0.0, 0.3, 0.7, 0.0], [0.0, 0.0, 1.0, 0.0], [0.05, 0.45, 0.5, 0.0]],
        [[0.00, 0.00, 1.00, 0.0], [0.0, 0.4, 0.6, 0.0], [0.0, 0.0, 0.0, 1.0], [0.05, 0.45, 0.5, 0.0]],
    ], dtype=np.float32)
    # case 0: classes 0 and 2 have 2 votes each, class 2 the larger sum (2.7 vs 1.25) → 2
    # case 1: classes 1 and 2 have 2 votes each and equal sums (2.0) → the lower index, 1
    # case 2: a member tied inside itself votes its lower index (0); four classes with one vote each, sums
    #         0.25, 1.25, 1.25, 1.25 → 1 (the larger sum, then the lower index)
    # case 3: classes 0 and 2 tie on votes and on sums (1.1); class 1 has the largest sum but fewer votes → 0
    expected = [2, 1, 1, 0]
    assert hard_vote(crafted.astype(np.float64))[0].tolist() == expected
    rng = np.random.default_rng(0)
    probs = np.concatenate([crafted, dyadic_probabilities(rng, 4, 2000)], axis=1)
    path = tmp_path / "vote.onnx"
    export_graph(HardVote(4, 4), torch.from_numpy(probs[:, :3]), path, ["probabilities", "prediction"])
    session = open_session(path)
    feed = {session.get_inputs()[0].name: probs}
    fractions, prediction = session.run(None, feed)
    pred, counts = hard_vote(probs.astype(np.float64))
    assert prediction[:4].tolist() == expected
    assert np.array_equal(prediction, pred) and np.array_equal(fractions, counts / 4)
    # the random part exercises both steps of the rule: ties on votes, and ties on votes and sums
    tied = counts == counts.max(1, keepdims=True)
    summed = np.where(tied, probs.astype(np.float64).sum(0), -np.inf)
    index_decides = (summed == summed.max(1, keepdims=True)).sum(1) > 1
    assert (tied.sum(1) > 1).sum() > 200 and index_decides.sum() > 20


def bias_only_member(probs: list[float]) -> VideoClassifier:
    """A classifier whose output is ``probs`` whatever the clip (zero weights, log-probability biases)."""
    cfg = preset("tiny")
    head = LinearHead(cfg.model.embed_dim, len(probs))
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.bias.copy_(torch.log(torch.tensor(probs)))
    torch.manual_seed(0)
    return VideoClassifier(VideoViT(cfg.model), head, "linear", ["a", "b", "c"], cfg, num_clips=1).eval()


@pytest.mark.parametrize(("rows", "expected"), [
    ([[0.1, 0.1, 0.8], [0.1, 0.1, 0.8], [0.6, 0.3, 0.1], [0.6, 0.3, 0.1]], 2),  # 2-2 tie: class 2 sums 1.8 > 1.4
    ([[0.6, 0.3, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1], [0.3, 0.6, 0.1]], 0),  # 2-2 tie, equal sums: lower index
])
def test_ensemble_graph_applies_the_tie_rule_end_to_end(tmp_path, rows, expected):
    graph = EnsembleGraph([bias_only_member(r) for r in rows], HardVote(4, 3))
    clips = torch.randn(2, 1, 3, 8, 64, 64, generator=torch.Generator().manual_seed(0))
    export_graph(graph, clips, tmp_path / "ensemble.onnx", ["probabilities", "prediction", "member_probabilities"])
    fractions, prediction, members = open_session(tmp_path / "ensemble.onnx").run(None, {INPUT: clips.numpy()})
    assert np.allclose(members, np.array(rows, dtype=np.float32)[:, None], atol=1e-6)
    assert prediction.tolist() == [expected, expected] and np.allclose(fractions[0][expected], 0.5)
    assert graph(clips)[1].tolist() == [expected, expected]  # the torch module agrees


# ------------------------------------------------------------------------------------------- streaming
@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 frames at 12 fps: exactly 10 s."""
    return write_video(tmp_path_factory.mktemp("stream") / "ten.mp4", moving_square(120, 64, 64, 1, 3), fps=12)


@pytest.mark.parametrize(("window", "hop", "starts"), [
    (2.0, 1.0, [0, 1, 2, 3, 4, 5, 6, 7, 8]),  # the last window ends exactly at 10 s
    (3.0, 2.0, [0, 2, 4, 6]),  # [8, 11) would run past the end
    (1.0, 3.0, [0, 3, 6, 9]),  # hops longer than windows leave gaps
    (2.5, 2.5, [0, 2.5, 5, 7.5]),
])
def test_stream_windows_have_the_expected_count_and_times(exported, ten_seconds, window, hop, starts):
    sampling = read_manifest(exported).sampling  # every 2nd frame kept: 6 kept frames per second
    windows = list(stream_windows(ten_seconds, sampling, window, hop))
    assert [w.start for w, _ in windows] == starts
    assert [w.end for w, _ in windows] == [s + window for s in starts]
    assert [w.index for w, _ in windows] == list(range(len(starts)))
    for _, clips in windows:
        assert clips.shape == (2, 8, 74, 74, 3) and clips.dtype == np.uint8


def test_stream_shorter_than_a_window_and_bad_settings(exported, ten_seconds):
    sampling = read_manifest(exported).sampling
    (only,) = list(stream_windows(ten_seconds, sampling, 60.0, 60.0))
    assert (only[0].start, only[0].end) == (0.0, 10.0)
    with pytest.raises(ConfigError, match="positive"):
        list(stream_windows(ten_seconds, sampling, 2.0, 0.0))
    with pytest.raises(ConfigError, match="can miss every kept frame"):
        list(stream_windows(ten_seconds, sampling, 0.1, 1.0))


def test_stream_predictions_torch_and_onnx_agree_and_match_batch_predict(experiment, exported, tmp_path):
    clip = write_video(tmp_path / "v" / "four.mp4", moving_square(48, 64, 64, 0, 1), fps=12)  # 4 s, 24 kept frames
    rows = {}
    for runtime, models, out in (("torch", experiment, "t.csv"), ("onnx", exported, "o.jsonl")):
        result = runner.invoke(app, ["predict", "--models", str(models), "--runtime", runtime, "--stream", str(clip),
                                     "--window-seconds", "2", "--hop-seconds", "1", "--out", str(tmp_path / out),
                                     "--quiet"])
        assert result.exit_code == 0, result.output
        assert "3 windows of 2 s every 1 s" in result.output
    rows["torch"] = read_csv(tmp_path / "t.csv")
    rows["onnx"] = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(rows["torch"]) == len(rows["onnx"]) == 3 * 6
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        assert (int(a["window"]), float(a["start_s"]), float(a["end_s"]), a["model"], a["pred"]) == (
            b["window"], b["start_s"], b["end_s"], b["model"], b["pred"])
        assert max(abs(float(a[c]) - b["probabilities"][c]) for c in CLASSES) < 1e-4
    # One window over the whole clip is predicted exactly as batch predict predicts the clip.
    scorer = TorchScorer([experiment], "vote", "cpu")
    (window, clips), = stream_windows(clip, scorer.sampling, 4.0, 4.0)
    assert (window.start, window.end) == (0.0, 4.0)
    predict([experiment], clip.parent, tmp_path / "batch.csv", "vote", "cpu", workers=0, progress=False)
    batch = {r["model"]: [float(r[c]) for c in CLASSES] for r in read_csv(tmp_path / "batch.csv")}
    scores = scorer(clips[None])
    for m, name in enumerate(scorer.names):
        assert np.allclose(scores.models[m, 0], batch[name], atol=2e-6), name


# ------------------------------------------------------------------------------------------- clear errors
def test_clear_errors(experiment, exported, tmp_path):
    with pytest.raises(CheckpointError, match="not an ONNX export folder"):
        OnnxScorer(experiment)
    with pytest.raises(ConfigError, match="exported with --aggregate vote"):
        OnnxScorer(exported, "stack")
    result = runner.invoke(app, ["export", "--models", str(experiment), "--out", str(tmp_path / "x"), "--members",
                                 "partial_9"])
    assert "unknown model(s) partial_9" in str(result.exception)
    result = runner.invoke(app, ["export", "--models", str(experiment / "classifiers" / "partial_1"),
                                 str(experiment / "classifiers" / "partial_2"), "--out", str(tmp_path / "y"),
                                 "--aggregate", "stack"])
    assert "needs parameters fitted on a validation split" in str(result.exception)
    result = runner.invoke(app, ["export", "--models", str(experiment), "--out", str(tmp_path / "z"),
                                 "--aggregate", "weighted", "--members", "partial_1,partial_2"])
    assert "export with --members all" in str(result.exception)


def test_missing_onnx_gives_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` raise ImportError
    with pytest.raises(PicoJepaError, match=re.escape(INSTALL_HINT)):
        require_onnx()
    result = runner.invoke(app, ["export", "--models", str(tmp_path), "--out", str(tmp_path / "out")])
    assert isinstance(result.exception, PicoJepaError)  # the CLI prints it as one line, exit status 2
    assert "onnxruntime is missing" in str(result.exception) and INSTALL_HINT in str(result.exception)
