"""Model correctness: token order, leak-free context, EMA target, predictor gradients."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from picojepa import embed_frames
from picojepa.config import MaskConfig, preset
from picojepa.masks import MaskGenerator, context_tokens
from picojepa.models import JEPA, VideoViT, encoder_flops_per_clip, train_flops_per_clip
from picojepa.models.vit import drop_branch


@pytest.fixture()
def tiny_cfg():
    torch.manual_seed(0)
    return preset("tiny").model


def tubelet_slices(encoder: VideoViT, token: int) -> tuple[slice, slice, slice]:
    """Pixel region (T, H, W) of a token, from the documented time-major order."""
    _, gh, gw = encoder.grid
    t, rest = divmod(token, gh * gw)
    h, w = divmod(rest, gw)
    tt, p, _ = encoder.tubelet
    return slice(t * tt, (t + 1) * tt), slice(h * p, (h + 1) * p), slice(w * p, (w + 1) * p)


def test_token_order_is_time_major(tiny_cfg):
    encoder = VideoViT(tiny_cfg)
    video = torch.zeros(1, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    for token in range(encoder.num_tokens):
        ts, hs, ws = tubelet_slices(encoder, token)
        video[:, :, ts, hs, ws] = token
    patches = encoder.patchify(video)
    assert patches.shape[1] == encoder.num_tokens
    for token in range(encoder.num_tokens):
        assert torch.all(patches[0, token] == token)


def test_patch_embedding_equals_the_conv3d(tiny_cfg):
    encoder = VideoViT(tiny_cfg)
    video = torch.randn(2, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    conv = encoder.patch_embed(video).flatten(2).transpose(1, 2)
    assert torch.allclose(encoder.tokenize(video) - encoder.pos_embed, conv, atol=1e-5)


@pytest.mark.parametrize("mask_type", ["tube", "multiblock"])
def test_context_embeddings_ignore_masked_pixels(tiny_cfg, mask_type):
    encoder = VideoViT(tiny_cfg).eval()
    masks = MaskGenerator(encoder.grid, MaskConfig(type=mask_type, ratio=0.6))(2, seed=3)
    video = torch.randn(2, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    changed = video.clone()
    for b in range(2):
        for token in masks.target[b].tolist():
            ts, hs, ws = tubelet_slices(encoder, token)
            changed[b, :, ts, hs, ws] = torch.randn_like(changed[b, :, ts, hs, ws]) * 100
    with torch.no_grad():
        before = encoder(video, masks.keep)
        after = encoder(changed, masks.keep)
    assert torch.equal(before, after)
    # The check can fail: changing one *visible* tubelet does change the context.
    visible = masks.keep[0, 0].item()
    ts, hs, ws = tubelet_slices(encoder, visible)
    changed[0, :, ts, hs, ws] += 5.0
    with torch.no_grad():
        assert not torch.equal(encoder(changed, masks.keep)[0], before[0])


def test_full_forward_shapes_and_embed(tiny_cfg):
    encoder = VideoViT(tiny_cfg).eval()
    video = torch.randn(2, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    tokens = encoder(video)
    assert tokens.shape == (2, encoder.num_tokens, tiny_cfg.embed_dim)
    emb = encoder.embed(video)
    assert emb.pooled.shape == (2, tiny_cfg.embed_dim)
    assert emb.grid.shape == (2, *encoder.grid, tiny_cfg.embed_dim)
    # Raw uint8 frames go through embed_frames, the feature-extraction path.
    raw = torch.randint(0, 255, (1, tiny_cfg.num_frames, 45, 67, 3), dtype=torch.uint8)
    with pytest.raises(TypeError, match="embed_frames"):
        encoder.embed(raw)
    assert embed_frames(encoder, raw).pooled.shape == (1, tiny_cfg.embed_dim)
    with pytest.raises(ValueError, match="expected a video"):
        encoder(torch.randn(1, 3, 4, 32, 32))


def test_target_encoder_gets_no_gradient_and_follows_ema(tiny_cfg):
    model = JEPA(tiny_cfg)
    masks = MaskGenerator(model.encoder.grid, MaskConfig())(2, seed=0)
    video = torch.randn(2, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    model.train()
    assert not model.target_encoder.training
    out = model(video, masks.keep, masks.target)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.target_encoder.parameters())
    assert model.predictor.mask_token.grad is not None and model.predictor.mask_token.grad.abs().sum() > 0
    assert model.encoder.patch_embed.weight.grad.abs().sum() > 0
    # EMA: target ← m·target + (1−m)·online.
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.target_encoder.parameters()]
    model.update_target(0.9)
    for old, new, online in zip(before, model.target_encoder.parameters(), model.encoder.parameters(), strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * online, atol=1e-6)


def test_targets_are_layer_normalised(tiny_cfg):
    model = JEPA(tiny_cfg)
    masks = MaskGenerator(model.encoder.grid, MaskConfig())(2, seed=0)
    out = model(torch.randn(2, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size),
                masks.keep, masks.target)
    assert out.targets.shape == (2, masks.target.shape[1], tiny_cfg.embed_dim)
    assert torch.allclose(out.targets.mean(-1), torch.zeros(()), atol=1e-4)


def test_pico_preset_size_and_flops():
    cfg = preset("pico")
    encoder = VideoViT(cfg.model)
    params = sum(p.numel() for p in encoder.parameters())
    assert 3.0e6 < params < 4.0e6
    assert encoder.grid == (4, 14, 14)
    assert 15e9 < train_flops_per_clip(cfg.model, 0.75) < 20e9
    assert train_flops_per_clip(cfg.model, 0.75) == train_flops_per_clip(cfg.model, MaskConfig(ratio=0.75))


def test_flops_count_the_context_each_mask_actually_keeps():
    model = preset("pico").model
    # future: no spatial mask, so the context is every token of the past slices and costs more than a 0.75 mask
    future = MaskConfig(type="future", future_slices=1)
    assert context_tokens((4, 14, 14), future) == 3 * 196
    assert context_tokens((4, 14, 14), MaskConfig(ratio=0.75, future_slices=1)) == 3 * 49
    assert train_flops_per_clip(model, future) > train_flops_per_clip(model, 0.75)
    # a long-range companion adds one more context-encoder and predictor pass, never a target-encoder pass
    one = train_flops_per_clip(model, MaskConfig(ratio=0.75))
    two = train_flops_per_clip(model, MaskConfig(ratio=0.75, long_range=True, long_ratio=0.75))
    assert two - one == pytest.approx(one - encoder_flops_per_clip(model))


def test_learned_positions_option():
    cfg = preset("tiny").model
    cfg.pos_embed = "learned"
    encoder = VideoViT(cfg)
    assert "pos_embed" in dict(encoder.named_parameters())
    assert np.isfinite(encoder(torch.randn(1, 3, 8, 64, 64)).sum().item())


def test_drop_path_is_off_in_eval_and_per_clip_in_training(tiny_cfg):
    cfg = dataclasses.replace(tiny_cfg, drop_path=0.5)
    encoder = VideoViT(cfg)
    rates = [block.drop_path for block in encoder.blocks]
    assert rates[0] == 0.0 and rates[-1] == 0.5 and rates == sorted(rates)
    plain = VideoViT(dataclasses.replace(tiny_cfg, drop_path=0.0))  # tiny_cfg has the default's 0.3 since 2026-12-08
    plain.load_state_dict(encoder.state_dict())  # the option adds no weights
    video = torch.randn(8, 3, cfg.num_frames, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        assert torch.equal(encoder.eval()(video), plain.eval()(video))
        encoder.train()
        torch.manual_seed(1)
        noisy = encoder(video)
        # Each clip either keeps the last block's branch or drops it: some clips must differ from eval ...
        differs = [not torch.allclose(noisy[b], plain(video[b:b + 1])[0], atol=1e-5) for b in range(8)]
        assert any(differs)
        # ... and the draw comes from torch's seeded generator: the same seed, the same output.
        torch.manual_seed(1)
        again = encoder(video)
    assert torch.equal(noisy, again)


def test_drop_path_with_given_draws_treats_each_clip_alike_in_any_batch_split(tiny_cfg):
    """What pretraining relies on under torchrun: a process holding rows 2-3 of a batch, with those rows' draws,
    computes what one process holding the whole batch computes for them."""
    encoder = VideoViT(dataclasses.replace(tiny_cfg, drop_path=0.5)).train()
    video = torch.randn(4, 3, tiny_cfg.num_frames, tiny_cfg.img_size, tiny_cfg.img_size)
    draws = torch.rand(tiny_cfg.depth, 2, 4, generator=torch.Generator().manual_seed(0))
    flipped = draws.clone()
    flipped[-1, 1, 0] = 0.9 if draws[-1, 1, 0] < 0.5 else 0.1  # clip 0's last MLP branch: the other way
    with torch.no_grad():
        encoder.drop_draws = draws
        whole = encoder(video)
        encoder.drop_draws = draws[:, :, 2:]
        part = encoder(video[2:])
        encoder.drop_draws = flipped
        other = encoder(video)
    assert torch.allclose(whole[2:], part, atol=1e-6)
    # The draws are used, clip by clip: flipping clip 0's draw changes clip 0 and no other.
    assert not torch.allclose(whole[0], other[0], atol=1e-4)
    assert torch.equal(whole[1:], other[1:])


def test_drop_path_keeps_the_branch_expectation():
    torch.manual_seed(0)
    branch = torch.ones(20000, 3, 4)
    out = drop_branch(branch, 0.25, training=True)
    per_clip = out[:, 0, 0]
    values = per_clip.unique()  # whole clips dropped, the rest rescaled
    assert len(values) == 2 and values[0] == 0.0 and abs(float(values[1]) - 4 / 3) < 1e-6
    assert abs(float(out.mean()) - 1.0) < 0.02
    assert torch.equal(drop_branch(branch, 0.25, training=False), branch)
