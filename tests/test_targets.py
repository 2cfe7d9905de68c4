"""What the predictor regresses (train.targets): EMA teacher, frozen teacher, normalised pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from picojepa.config import load_config, preset
from picojepa.data.dataset import TrainBatch
from picojepa.datasets.synth import render_video
from picojepa.errors import ConfigError, PicoJepaError
from picojepa.masks import MaskSampler
from picojepa.models import JEPA
from picojepa.models.jepa import normalise_targets, pixel_targets
from picojepa.probe.monitor import ProbeMonitor
from picojepa.train.checkpoint import load_checkpoint
from picojepa.train.pretrain import Trainer, initial_encoder, pretrain


def _step_inputs(cfg, model, seed=0):
    masks = MaskSampler(model.encoder.grid, cfg.mask)(2, seed)
    video = torch.randn(2, 3, cfg.model.num_frames, cfg.model.img_size, cfg.model.img_size,
                        generator=torch.Generator().manual_seed(seed))
    return video, [m.keep for m in masks], [m.target for m in masks]


def test_pixel_targets_are_each_tubelet_normalised():
    patches = torch.randn(2, 5, 96) * 7 + 3
    t = pixel_targets(patches)
    assert torch.allclose(t.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert torch.allclose(t.var(-1, unbiased=False), torch.ones(2, 5), atol=1e-4)
    assert torch.allclose(pixel_targets(patches * 3 + 10), t, atol=1e-4)  # brightness and contrast are not the target


def test_pixel_objective_predicts_the_masked_tubelets_pixels():
    cfg = preset("tiny")
    cfg.model.drop_path = 0.0  # checked against a recomputation of the forward: no random branch drops
    model = JEPA(cfg.model, loss="l2", targets="pixels")
    video, keep, target = _step_inputs(cfg, model)
    out = model(video, keep, target)
    pixels = cfg.model.in_chans * cfg.model.tubelet_size * cfg.model.patch_size ** 2
    expected = pixel_targets(model.encoder.patchify(video)).gather(
        1, target[0].unsqueeze(-1).expand(-1, -1, pixels))
    assert torch.equal(out.targets, expected)
    # The masked tubelets' pixels are what is predicted: changing them changes the loss, not the context.
    changed = video.clone()
    _, grid_h, grid_w = model.encoder.grid
    p, t = cfg.model.patch_size, cfg.model.tubelet_size
    index = int(target[0][0, 0])
    ti, rest = divmod(index, grid_h * grid_w)
    hi, wi = divmod(rest, grid_w)
    changed[0, :, ti * t:(ti + 1) * t, hi * p:(hi + 1) * p, wi * p:(wi + 1) * p] += 5 * torch.randn(3, t, p, p)
    assert torch.equal(model.encoder(video, keep[0]), model.encoder(changed, keep[0]))
    assert float(model(changed, keep, target).loss.detach()) != pytest.approx(float(out.loss.detach()))
    out.loss.backward()
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.target_encoder.parameters())


@pytest.mark.parametrize("targets", ["frozen", "pixels"])
def test_without_an_ema_teacher_the_teacher_never_moves_and_the_online_encoder_is_kept(targets):
    cfg = load_config("tiny", overrides=[f"train.targets={targets}", "train.regularizer=none"])
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=4)
    start = initial_encoder(cfg).state_dict()
    frames = torch.randint(0, 255, (4, cfg.model.num_frames, 72, 72, 3), dtype=torch.uint8)
    for step in range(4):
        trainer.step(TrainBatch(frames, trainer.masks(4, [0, step]), step, []))
    model = trainer.model
    assert model.evaluation_encoder is model.encoder
    for name, value in model.target_encoder.state_dict().items():
        assert torch.equal(value, start[name]), name  # the teacher is the initialisation, bit for bit
    assert not torch.equal(model.encoder.blocks[0].attn.qkv.weight, start["blocks.0.attn.qkv.weight"])
    assert JEPA(cfg.model).evaluation_encoder is not None and JEPA(cfg.model).targets == "ema"


def test_targets_option_is_validated():
    with pytest.raises(ConfigError, match=r"train\.targets"):
        load_config("tiny", overrides=["train.targets=labels"])
    with pytest.raises(ConfigError, match="teacher_run"):
        load_config("tiny", overrides=["train.teacher_run=runs/x"])


def test_frozen_run_saves_its_context_encoder_and_a_teacher_run_is_loaded_strictly(video_folder, tmp_path,
                                                                                   cache_dir):
    base = ["data.num_workers=0", "train.epochs=1", "train.batch_size=4", "train.regularizer=none"]
    cfg = load_config("tiny", overrides=[*base, "train.targets=pixels", "train.loss=l2"])
    pretrain(cfg, video_folder, tmp_path / "teacher", progress=False, cache_dir=cache_dir)
    saved = load_file(str(tmp_path / "teacher" / "encoder.safetensors"))
    state = load_checkpoint(tmp_path / "teacher")["model"]
    assert torch.equal(saved["blocks.0.attn.qkv.weight"], state["encoder.blocks.0.attn.qkv.weight"])
    assert json.loads((tmp_path / "teacher" / "config.json").read_text())["ema_init_fraction"] is None

    teacher = f"train.teacher_run={tmp_path / 'teacher'}"
    student = load_config("tiny", overrides=[*base, "train.targets=frozen", teacher])
    trainer = Trainer(student, torch.device("cpu"), total_steps=2)
    for name, value in trainer.model.target_encoder.state_dict().items():
        assert torch.equal(value, saved[name]), name
    other = load_config("tiny", overrides=[*base, "train.targets=frozen", teacher, "model.depth=1"])
    with pytest.raises(PicoJepaError, match="architecture"):
        Trainer(other, torch.device("cpu"), total_steps=2)


def test_monitor_reads_one_encoder_once_when_there_is_no_ema_copy():
    calls = []

    class Counting(ProbeMonitor):
        def evaluate(self, encoder):
            calls.append(encoder)
            return {"probe": 0.5}

    monitor = Counting.__new__(Counting)
    encoder = initial_encoder(preset("tiny"))
    assert monitor(0, encoder, encoder) == {"probe_online": 0.5, "probe_ema": 0.5}
    assert len(calls) == 1
    monitor(0, encoder, initial_encoder(preset("tiny")))
    assert len(calls) == 3


def test_actor_less_twin_differs_only_where_the_actor_is():
    full = render_video("move_right", np.random.default_rng([3, 1, 0]), 64, 8, "medium")
    twin = render_video("move_right", np.random.default_rng([3, 1, 0]), 64, 8, "medium", draw_actor=False)
    again = render_video("move_right", np.random.default_rng([3, 1, 0]), 64, 8, "medium")
    assert np.array_equal(full, again)  # the flag changes nothing when the actor is drawn
    differs = np.abs(full.astype(int) - twin.astype(int)).max(axis=-1) > 0  # (T, H, W)
    assert differs.any(axis=(1, 2)).all()  # the actor is in every frame
    assert differs.mean() < 0.2  # and nowhere else: noise, background and distractors are the same draws


def test_pixel_weight_adds_a_pixel_read_out_to_the_latent_loss():
    cfg = preset("tiny")
    assert JEPA(cfg.model).predictor.pixel_proj is None  # off by default: old checkpoints keep loading strictly
    torch.manual_seed(0)
    anchored = JEPA(cfg.model, pixel_weight=0.5)
    video, keep, target = _step_inputs(cfg, anchored)
    hidden = anchored.predictor.hidden(anchored.encoder(video, keep[0]), keep[0], target[0])
    index = target[0].unsqueeze(-1)
    pixels = pixel_targets(anchored.encoder.patchify(video))
    expected_pixels = torch.nn.functional.mse_loss(anchored.predictor.pixel_proj(hidden),
                                                   pixels.gather(1, index.expand(-1, -1, pixels.shape[-1])))
    latents = normalise_targets(anchored.target_encoder(video))
    expected_latent = torch.nn.functional.l1_loss(anchored.predictor.proj(hidden),
                                                  latents.gather(1, index.expand(-1, -1, latents.shape[-1])))
    out = anchored(video, keep, target)
    expected = float(expected_latent.detach()) + 0.5 * float(expected_pixels.detach())
    assert float(out.prediction_loss) == pytest.approx(expected, rel=1e-5)
    out.loss.backward()
    assert anchored.predictor.pixel_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="pixel_weight"):
        load_config("tiny", overrides=["train.pixel_weight=-1"])
