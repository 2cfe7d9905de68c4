"""The pretraining recipe: EMA relative to run length, schedule stretch, regularisers, two masks, monitor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import moving_square, write_video

from picojepa.config import load_config, preset
from picojepa.data.prepare import prepare_videos
from picojepa.data.sources import load_videos
from picojepa.errors import ConfigError, PicoJepaError
from picojepa.masks import MaskSampler
from picojepa.models import JEPA
from picojepa.models.jepa import normalise_targets
from picojepa.models.regularizers import content_residual, epps_pulley, sigreg, vicreg
from picojepa.probe.monitor import ProbeMonitor, knn_accuracy
from picojepa.train.pretrain import Schedules, Trainer, build_optimizer, initial_encoder, pretrain
from picojepa.train.schedules import capped_momenta


@pytest.mark.parametrize("steps", [10, 24, 120, 500])
def test_ema_target_keeps_under_one_percent_of_its_init_after_a_short_run(steps):
    cfg = preset("tiny")
    schedules = Schedules(cfg, steps)
    model = JEPA(cfg.model)
    with torch.no_grad():
        for p in model.target_encoder.parameters():
            p.fill_(1.0)  # "initialisation"
        for p in model.encoder.parameters():
            p.zero_()  # the online weights the target should move to
    for step in range(steps):
        model.update_target(schedules.momentum(step))
    left = max(float(p.abs().max()) for p in model.target_encoder.parameters())
    assert schedules.init_fraction() < 0.01
    assert left < 0.01 * (1 + 1e-5)  # float32 lerp rounding on top of the schedule's exact bound
    assert math.isclose(left, schedules.init_fraction(), rel_tol=1e-4)
    assert all(a <= b + 1e-12 for a, b in zip(schedules.momenta, schedules.momenta[1:], strict=False))


def test_momentum_cap_only_applies_when_needed():
    long_run = [0.9] * 100  # 0.9 ** 100 is far below 1 %
    assert capped_momenta(long_run, 0.01) == long_run
    capped = capped_momenta([0.999] * 50, 0.01)
    assert math.isclose(math.prod(capped), 0.01, rel_tol=1e-6)


def test_schedule_stretch_keeps_lr_above_its_floor_and_momentum_below_its_end():
    cfg = preset("tiny")
    cfg.train.ema_max_init_fraction = 1.0  # look at the stretch alone
    stretched = Schedules(cfg, 1000)
    assert stretched.lr(999) > 10 * cfg.train.min_lr
    assert stretched.momentum(999) < cfg.train.ema_end
    cfg.train.schedule_stretch = 1.0
    assert math.isclose(Schedules(cfg, 1000).lr(999), cfg.train.min_lr, rel_tol=0.05, abs_tol=1e-6)


def test_regulariser_weight_is_constant_by_default_and_follows_its_schedule_when_set():
    from picojepa.train.pretrain import TrainBatch

    cfg = preset("tiny")
    assert {Schedules(cfg, 100).reg_weight(s) for s in (0, 50, 99)} == {cfg.train.reg_weight}
    cfg.train.reg_weight, cfg.train.reg_weight_final = 2.0, 0.0
    weights = [Schedules(cfg, 100).reg_weight(s) for s in range(100)]
    assert weights[0] == pytest.approx(2.0) and weights[-1] < 0.25  # the schedule stretch stops short of 0
    assert (np.diff(weights) <= 0).all()
    # a step trains on that step's weight: loss = prediction + w(step) · regulariser
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=100)
    frames = torch.randint(0, 255, (4, cfg.model.num_frames, 72, 72, 3), dtype=torch.uint8)
    out = trainer.step(TrainBatch(frames, trainer.masks(4, [0, 80]), 80, []))
    assert float(out.regularizer) > 0
    assert float(out.loss) == pytest.approx(float(out.prediction_loss) + weights[80] * float(out.regularizer),
                                            rel=1e-5)
    with pytest.raises(ConfigError, match="reg_weight_final"):
        load_config("tiny", overrides=["train.regularizer=none", "train.reg_weight_final=0"])


def test_sigreg_is_small_for_gaussian_samples_and_large_for_collapsed_ones():
    gen = torch.Generator().manual_seed(0)
    gaussian = torch.randn(1024, 64, generator=gen)
    collapsed = torch.randn(1024, 1, generator=gen) * torch.ones(1, 64)  # every dimension the same
    shrunk = 0.1 * torch.randn(1024, 64, generator=gen)
    g = float(sigreg(gaussian, 128, torch.Generator().manual_seed(1)))
    assert g < 2.0
    assert float(sigreg(collapsed, 128, torch.Generator().manual_seed(1))) > 10 * g
    assert float(sigreg(shrunk, 128, torch.Generator().manual_seed(1))) > 10 * g
    # The statistic grows with the sample size only when the distribution is wrong.
    assert float(epps_pulley(torch.zeros(512, 1))) > 50


def test_vicreg_penalises_low_variance_and_correlation():
    gen = torch.Generator().manual_seed(0)
    spread = 1.2 * torch.randn(2048, 16, generator=gen)
    assert float(vicreg(spread)) < 0.1
    assert float(vicreg(spread * 0.01)) > 0.9
    correlated = torch.randn(2048, 1, generator=gen).repeat(1, 16) * 2
    assert float(vicreg(correlated)) > 10


def test_vicreg_variance_hinge_stops_at_its_target_std():
    spread = 0.5 * torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    independent = spread / spread.std(dim=0)  # std exactly 1, so only the hinge differs below
    assert float(vicreg(0.5 * independent, std_target=0.45)) < 0.01  # satisfied: only tiny covariances left
    assert abs(float(vicreg(0.5 * independent, std_target=1.0)) - 0.5) < 0.02  # 0.5 short of the target


def test_vicreg_covariance_weight_scales_only_the_covariance_term():
    gen = torch.Generator().manual_seed(0)
    correlated = torch.randn(2048, 1, generator=gen).repeat(1, 16) * 2 + 0.1 * torch.randn(2048, 16, generator=gen)
    hinge_only = float(vicreg(correlated, cov_weight=0.0))
    assert hinge_only < 0.01  # every dimension's std is ~2: the hinge is met, what is left is covariance
    full, quarter = float(vicreg(correlated)), float(vicreg(correlated, cov_weight=0.25))
    assert full > 10 and math.isclose(quarter - hinge_only, 0.25 * (full - hinge_only), rel_tol=1e-5)


def test_regulariser_projector_is_trained_by_the_term_and_absent_by_default():
    cfg = preset("tiny")
    assert JEPA(cfg.model).reg_projector is None  # old checkpoints keep loading strictly
    cfg.train.reg_projector = 48
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=4)
    projector = trainer.model.reg_projector
    assert projector is not None and projector[-1].out_features == 48
    trained = {id(p) for p in trainer.params}
    assert all(id(p) in trained for p in projector.parameters())  # the optimizer updates it
    masks = MaskSampler(trainer.model.encoder.grid, cfg.mask)(2, 0)
    video = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    out = trainer.model(video, [m.keep for m in masks], [m.target for m in masks])
    assert float(out.regularizer) > 0
    out.loss.backward()
    assert projector[0].weight.grad.abs().sum() > 0  # the term reaches the projector...
    assert trainer.model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0  # ...and, through it, the encoder


@pytest.mark.parametrize("override", ["train.reg_projector=-1", "train.vicreg_cov_weight=-0.5"])
def test_negative_regulariser_settings_are_refused(override):
    from picojepa.errors import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config("tiny", overrides=[override])


def test_regulariser_gradient_reaches_the_context_encoder():
    cfg = preset("tiny")
    model = JEPA(cfg.model, regularizer="sigreg", reg_weight=1.0, sigreg_directions=32)
    masks = MaskSampler(model.encoder.grid, cfg.mask)(2, 0)
    video = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    out = model(video, [m.keep for m in masks], [m.target for m in masks], generator=torch.Generator().manual_seed(0))
    assert float(out.regularizer) > 0
    out.loss.backward()
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_two_masks_average_their_losses():
    cfg = preset("tiny")
    cfg.mask.long_range = True
    torch.manual_seed(0)
    model = JEPA(cfg.model)
    short, long = MaskSampler(model.encoder.grid, cfg.mask)(2, 1)
    video = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    both = model(video, [short.keep, long.keep], [short.target, long.target]).loss
    one = model(video, short.keep, short.target).loss
    other = model(video, long.keep, long.target).loss
    assert torch.allclose(both, (one + other) / 2, atol=1e-6)


def test_init_anchor_pulls_the_encoder_back_to_its_initialisation():
    from picojepa.train.pretrain import TrainBatch

    def after_one_step(anchor: float) -> tuple[Trainer, dict[str, torch.Tensor]]:
        cfg = preset("tiny")
        cfg.train.init_anchor = anchor
        trainer = Trainer(cfg, torch.device("cpu"), total_steps=100)
        frames = torch.randint(0, 255, (4, cfg.model.num_frames, 72, 72, 3), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))
        trainer.step(TrainBatch(frames, trainer.masks(4, [0, 50]), 50, []))
        return trainer, {k: v.clone() for k, v in trainer.model.encoder.state_dict().items()}

    start = {k: v.clone() for k, v in initial_encoder(preset("tiny")).state_dict().items()}
    free, moved = after_one_step(0.0)
    assert free.anchor is None
    qkv = "blocks.0.attn.qkv.weight"
    assert not torch.equal(moved[qkv], start[qkv])
    # a pull of lr × anchor = 1 puts every weight back at its start after the step
    full = 1.0 / Schedules(preset("tiny"), 100).lr(50)
    _, pulled = after_one_step(full)
    for name, value in pulled.items():
        assert torch.allclose(value, start[name], atol=1e-6), name
    # a weaker pull moves each weight part of the way: (1 − lr·anchor) of the free step's change
    half = after_one_step(full / 2)[1]
    assert torch.allclose(half[qkv] - start[qkv], (moved[qkv] - start[qkv]) / 2, atol=1e-6)
    with pytest.raises(ConfigError, match="init_anchor"):
        load_config("tiny", overrides=["train.init_anchor=-1"])


def test_initial_encoder_is_the_trainers_starting_point():
    cfg = preset("tiny")
    cfg.train.seed = 5
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=10)
    start = initial_encoder(cfg)
    for (name, a), b in zip(trainer.model.target_encoder.state_dict().items(), start.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    before = torch.get_rng_state()
    initial_encoder(cfg)
    assert torch.equal(before, torch.get_rng_state())  # no side effect on the caller's RNG


def test_knn_accuracy_on_separable_and_on_random_features():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 20)
    centres = rng.normal(size=(3, 8)) * 5
    x = centres[y] + rng.normal(size=(60, 8))
    assert knn_accuracy(x[::2], y[::2], x[1::2], y[1::2]) == 1.0
    noise = rng.normal(size=(60, 8))
    assert knn_accuracy(noise[::2], y[::2], noise[1::2], y[1::2]) < 0.7


def test_monitor_step_zero_equals_a_separately_computed_random_init_probe(video_folder, tmp_path, cache_dir):
    cfg = load_config("tiny", overrides=["data.num_workers=0", "train.epochs=2", "train.batch_size=4",
                                         "train.log_every=1"])
    prepared = prepare_videos(load_videos(video_folder, require_labels=True), cfg, progress=False,
                              cache_dir=cache_dir)
    labels = np.asarray(prepared.videos.labels)
    monitor = ProbeMonitor(prepared.store, labels, every=2, epochs=5, seed=0)
    pretrain(cfg, video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir, monitor=monitor)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    readings = [r for r in rows if "probe_ema" in r]
    assert [r["step"] for r in readings] == [0, 2, 4, 6]
    expected = ProbeMonitor(prepared.store, labels, every=2, epochs=5, seed=0).evaluate(initial_encoder(cfg))
    for key, value in expected.items():
        assert readings[0][f"{key}_ema"] == pytest.approx(value, abs=1e-6), key
        assert readings[0][f"{key}_online"] == pytest.approx(value, abs=1e-6), key
    assert readings[-1]["probe_ema"] != readings[0]["probe_ema"] or readings[-1]["heldout_std_ema"] != pytest.approx(
        readings[0]["heldout_std_ema"])
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert meta["monitor"]["first_step"] == 0 and meta["ema_init_fraction"] < 0.01


def test_clip_targets_drop_what_a_clip_shares_and_keep_unit_scale():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 16, 8, generator=gen)
    shared = torch.randn(3, 1, 8, generator=gen) * 5  # e.g. a plain background, the same in every token
    layer = normalise_targets(feats + shared, "layer")
    clip = normalise_targets(feats + shared, "clip")
    assert torch.allclose(layer.mean(-1), torch.zeros(3, 16), atol=1e-5)  # V-JEPA's per-token layer norm
    assert torch.allclose(clip.mean(1), torch.zeros(3, 8), atol=1e-5)  # no clip-wide component is left
    assert torch.allclose(clip.pow(2).mean((1, 2)), torch.ones(3), atol=1e-4)
    # A clip whose tokens are all alike leaves nothing to predict, rather than amplified noise.
    flat = normalise_targets(shared.expand(3, 16, 8).clone(), "clip")
    assert float(flat.abs().max()) < 1e-2
    with pytest.raises(ValueError):
        normalise_targets(feats, "batch")


def test_temporal_targets_drop_what_stays_put_at_each_position():
    gen = torch.Generator().manual_seed(0)
    slices, positions = 4, 6
    static = torch.randn(3, 1, positions, 8, generator=gen).expand(3, slices, positions, 8)
    # Token order is time-major: a background that never changes repeats every `positions` tokens.
    still = normalise_targets(static.reshape(3, slices * positions, 8), "temporal", slices)
    assert float(still.abs().max()) < 1e-2  # nothing moves: nothing to predict, no inflated noise
    moving = static.clone()
    moving[:, :, 2] = torch.randn(3, slices, 8, generator=gen)  # one position changes over time
    t = normalise_targets(moving.reshape(3, slices * positions, 8), "temporal", slices).view(3, slices, positions, 8)
    assert torch.allclose(t.mean(1), torch.zeros(3, positions, 8), atol=1e-5)  # no time-constant part is left
    assert torch.allclose(t.pow(2).mean(), torch.tensor(1.0), atol=1e-4)
    static_positions = [p for p in range(positions) if p != 2]
    assert float(t[:, :, static_positions].abs().max()) < 1e-2 < float(t[:, :, 2].abs().max())
    with pytest.raises(ValueError, match="time slices"):
        normalise_targets(moving.reshape(3, slices * positions, 8), "temporal", 1)
    with pytest.raises(ValueError, match="time slices"):
        normalise_targets(moving.reshape(3, slices * positions, 8), "temporal", 5)
    with pytest.raises(ConfigError, match="time slices"):
        load_config("tiny", overrides=["train.target_norm=temporal", "model.num_frames=2", "model.tubelet_size=2"])


def test_position_and_local_shares_split_the_variance():
    from picojepa.train.diagnostics import local_share, position_share

    gen = torch.Generator().manual_seed(0)
    positions = torch.randn(1, 16, 8, generator=gen).expand(32, 16, 8)  # every clip alike: only positions
    clips = torch.randn(32, 1, 8, generator=gen).expand(32, 16, 8)  # every token of a clip alike
    local = torch.randn(32, 16, 8, generator=gen)
    assert position_share(positions) == pytest.approx(1.0, abs=1e-5)
    assert position_share(clips) == pytest.approx(0.0, abs=1e-5) and local_share(clips) == pytest.approx(0.0, abs=1e-5)
    both = positions + local
    assert position_share(both) + local_share(both) == pytest.approx(1.0, abs=0.05)


def test_bench_recipes_state_every_setting_whose_default_has_moved():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench" / "learning"))
    try:
        import recipe_sweep
        import scaling
        from inmemory import check_recipes
    finally:
        sys.path.pop(0)
    check_recipes(scaling.RECIPES, scaling.BASE)  # raises SystemExit on a recipe that leaves one out
    check_recipes(recipe_sweep.RECIPES, recipe_sweep.BASE)
    with pytest.raises(SystemExit, match=r"train\.lr"):
        check_recipes({"vicreg": ["train.targets=ema", "train.regularizer=vicreg", "train.reg_scale_free=true",
                                  "train.vicreg_std=0.7"]})


def test_a_saved_config_without_drop_path_keeps_the_value_its_run_trained_with():
    from picojepa.config import Config

    assert preset("pico").model.drop_path == 0.3  # the default since 2026-12-08
    saved = Config().to_dict()
    assert Config.from_dict(saved).model.drop_path == 0.3
    del saved["model"]["drop_path"]  # a run saved before the option existed trained without it
    assert Config.from_dict(saved).model.drop_path == 0.0
    assert Config.from_dict({"train": {"lr": 1e-4}}).model.drop_path == 0.3  # no model section: nothing to keep


@pytest.mark.parametrize("kind", ["content", "local"])
def test_position_free_targets_drop_each_position_s_batch_mean(kind):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(4, 16, 8, generator=gen)
    position = torch.randn(1, 16, 8, generator=gen) * 5  # what only says where a token is
    t = normalise_targets(feats + position, kind)
    assert torch.allclose(t.mean(0), torch.zeros(16, 8), atol=1e-5)  # nothing the position alone predicts
    assert torch.allclose(t.pow(2).mean(), torch.tensor(1.0), atol=1e-4)  # growing the position share cannot shrink it
    clip_means = t.mean(1).abs().max()
    assert (clip_means < 1e-5) if kind == "local" else (clip_means > 0.1)
    with pytest.raises(ValueError, match="2 clips"):
        normalise_targets(feats[:1], kind)
    with pytest.raises(ConfigError, match="batch"):
        load_config("tiny", overrides=[f"train.target_norm={kind}", "train.batch_size=1"])


def test_target_layers_average_the_teacher_s_last_blocks():
    cfg = preset("tiny")
    torch.manual_seed(0)
    video = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    one, two = JEPA(cfg.model, target_layers=1), JEPA(cfg.model, target_layers=2)
    two.load_state_dict(one.state_dict())
    assert torch.equal(one.target_tokens(video), one.target_encoder(video))  # 1: V-JEPA's targets, unchanged
    teacher, outputs = one.target_encoder, []
    x = teacher.tokenize(video)
    for block in teacher.blocks:
        x = block(x)
        outputs.append(torch.nn.functional.layer_norm(x, x.shape[-1:]))
    assert torch.allclose(two.target_tokens(video), (outputs[-1] + outputs[-2]) / 2, atol=1e-6)
    for bad in (0, cfg.model.depth + 1):
        with pytest.raises(ConfigError, match="target_layers"):
            load_config("tiny", overrides=[f"train.target_layers={bad}"])


def half_masks(cfg, batch: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """The tiny model's token count, and for every clip of a batch the first half as context, the rest as target."""
    n = cfg.model.num_frames // cfg.model.tubelet_size * (cfg.model.img_size // cfg.model.patch_size) ** 2
    return n, torch.arange(n // 2).expand(batch, -1), torch.arange(n // 2, n).expand(batch, -1)


def test_clip_floor_penalises_clips_that_look_alike_and_only_when_asked():
    cfg = preset("tiny")
    cfg.model.drop_path = 0.0  # the four copies below must stay alike: no per-clip stochastic depth
    torch.manual_seed(0)
    _, keep, target = half_masks(cfg, 4)
    same = torch.randn(1, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size).expand(4, -1, -1, -1, -1)
    regs = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        model = JEPA(cfg.model, regularizer="vicreg", reg_weight=1.0, clip_reg_weight=weight, clip_reg_std=0.5)
        regs[weight] = float(model(same.contiguous(), keep, target).regularizer)
    # Four copies of one clip: their mean tokens do not differ at all, so the hinge is at its full 0.5.
    assert regs[1.0] - regs[0.0] == pytest.approx(0.5 - 1e-2, abs=1e-3)
    with pytest.raises(ConfigError, match="clip_reg_weight"):
        load_config("tiny", overrides=["train.regularizer=none", "train.clip_reg_weight=1"])


def test_clip_sigreg_is_sigreg_on_the_projected_clip_means_and_trains_its_projector():
    cfg = preset("tiny")
    cfg.model.drop_path = 0.0  # checked against a recomputation of the forward: no random branch drops
    torch.manual_seed(0)
    n, keep, target = half_masks(cfg, 8)
    video = torch.randn(8, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    model = JEPA(cfg.model, regularizer="vicreg", reg_weight=1.0, clip_reg_weight=0.5, clip_reg_projector=16)
    plain = JEPA(cfg.model, regularizer="vicreg", reg_weight=1.0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("clip_projector")})
    out = model(video, keep, target, generator=torch.Generator().manual_seed(3))
    extra = float(out.regularizer) - float(plain(video, keep, target).regularizer)
    with torch.no_grad():  # by hand: scale-free tokens, minus each position's batch mean, averaged per clip
        tokens = torch.nn.functional.layer_norm(model.encoder(video, keep), (cfg.model.embed_dim,))
        means = content_residual(tokens, keep, n).view(tokens.shape).mean(dim=1)
        expected = 0.5 * sigreg(model.clip_projector(means), 256, torch.Generator().manual_seed(3))
    assert extra == pytest.approx(float(expected), rel=1e-4) and expected > 0
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.clip_projector.parameters())
    trained = {id(p) for g in build_optimizer(model, cfg, torch.device("cpu")).param_groups for p in g["params"]}
    assert {id(p) for p in model.clip_projector.parameters()} <= trained  # the projector learns with the encoder
    load_config("tiny", overrides=["train.clip_reg_weight=0.05", "train.clip_reg_projector=16"])  # accepted
    with pytest.raises(ConfigError, match="clip_reg_projector"):
        load_config("tiny", overrides=["train.clip_reg_projector=16"])
    with pytest.raises(ConfigError, match="cannot both"):
        load_config("tiny", overrides=["train.clip_reg_weight=0.05", "train.clip_reg_projector=16",
                                       "train.reg_projector=32"])


def test_position_free_targets_refuse_a_run_whose_batch_falls_to_one_clip(tmp_path, cache_dir):
    write_video(tmp_path / "one" / "a" / "only.mp4", moving_square(24, 64, 64, 0, seed=0))
    cfg = load_config("tiny", overrides=["train.target_norm=content", "train.batch_size=4", "train.epochs=1"])
    with pytest.raises(PicoJepaError, match="at least 2 clips"):
        pretrain(cfg, tmp_path / "one", tmp_path / "run", progress=False, cache_dir=cache_dir)


@pytest.mark.parametrize("frozen", [True, False])
def test_frozen_patch_embedding_stays_at_its_initialisation_in_both_encoders(frozen):
    from picojepa.train.pretrain import TrainBatch

    cfg = load_config("tiny", overrides=[f"train.freeze_patch_embed={str(frozen).lower()}"])
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=4)
    start = initial_encoder(cfg).state_dict()
    frames = torch.randint(0, 255, (4, cfg.model.num_frames, 72, 72, 3), dtype=torch.uint8)
    for step in range(4):
        trainer.step(TrainBatch(frames, trainer.masks(4, [0, step]), step, []))
    trained = {id(p) for p in trainer.params}
    for encoder in (trainer.model.encoder, trainer.model.target_encoder):
        for name in ("weight", "bias"):
            value = getattr(encoder.patch_embed, name)
            assert torch.equal(value, start[f"patch_embed.{name}"]) == frozen, name
            assert (id(value) in trained) == (frozen is False and encoder is trainer.model.encoder)
    # the layers above it learn either way
    assert not torch.equal(trainer.model.encoder.blocks[0].attn.qkv.weight, start["blocks.0.attn.qkv.weight"])


def test_global_term_is_one_minus_the_batch_correlation_and_trains_its_head():
    cfg = preset("tiny")
    cfg.model.drop_path = 0.0  # checked against a recomputation of the forward: no random branch drops
    torch.manual_seed(0)
    n, keep, target = half_masks(cfg, 8)
    # clips that differ as wholes (brightness), not only in their noise: their mean tokens then differ
    video = torch.randn(8, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size)
    video = video + 0.3 * torch.randn(8, 3, 1, 1, 1)
    model = JEPA(cfg.model, regularizer="vicreg", reg_weight=1.0, global_weight=0.5)
    plain = JEPA(cfg.model, regularizer="vicreg", reg_weight=1.0)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("global_head")})
    out, base = model(video, keep, target), plain(video, keep, target)
    assert float(out.prediction_loss) == pytest.approx(float(base.prediction_loss), rel=1e-6)  # logged apart
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.global_head.parameters())
    assert model.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    trained = {id(p) for g in build_optimizer(model, cfg, torch.device("cpu")).param_groups for p in g["params"]}
    assert {id(p) for p in model.global_head.parameters()} <= trained  # the head learns with the encoder
    # Without a head the prediction is the visible half's mean token; the term is then 1 − its per-dimension
    # correlation over the batch with the teacher's whole-clip mean token (weight 0.5), and 0 when all is visible.
    model.global_head = torch.nn.Identity()
    with torch.no_grad():
        predicted = model.encoder(video, keep).mean(dim=1)
        teacher = torch.nn.functional.layer_norm(model.target_encoder(video), (cfg.model.embed_dim,)).mean(dim=1)
        corr = torch.stack([torch.corrcoef(torch.stack([predicted[:, d], teacher[:, d]]))[0, 1]
                            for d in range(cfg.model.embed_dim)]).mean()
        extra = float(model(video, keep, target).loss) - float(base.loss)
        assert 0.2 < corr < 0.99 and extra == pytest.approx(0.5 * float(1 - corr), rel=1e-3)
        everything = torch.arange(n).expand(8, -1)
        whole = float(model(video, everything, target).loss) - float(plain(video, everything, target).loss)
        assert abs(whole) < 1e-3
    for bad in (["train.global_weight=-1"], ["train.global_weight=0.5", "train.targets=pixels"]):
        with pytest.raises(ConfigError, match="global_weight"):
            load_config("tiny", overrides=bad)
    with pytest.raises(ValueError, match="global_weight"):
        JEPA(cfg.model, targets="pixels", global_weight=0.5)
