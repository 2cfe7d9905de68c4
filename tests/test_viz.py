"""Figures: every function and command writes a non-blank image of the expected size, mask views shade
exactly the masked tubelets, silhouettes rank real clusters above shuffled labels."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from typer.testing import CliRunner

from picojepa.cli import app
from picojepa.config import load_config, preset
from picojepa.ensemble.report import ReportInputs, write_report
from picojepa.errors import ConfigError, DataError, PicoJepaError
from picojepa.masks import MaskGenerator
from picojepa.models import VideoViT
from picojepa.train.checkpoint import save_encoder, write_run_config
from picojepa.viz import (
    MODEL_COLORS,
    accuracy_bars,
    confidence_bars,
    confusion_matrices,
    embed_videos,
    plot_curves,
    plot_masks,
    plot_tsne,
    save,
    shade_masked,
    silhouette,
    tubelet_pixel_mask,
)
from picojepa.viz.masks import draw_mask, draw_slice_masks, encoder_grid
from picojepa.viz.report_figures import confusion_counts
from picojepa.viz.style import new_figure

REAL_CLIPS = Path("/work/shared/data/real-clips")
runner = CliRunner()


def read_png(path: Path, width: int | None = None, height: int | None = None) -> np.ndarray:
    """The image, checked to be a real picture: the expected size (when given) and not blank."""
    assert path.is_file(), path
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    if width is not None:
        assert image.shape[1] == width, image.shape
    if height is not None:
        assert image.shape[0] == height, image.shape
    assert 300 <= image.shape[0] <= 5000 and 300 <= image.shape[1] <= 5000, image.shape
    assert image[..., :3].std() > 0.05, "blank image"
    assert not list(path.parent.glob(f".{path.name}.*")), "temporary file left behind"
    return image


# ---------------------------------------------------------------------------------------------- style


def test_every_model_name_has_its_own_colour_and_save_is_atomic(tmp_path):
    assert len(set(MODEL_COLORS.values())) == len(MODEL_COLORS) == 16
    fig = new_figure(4, 3)
    fig.subplots().plot([0, 1], [0, 1])
    read_png(save(fig, tmp_path / "sub" / "line.png"), width=600, height=450)
    with pytest.raises(PicoJepaError, match="cannot write a figure"):
        save(new_figure(4, 3), tmp_path / "line.xyz")


# ---------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize(("preset_name", "mask_type"), [("pico", "multiblock"), ("pico-112", "tube"),
                                                         ("tiny", "multiblock")])
def test_shading_covers_exactly_the_masked_tubelets(preset_name, mask_type):
    cfg = preset(preset_name)
    grid, p, t = encoder_grid(cfg), cfg.model.patch_size, cfg.model.tubelet_size
    spatial = draw_mask(cfg, mask_type, seed=3)
    # The same draw as MaskGenerator's; its target indices are the ground truth for every time slice.
    batch = MaskGenerator(grid, replace(cfg.mask, type=mask_type))(1, 3)
    assert np.array_equal(batch.spatial[0].numpy(), spatial)
    frames = np.random.default_rng(0).integers(30, 256, (cfg.model.num_frames, grid[1] * p, grid[2] * p, 3),
                                               dtype=np.uint8)
    shaded, pixels = shade_masked(frames, spatial, grid[1:], p)
    expected = np.zeros((cfg.model.num_frames, grid[1] * p, grid[2] * p), dtype=bool)
    for token in batch.target[0].tolist():
        s, rest = divmod(token, grid[1] * grid[2])
        h, w = divmod(rest, grid[2])
        expected[s * t:(s + 1) * t, h * p:(h + 1) * p, w * p:(w + 1) * p] = True
    assert np.array_equal(np.broadcast_to(pixels, expected.shape), expected)
    assert np.array_equal(tubelet_pixel_mask(spatial, grid[1:], p), pixels)
    changed = (shaded != frames).any(axis=-1)
    assert not changed[~expected].any(), "context pixels must stay untouched"
    assert changed[expected].mean() > 0.95
    assert shaded[expected].mean() < frames[expected].mean() - 40  # visibly darker


@pytest.mark.parametrize(("mask_type", "future_slices"), [("future", 1), ("future", 3), ("tube", 2),
                                                          ("multiblock", 0)])
def test_slice_masks_match_the_target_tokens_including_future_slices(mask_type, future_slices):
    cfg = preset("tiny")
    grid = encoder_grid(cfg)
    masks = draw_slice_masks(cfg, mask_type, seed=4, future_slices=future_slices)
    mask = replace(cfg.mask, type=mask_type, future_slices=future_slices)
    target = MaskGenerator(grid, mask)(1, 4).target[0].numpy()
    assert np.array_equal(np.flatnonzero(masks.reshape(-1)), np.sort(target))
    past = grid[0] - future_slices
    assert masks[past:].all(), "future slices are predicted whole"
    if mask_type == "future":
        assert not masks[:past].any(), "the past is all context"
    else:  # the same spatial positions in every past slice (a tube through time)
        assert (masks[:past] == masks[0]).all() and 0 < masks[0].sum() < masks.shape[1]


def test_draw_mask_of_a_future_config_is_an_empty_spatial_mask():
    cfg = load_config("tiny", overrides=["mask.type=future", "mask.future_slices=1"])
    spatial = draw_mask(cfg)
    assert spatial.shape == (encoder_grid(cfg)[1] * encoder_grid(cfg)[2],) and not spatial.any()


def test_plot_masks_shades_the_future_slices_whole(tmp_path, video_folder):
    video = video_folder / "left" / "left_0.mp4"
    cfg = preset("tiny")
    out = plot_masks(video, tmp_path / "future.png", cfg, mask_type="future", seed=0)
    read_png(out)
    result = runner.invoke(app, ["viz", "masks", str(video), "--out", str(tmp_path / "f.png"), "--preset", "tiny",
                                 "--mask", "future", "--future-slices", "2"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="future slices must be in"):
        plot_masks(video, tmp_path / "x.png", cfg, mask_type="future", future_slices=0)
    with pytest.raises(ConfigError, match="future slices must be in"):
        plot_masks(video, tmp_path / "x.png", cfg, mask_type="tube", future_slices=encoder_grid(cfg)[0])


@pytest.mark.parametrize(("video", "preset_name", "side"), [("carphone_pristine.mp4", "tiny", 64),
                                                            ("bikes.mp4", "pico-112", 112)])
def test_plot_masks_on_real_clips(tmp_path, video, preset_name, side):
    path = REAL_CLIPS / video
    if not path.is_file():
        pytest.skip(f"{path} not available")
    cfg = preset(preset_name)
    out = plot_masks(path, tmp_path / "masks.png", cfg, mask_type="tube", seed=1)
    # 2 frames per slice × 4 slices of 1.9-in tiles + margins, at 150 dpi.
    image = read_png(out, width=round((2 * 1.9 + 0.9) * 150), height=round((4 * 1.9 + 1.3) * 150))
    assert image.shape[2] in (3, 4)


def test_masks_command_and_its_errors(tmp_path, video_folder):
    video = video_folder / "left" / "left_0.mp4"
    result = runner.invoke(app, ["viz", "masks", str(video), "--out", str(tmp_path / "m.png"), "--preset", "tiny",
                                 "--mask", "multiblock", "--seed", "2"])
    assert result.exit_code == 0, result.output
    read_png(tmp_path / "m.png")
    with pytest.raises(DataError, match="file not found"):
        plot_masks(tmp_path / "missing.mp4", tmp_path / "x.png", preset("tiny"))
    with pytest.raises(ConfigError, match="unknown mask type"):
        plot_masks(video, tmp_path / "x.png", preset("tiny"), mask_type="random")


# ---------------------------------------------------------------------------------------------- t-SNE


def clusters(n: int = 36, dim: int = 32, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    return rng.normal(size=(classes, dim))[y] * 3 + rng.normal(size=(n, dim)), y


def test_tsne_silhouette_is_measured_in_embedding_space(tmp_path):
    X, y = clusters()
    shuffled = np.random.default_rng(1).permutation(y)
    assert silhouette(X, y) > 0.5 > silhouette(X, shuffled) + 0.3
    scores = plot_tsne([("General", X, y), ("Shuffled", X, shuffled)], ["a", "b", "c"], tmp_path / "t.png",
                       progress=False)
    assert scores["General"] == pytest.approx(silhouette(X, y))
    assert scores["General"] > scores["Shuffled"]
    read_png(tmp_path / "t.png")


def test_tsne_refuses_too_few_videos_or_one_class(tmp_path):
    X, y = clusters(n=4)
    with pytest.raises(DataError, match="at least"):
        plot_tsne([("tiny", X, y)], ["a", "b", "c"], tmp_path / "t.png", progress=False)
    X, y = clusters()
    with pytest.raises(DataError, match="one class"):
        plot_tsne([("one", X, np.zeros_like(y))], ["a"], tmp_path / "t.png", progress=False)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with a random tiny encoder and a short metrics.jsonl (pretraining is not needed here)."""
    out = tmp_path_factory.mktemp("runs") / "general"
    cfg = preset("tiny")
    torch.manual_seed(0)
    save_encoder(VideoViT(cfg.model), out)
    write_run_config(out, cfg, finished=True)
    write_metrics(out, steps=30)
    return out


def test_embed_videos_from_a_run_and_a_classifier_folder(tiny_run, video_folder, tmp_path):
    X, y, names = embed_videos(tiny_run, video_folder, videos_per_class=4, progress=False,
                               cache_dir=tmp_path / "cache")
    assert X.shape == (8, 64) and names == ["left", "right"] and sorted(np.bincount(y)) == [4, 4]
    classifier = tmp_path / "clf"
    classifier.mkdir()
    (classifier / "config.json").write_text(json.dumps({
        "kind": "picojepa-classifier", "encoder": {"run_dir": str(tiny_run)}, "encoder_embedded": False}))
    X2, y2, _ = embed_videos(classifier, video_folder, videos_per_class=4, progress=False,
                             cache_dir=tmp_path / "cache")
    assert np.allclose(X, X2) and np.array_equal(y, y2)


def test_tsne_command_end_to_end(tiny_run, video_folder, tmp_path):
    out = tmp_path / "tsne.png"
    result = runner.invoke(app, ["viz", "tsne", "--models", str(tiny_run), str(tiny_run), "--data",
                                 str(video_folder), "--out", str(out), "--videos-per-class", "3", "--num-clips",
                                 "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.count("silhouette") == 2
    read_png(out)


def test_tsne_command_errors(tiny_run, video_folder, tmp_path):
    unlabelled = tmp_path / "flat"
    unlabelled.mkdir()
    (unlabelled / "a.mp4").write_bytes((video_folder / "left" / "left_0.mp4").read_bytes())
    result = runner.invoke(app, ["viz", "tsne", "--models", str(tiny_run), "--data", str(unlabelled), "--out",
                                 str(tmp_path / "t.png"), "--cache-dir", str(tmp_path / "cache"), "-q"])
    assert isinstance(result.exception, DataError) and "no labels" in str(result.exception)
    result = runner.invoke(app, ["viz", "tsne", "--models", str(tmp_path / "nope"), "--data", str(video_folder),
                                 "--out", str(tmp_path / "t.png"), "-q"])
    assert isinstance(result.exception, DataError) and "not found" in str(result.exception)
    result = runner.invoke(app, ["viz", "tsne", "--data", str(video_folder), "--out", str(tmp_path / "t.png")])
    assert isinstance(result.exception, DataError) and "at least one model" in str(result.exception)


# ---------------------------------------------------------------------------------------------- curves


def write_metrics(run_dir: Path, steps: int, offset: float = 0.0, truncated_tail: bool = True) -> None:
    rows = []
    for step in range(5, steps + 1, 5):
        f = step / steps
        rows.append({"step": step, "loss": 0.2 + offset + 0.8 * np.exp(-3 * f), "lr": 1e-3 * min(1.0, 4 * f),
                     "weight_decay": 0.04 + 0.36 * f, "momentum": 0.996 + 0.004 * f, "target_std": 0.5 - 0.1 * f,
                     "target_rank": 30.0 - 5 * f})
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (run_dir / "metrics.jsonl").write_text(text + ('{"step": 99, "lo' if truncated_tail else ""))


def test_curves_overlay_runs_in_model_colours(tmp_path):
    dirs = []
    for k, name in enumerate(["general", "partial_1", "partial_2"]):
        run = tmp_path / name
        run.mkdir()
        write_metrics(run, steps=60 if k == 0 else 30, offset=0.05 * k)
        dirs.append(run)
    read_png(plot_curves(dirs, tmp_path / "curves.png", labels=["general", "partial_1", "my run"]), width=1800,
             height=990)


def test_curves_command_and_errors(tiny_run, tmp_path):
    result = runner.invoke(app, ["viz", "curves", str(tiny_run), "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    read_png(tmp_path / "c.png", width=1800, height=990)
    with pytest.raises(DataError, match=r"has no metrics\.jsonl"):
        plot_curves(tmp_path, tmp_path / "x.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\nnot json\n{"step": 2, "loss": 0.5}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not valid JSON"):
        plot_curves(broken, tmp_path / "x.png")
    with pytest.raises(DataError, match="labels"):
        plot_curves([tiny_run], tmp_path / "x.png", labels=["a", "b"])


# ---------------------------------------------------------------------------------------------- report figures


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """A small report (General, 3 Partials, 4 aggregations, 4 classes) written by picojepa.ensemble.report."""
    from picojepa.ensemble.aggregation import Ensemble

    rng = np.random.default_rng(0)
    classes = ["archery", "bowling_ball", "playing_guitar", "cycling"]
    y = np.arange(32) % 4

    def probs(skill: float) -> np.ndarray:
        target = np.where(rng.random(len(y)) < skill, y, rng.integers(0, 4, len(y)))
        p = rng.dirichlet(np.ones(4), size=len(y)) * 0.5
        p[np.arange(len(y)), target] += 0.5
        return p

    val = np.stack([probs(s) for s in (0.6, 0.65, 0.7)])
    test = np.stack([probs(s) for s in (0.6, 0.65, 0.7)])
    ensembles, predictions = {}, {}
    for method in ("vote", "soft", "weighted", "stack"):
        ens = Ensemble.from_probabilities({"val": val, "test": test}, method=method, seed=0).fit("val", y)
        ensembles[method], predictions[method] = ens.predict_proba("test"), ens.predict("test")
    inputs = ReportInputs(
        class_names=classes, test_videos=[f"v{i}.mp4" for i in range(len(y))], test_labels=y,
        models={"general": probs(0.85)} | {f"partial_{k + 1}": test[k] for k in range(3)},
        ensembles=ensembles, predictions=predictions, best_single="partial_3",
    )
    out = tmp_path_factory.mktemp("report")
    return write_report(out, inputs, n_resamples=200), out


def test_report_figures(report_dir, tmp_path):
    report, folder = report_dir
    read_png(accuracy_bars(report, tmp_path / "accuracy.png"))
    read_png(confidence_bars(report, tmp_path / "confidence.png"))
    read_png(confusion_matrices(folder / "predictions.csv", tmp_path / "confusion.png"))
    general_only = {**report, "models": {"general": report["models"]["general"]}, "ensembles": {},
                    "reference": {}}
    read_png(accuracy_bars(general_only, tmp_path / "general.png"))
    with pytest.raises(DataError):
        confusion_matrices(tmp_path / "missing.csv", tmp_path / "x.png")


def test_confusion_counts_rows_are_true_classes():
    from sklearn.metrics import confusion_matrix

    y, pred = np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2])
    assert np.array_equal(confusion_counts(y, pred, 3), confusion_matrix(y, pred, labels=[0, 1, 2]))


def test_tsne_titles_fit_inside_the_figure_even_with_one_panel():
    from picojepa.viz.tsne import _figure

    rng = np.random.default_rng(0)
    Z, y = rng.normal(size=(40, 2)), np.arange(40) % 4
    fig = _figure([("General = every Partial (one shared encoder)", Z, y)], {"General = every Partial "
                                                                            "(one shared encoder)": 0.1},
                  ["a", "b", "c", "d"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    texts = [fig._suptitle, *(ax.title for ax in fig.axes)]
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, text.get_text()


def test_curves_of_a_one_step_run_show_their_points_and_monitor_panels(tmp_path):
    from picojepa.viz.curves import Run, _figure

    row = {"step": 10, "loss": 0.5, "lr": 1e-4, "weight_decay": 0.04, "momentum": 0.99, "target_std": 0.5,
           "target_rank": 20.0}
    fig = _figure([Run("general", [row])])
    lines = [line for ax in fig.axes for line in ax.get_lines() if len(line.get_xdata())]
    assert len(lines) == 6 and all(line.get_marker() == "o" for line in lines)
    # Without a learning monitor the figure keeps its six panels; with one it adds probe and local share.
    assert len(fig.axes) == 6
    monitored = [{"step": 0, "probe_ema": 0.3, "probe_online": 0.3, "heldout_local_share_ema": 0.2,
                  "heldout_local_share_online": 0.2}, {**row, "probe_ema": 0.5, "probe_online": 0.45,
                                                       "heldout_local_share_ema": 0.1,
                                                       "heldout_local_share_online": 0.12}]
    fig = _figure([Run("general", monitored)])
    assert len(fig.axes) == 8
    probe_ax = next(ax for ax in fig.axes if "probe accuracy" in ax.get_title())
    random_level = [line for line in probe_ax.get_lines() if line.get_linestyle() == "--"]
    assert random_level and random_level[0].get_ydata()[0] == pytest.approx(0.3)
