"""Pretraining end to end on tiny real mp4 files: outputs, loss, resume, skips, strict loading."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from picojepa import load_encoder
from picojepa.config import load_config
from picojepa.errors import CheckpointError, ConfigError, PicoJepaError
from picojepa.train import pretrain
from picojepa.train.checkpoint import load_checkpoint


def tiny(epochs: int = 2, **over: str):
    extra = [f"{k}={v}" for k, v in over.items()]
    return load_config("tiny", overrides=["data.num_workers=0", f"train.epochs={epochs}", "train.log_every=1",
                                          "train.batch_size=4", *extra])


def test_pretrain_writes_the_run_folder_and_loss_decreases(video_folder, tmp_path, cache_dir):
    cfg = tiny(epochs=8, **{"train.lr": "0.002"})
    result = pretrain(cfg, video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir)
    run = tmp_path / "run"
    for name in ("encoder.safetensors", "config.json", "checkpoint.safetensors", "metrics.jsonl", "skipped.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "config.json").read_text())
    assert meta["finished"] and meta["config"]["preset"] == "tiny" and meta["steps"] == result.steps == 24
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 25))
    assert {"loss", "lr", "momentum", "clips_per_s", "target_std", "target_rank"} <= set(rows[0])
    assert {"prediction_loss", "regularizer"} <= set(rows[0])
    first, last = (sum(r["prediction_loss"] for r in part) / 3 for part in (rows[:3], rows[-3:]))
    assert last < 0.8 * first, (first, last)
    assert rows[-1]["momentum"] >= rows[0]["momentum"]
    encoder = load_encoder(run)
    assert not encoder.training
    saved = load_file(str(run / "encoder.safetensors"))
    state = load_checkpoint(run)["model"]
    # encoder.safetensors is the EMA target encoder, not the online one.
    assert torch.equal(saved["blocks.0.attn.qkv.weight"], state["target_encoder.blocks.0.attn.qkv.weight"])
    assert not torch.equal(saved["blocks.0.attn.qkv.weight"], state["encoder.blocks.0.attn.qkv.weight"])


def test_resume_continues_exactly_like_an_uninterrupted_run(video_folder, tmp_path, cache_dir):
    cfg = tiny(epochs=2)
    pretrain(cfg, video_folder, tmp_path / "full", progress=False, cache_dir=cache_dir)
    partial = pretrain(cfg, video_folder, tmp_path / "cut", progress=False, cache_dir=cache_dir, max_steps=4)
    assert partial.steps == 4 and not (tmp_path / "cut" / "encoder.safetensors").exists()
    with pytest.raises(PicoJepaError, match="--resume"):
        pretrain(cfg, video_folder, tmp_path / "cut", progress=False, cache_dir=cache_dir)
    pretrain(cfg, video_folder, tmp_path / "cut", resume=True, progress=False, cache_dir=cache_dir)
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()  # no pickle is written
    a = load_file(str(tmp_path / "full" / "encoder.safetensors"))
    b = load_file(str(tmp_path / "cut" / "encoder.safetensors"))
    assert a.keys() == b.keys()
    for key in a:  # bit for bit: weights, optimiser moments and every RNG stream came back exactly
        assert torch.equal(a[key], b[key]), key
    full_rows = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    cut_rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in full_rows] == [json.loads(r)["loss"] for r in cut_rows]


def test_resume_refuses_settings_that_change_the_trained_weights(video_folder, tmp_path, cache_dir):
    cfg = tiny(epochs=2)
    pretrain(cfg, video_folder, tmp_path / "cut", progress=False, cache_dir=cache_dir, max_steps=2)
    cfg.train.freeze_patch_embed = True  # the optimiser would hold a different set of weights
    with pytest.raises(PicoJepaError, match="freeze_patch_embed"):
        pretrain(cfg, video_folder, tmp_path / "cut", resume=True, progress=False, cache_dir=cache_dir)
    cfg.train.freeze_patch_embed, cfg.train.global_weight = False, 0.5  # the model would have one more head
    with pytest.raises(PicoJepaError, match="global_weight"):
        pretrain(cfg, video_folder, tmp_path / "cut", resume=True, progress=False, cache_dir=cache_dir)
    cfg.train.global_weight, cfg.model.drop_path = 0.0, 0.1  # the model field is named, with both values
    with pytest.raises(PicoJepaError, match=r"model\.drop_path: 0\.3 in the run, 0\.1 now"):
        pretrain(cfg, video_folder, tmp_path / "cut", resume=True, progress=False, cache_dir=cache_dir)


class _Payload:
    """Unpickling this runs code: it creates the file named at pickling time."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_checkpoint_is_refused_unless_trusted(video_folder, tmp_path, cache_dir):
    cfg = tiny(epochs=2)
    run, marker = tmp_path / "cut", tmp_path / "code-ran"
    pretrain(cfg, video_folder, run, progress=False, cache_dir=cache_dir, max_steps=4)
    state = load_checkpoint(run)
    (run / "checkpoint.safetensors").unlink()
    torch.save({**state, "payload": _Payload(marker)}, run / "checkpoint.pt")  # an older version's format
    with pytest.raises(CheckpointError, match="--trust-pickle-checkpoint"):
        pretrain(cfg, video_folder, run, resume=True, progress=False, cache_dir=cache_dir)
    assert not marker.exists()  # nothing was unpickled
    pretrain(cfg, video_folder, run, resume=True, progress=False, cache_dir=cache_dir, trust_pickle=True)
    assert marker.exists()  # trusted: it was loaded (and, being a pickle, ran its code)
    assert (run / "encoder.safetensors").is_file() and (run / "checkpoint.safetensors").is_file()
    assert not (run / "checkpoint.pt").exists()  # the run continued in the safe format


def test_unusable_videos_are_skipped_and_listed(video_folder, tmp_path, cache_dir):
    data = tmp_path / "data"
    shutil.copytree(video_folder, data)
    (data / "left" / "broken.mp4").write_text("garbage")
    pretrain(tiny(epochs=1), data, tmp_path / "run", progress=False, cache_dir=cache_dir)
    skipped = json.loads((tmp_path / "run" / "skipped.json").read_text())
    assert [s["path"].endswith("broken.mp4") for s in skipped] == [True]
    assert "not a video" in skipped[0]["reason"]


def test_load_encoder_refuses_mismatched_checkpoints(video_folder, tmp_path, cache_dir):
    run = tmp_path / "run"
    pretrain(tiny(epochs=1), video_folder, run, progress=False, cache_dir=cache_dir)
    meta = json.loads((run / "config.json").read_text())
    meta["config"]["model"]["depth"] = 3
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="missing"):
        load_encoder(run)
    meta["config"]["model"]["depth"] = 2
    meta["config"]["model"]["embed_dim"] = 128
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_encoder(run)
    meta["config"]["model"]["embed_dim"] = 64
    (run / "config.json").write_text(json.dumps(meta))
    tensors = load_file(str(run / "encoder.safetensors"))
    tensors["extra.weight"] = torch.zeros(1)
    save_file(tensors, str(run / "encoder.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected"):
        load_encoder(run)
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nowhere")


def test_clips_seen_counts_what_was_trained_on_not_steps_times_batch(video_folder, tmp_path, cache_dir,
                                                                    monkeypatch):
    from picojepa.data.cache import ClipCache
    from picojepa.data.decode import VideoError

    victim = sorted((video_folder / "left").glob("*.mp4"))[0]
    real_load = ClipCache.load

    def load(self, video):  # cached fine, then unreadable while training
        if Path(video) == victim:
            raise VideoError(video, "undecodable")
        return real_load(self, video)

    monkeypatch.setattr(ClipCache, "load", load)
    cfg = tiny(epochs=2)  # 12 videos, batch 4: 3 steps per epoch, the victim in one batch per epoch
    result = pretrain(cfg, video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert result.steps == 6 and result.clips_seen == meta["clips_seen"] == 6 * 4 - 2
    assert [Path(s["path"]) for s in json.loads((tmp_path / "run" / "skipped.json").read_text())] == [victim]


class _KernelRecorder:
    """A monitor that records whether deterministic kernels are on while the loop runs."""

    every = 1

    def __init__(self) -> None:
        self.seen: list[bool] = []

    def __call__(self, step: int, online, ema) -> dict[str, float]:
        self.seen.append(torch.are_deterministic_algorithms_enabled())
        return {}


@pytest.mark.parametrize("deterministic", [True, False])
def test_cpu_runs_use_deterministic_kernels_and_restore_the_callers_setting(video_folder, tmp_path, cache_dir,
                                                                             deterministic):
    # Without them, two same-seed runs of the demo drifted apart by float rounding after ~30 steps.
    assert not torch.are_deterministic_algorithms_enabled()
    recorder = _KernelRecorder()
    cfg = load_config("tiny", overrides=["data.num_workers=0", "train.epochs=1", "train.batch_size=4",
                                         f"train.deterministic={str(deterministic).lower()}"])
    pretrain(cfg, video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir, monitor=recorder)
    assert recorder.seen and set(recorder.seen) == {deterministic}
    assert not torch.are_deterministic_algorithms_enabled()


def test_clip_steps_sets_the_run_length_whatever_the_number_of_videos(video_folder, tmp_path, cache_dir):
    # 1 epoch of this folder is 3 steps of 4 clips; 22 clip-steps ask for ceil(22 / 4) = 6 steps.
    cfg = tiny(epochs=1, **{"train.clip_steps": "22"})
    result = pretrain(cfg, video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir)
    meta = json.loads((tmp_path / "run" / "config.json").read_text())
    assert result.steps == meta["total_steps"] == 6 and meta["steps_per_epoch"] == 3
    assert result.clips_seen == 24
    with pytest.raises(ConfigError, match="clip_steps"):
        tiny(**{"train.clip_steps": "-5"})


def test_a_budget_past_the_measured_turn_warns_unless_a_monitor_watches(video_folder, tmp_path, cache_dir, capsys):
    # 20,001 steps of 4 clips plan 80,004 clip-steps, one past the limit; one step is enough to see the warning.
    long = tiny(epochs=1, **{"train.clip_steps": "80004"})
    pretrain(long, video_folder, tmp_path / "long", progress=False, cache_dir=cache_dir, max_steps=1)
    assert "80,004 clip-steps: past 80k" in capsys.readouterr().err
    pretrain(long, video_folder, tmp_path / "watched", progress=False, cache_dir=cache_dir, max_steps=1,
             monitor=_KernelRecorder())
    short = tiny(epochs=1, **{"train.clip_steps": "80000"})
    pretrain(short, video_folder, tmp_path / "short", progress=False, cache_dir=cache_dir, max_steps=1)
    assert "clip-steps: past" not in capsys.readouterr().err
