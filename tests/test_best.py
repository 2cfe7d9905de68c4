"""The learning monitor's best reading: kept as a file, made the run's encoder on request, safe on resume."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from picojepa import load_encoder
from picojepa.config import load_config
from picojepa.errors import PicoJepaError
from picojepa.train import checkpoint as ckpt
from picojepa.train import pretrain
from picojepa.train.best import BestReading

# A tie at step 4 must keep step 2, the earlier reading.
SCORES = {0: 0.30, 1: 0.40, 2: 0.70, 3: 0.50, 4: 0.70, 5: 0.20, 6: 0.60}


class ScriptedMonitor:
    """Reads every step with a scripted score and keeps a copy of the EMA encoder it was shown."""

    every = 1

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def __call__(self, step: int, online, ema) -> dict[str, float]:
        self.weights[step] = {k: v.detach().clone() for k, v in ema.state_dict().items()}
        return {"probe_ema": SCORES[step], "probe_online": 0.0, "knn_ema": 0.0, "knn_online": 0.0}


def tiny():  # 12 videos, batch 4, 2 epochs: 6 steps, readings at steps 0..6
    return load_config("tiny", overrides=["data.num_workers=0", "train.epochs=2", "train.batch_size=4"])


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("keep_best", [False, True])
def test_the_best_reading_is_saved_and_kept_only_when_asked(video_folder, tmp_path, cache_dir, keep_best):
    monitor, run = ScriptedMonitor(), tmp_path / "run"
    pretrain(tiny(), video_folder, run, progress=False, cache_dir=cache_dir, monitor=monitor, keep_best=keep_best)
    assert not same(monitor.weights[2], monitor.weights[6])  # the test can tell the two encoders apart
    assert same(load_file(str(run / ckpt.BEST_ENCODER_FILE)), monitor.weights[2])
    assert ckpt.encoder_info(run / ckpt.BEST_ENCODER_FILE)["step"] == 2
    meta = json.loads((run / "config.json").read_text())
    assert meta["best_reading"]["step"] == 2 and meta["best_reading"]["kept_as_encoder"] is keep_best
    assert meta["monitor"]["best_step"] == 2
    loaded = load_encoder(run).state_dict()
    assert same(loaded, monitor.weights[2] if keep_best else monitor.weights[6])
    assert (run / ckpt.LAST_ENCODER_FILE).is_file() is keep_best
    if keep_best:
        assert same(load_file(str(run / ckpt.LAST_ENCODER_FILE)), monitor.weights[6])


def test_resume_keeps_an_earlier_best_and_drops_one_after_the_checkpoint(video_folder, tmp_path, cache_dir):
    run = tmp_path / "run"
    pretrain(tiny(), video_folder, run, progress=False, cache_dir=cache_dir, monitor=ScriptedMonitor(),
             max_steps=3)
    assert BestReading.resume(run, start_step=3).step == 2
    # A best reading later than the checkpoint (the run died after it) is read again by the resumed run.
    assert BestReading.resume(run, start_step=1).step is None
    assert not (run / ckpt.BEST_ENCODER_FILE).exists()


def test_interrupted_and_resumed_run_keeps_the_same_best(video_folder, tmp_path, cache_dir):
    whole, parts = ScriptedMonitor(), ScriptedMonitor()
    pretrain(tiny(), video_folder, tmp_path / "a", progress=False, cache_dir=cache_dir, monitor=whole,
             keep_best=True)
    pretrain(tiny(), video_folder, tmp_path / "b", progress=False, cache_dir=cache_dir, monitor=parts,
             keep_best=True, max_steps=4)
    pretrain(tiny(), video_folder, tmp_path / "b", progress=False, cache_dir=cache_dir, monitor=parts,
             keep_best=True, resume=True)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["best_reading"]["step"] == 2
    assert same(load_encoder(tmp_path / "b").state_dict(), load_encoder(tmp_path / "a").state_dict())


def test_keep_best_without_a_monitor_is_refused(video_folder, tmp_path, cache_dir):
    with pytest.raises(PicoJepaError, match="learning monitor"):
        pretrain(tiny(), video_folder, tmp_path / "run", progress=False, cache_dir=cache_dir, keep_best=True)
    result = subprocess.run([sys.executable, "-m", "picojepa", "pretrain", "--data", str(video_folder), "--out",
                             str(tmp_path / "r"), "--preset", "tiny", "--keep-best", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 2 and "--keep-best needs --eval-data" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "r").exists()
