"""Data-parallel pretraining: rank slices, torchrun with gloo against one process, crash and resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from picojepa.config import load_config
from picojepa.data.dataset import EpochBatchSampler, MaskingCollator, TrainClips, train_loader
from picojepa.data.device_bank import DeviceClipBank
from picojepa.errors import PicoJepaError
from picojepa.masks import MaskSampler
from picojepa.train import distributed, pretrain
from picojepa.train.checkpoint import load_checkpoint
from picojepa.train.pretrain import Trainer

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
# 12 videos, global batch 4 → 3 steps per epoch, 15 steps; SIGReg with a large weight makes a wrong gather
# of the context embeddings across ranks visible in the loss.
SETTINGS = ["data.num_workers=0", "train.epochs=5", "train.batch_size=4", "train.log_every=1",
            "train.checkpoint_every=2", "train.regularizer=sigreg", "train.reg_weight=1.0", "train.device=cpu"]


class MemoryStore:
    """Frame store over arrays in memory (what the clip cache serves), videos of different lengths."""

    def __init__(self, videos: int, side: int = 73, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.arrays = [rng.integers(0, 256, size=(10 + i % 5, side, side, 3), dtype=np.uint8) for i in range(videos)]

    def __len__(self) -> int:
        return len(self.arrays)

    def frames(self, index: int) -> np.ndarray:
        return self.arrays[index]


def _masks_equal(a, b) -> bool:
    return all(torch.equal(x.keep, y.keep) and torch.equal(x.target, y.target) for x, y in zip(a, b, strict=True))


def test_ranks_split_each_global_batch_and_see_every_clip_once_per_epoch():
    single = list(EpochBatchSampler(12, 4, seed=5, total_steps=6))
    ranks = [list(EpochBatchSampler(12, 4, seed=5, total_steps=6, rank=r, world=2)) for r in range(2)]
    for step, batch in enumerate(single):
        assert ranks[0][step] + ranks[1][step] == batch  # contiguous halves of the same global batch
    for epoch in range(2):
        seen = [k[0] for r in range(2) for b in ranks[r][3 * epoch: 3 * epoch + 3] for k in b]
        assert sorted(seen) == list(range(12))
    with pytest.raises(ValueError, match="split"):
        EpochBatchSampler(12, 5, seed=0, total_steps=1, world=2)
    with pytest.raises(PicoJepaError, match="multiple of the number of ranks"):
        distributed.split_batch(6, distributed.DistContext(world=4))


def test_each_clip_gets_the_same_mask_and_crop_whatever_the_rank_count():
    cfg = load_config("tiny", overrides=["data.num_workers=0", "mask.long_range=true"])
    store = MemoryStore(12)
    trainer = Trainer(cfg, torch.device("cpu"), total_steps=6)
    masks = MaskSampler(trainer.model.encoder.grid, cfg.mask)

    def loader_batches(rank: int, world: int) -> list:
        return list(train_loader(store, cfg, masks, 6, 0, 4, rank=rank, world=world))  # type: ignore[arg-type]

    def bank_batches(rank: int, world: int) -> list:
        bank = DeviceClipBank(store, torch.device("cpu"), cfg.model.num_frames, cfg.train.seed)  # type: ignore[arg-type]
        return list(bank.batches(masks, 4, 6, 0, rank=rank, world=world))

    for batches in (loader_batches, bank_batches):
        single, halves = batches(0, 1), [batches(r, 2) for r in range(2)]
        for step, whole in enumerate(single):
            parts = [h[step] for h in halves]
            assert whole.rows is None and [p.rows for p in parts] == [[0, 1], [2, 3]]
            assert torch.equal(torch.cat([p.frames for p in parts]), whole.frames)
            for g, mask in enumerate(whole.masks):
                assert torch.equal(torch.cat([p.masks[g].keep for p in parts]), mask.keep)
                assert torch.equal(torch.cat([p.masks[g].target for p in parts]), mask.target)
            crops = [trainer.augment(p.frames, step, p.rows, p.global_size) for p in parts]
            assert torch.equal(torch.cat(crops), trainer.augment(whole.frames, step))


def test_a_clip_that_fails_to_decode_keeps_the_other_clips_rows():
    cfg = load_config("tiny")
    masks = MaskSampler((4, 4, 4), cfg.mask)
    items = TrainClips(MemoryStore(4), 8, 0)
    good = [items[(i, 0, 3)] for i in range(4)]
    whole = MaskingCollator(masks, seed=0)(good)
    broken = MaskingCollator(masks, seed=0)([good[0], (None, 3, "x.mp4\tnot a video"), *good[2:]])
    assert broken.rows == [0, 2, 3] and broken.global_size == 4 and broken.failed == [("x.mp4", "not a video")]
    assert _masks_equal(broken.masks, [m.take([0, 2, 3]) for m in whole.masks])


def test_diverged_replicas_are_caught(monkeypatch):
    cfg = load_config("tiny")
    a, b = Trainer(cfg, torch.device("cpu"), 1).model, Trainer(cfg, torch.device("cpu"), 1).model
    ctx = distributed.DistContext(world=2)
    monkeypatch.setattr(distributed, "gather_objects", lambda _ctx, mine: [mine, distributed.fingerprint(b)])
    distributed.check_replicas(ctx, a)  # same seed, same weights
    with torch.no_grad():
        b.target_encoder.norm.weight[0] += 1e-7
    with pytest.raises(RuntimeError, match="diverged"):
        distributed.check_replicas(ctx, a)


# ----------------------------------------------------------------------------------- torchrun, 2 ranks
def _torchrun(args: list[str], env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", *args]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
                **(env or {})}
    # The limit only guards against a hang: under load these runs are many times slower than alone.
    result = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=1800)
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def _pretrain_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    sets = [a for s in SETTINGS for a in ("--set", s)]
    return ["pretrain", "--data", str(data), "--out", str(out), "--preset", "tiny", "--cache-dir", str(cache),
            "--quiet", *sets, *extra]


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def ddp_run(video_folder, tmp_path_factory) -> tuple[Path, Path, Path]:
    """An uninterrupted 2-rank run, every write under its run folder recorded per rank."""
    root = tmp_path_factory.mktemp("ddp")
    out, cache = root / "ddp", root / "cache"
    _torchrun([str(WORKER), *_pretrain_args(video_folder, out, cache)],
              env={"PICOJEPA_TEST_WRITES": str(root / "writes")})
    return out, cache, root


def test_two_ranks_follow_the_single_process_curve_and_rank_0_alone_writes(ddp_run, video_folder, tmp_path):
    out, cache, root = ddp_run
    single = tmp_path / "single"
    pretrain(load_config("tiny", overrides=SETTINGS), video_folder, single, progress=False, cache_dir=cache)
    ddp_losses, single_losses = _losses(out), _losses(single)
    assert len(ddp_losses) == len(single_losses) == 15
    assert ddp_losses == pytest.approx(single_losses, rel=1e-4, abs=1e-5)
    assert ddp_losses[-1] < ddp_losses[0]  # and it trains: a curve, not a constant
    a, b = load_file(str(out / "encoder.safetensors")), load_file(str(single / "encoder.safetensors"))
    # AdamW turns rounding differences in near-zero gradients (the last LayerNorm's bias, which the residual
    # regulariser cannot see) into weight differences of a few 1e-5: one process on 1 vs 2 threads differs
    # as much. A wrong slice or gather moves the losses above by orders of magnitude more.
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-3, atol=2e-4), key
    meta = json.loads((out / "config.json").read_text())
    assert meta["finished"] and meta["world_size"] == 2 and meta["steps"] == 15 and meta["clips_seen"] == 60
    rank0, rank1 = (json.loads((root / f"writes.{r}.json").read_text()) for r in (0, 1))
    assert rank1 == []
    written = {Path(w.split(" ", 1)[1]).name for w in rank0}
    assert {"ddp", "metrics.jsonl", "checkpoint.safetensors", "encoder.safetensors", "config.json",
            "skipped.json"} <= written


def test_a_crashed_two_rank_run_resumes_on_the_same_curve(ddp_run, video_folder, tmp_path):
    reference, cache, _ = ddp_run
    out = tmp_path / "crashed"
    args = _pretrain_args(video_folder, out, cache)
    # Checkpoints fall at steps 2, 3 (epoch end), 4, 6: rank 0 dies while writing the one of step 6.
    crashed = _torchrun([str(WORKER), *args], env={"PICOJEPA_TEST_CRASH_AT_CHECKPOINT": "4"}, check=False)
    assert crashed.returncode != 0
    assert load_checkpoint(out)["step"] == 4  # the last whole checkpoint
    assert not (out / "encoder.safetensors").exists() and (out / ".checkpoint.safetensors.crashed.tmp").exists()
    assert len(_losses(out)) == 6  # steps 5 and 6 were logged after that checkpoint
    _torchrun(["-m", "picojepa", *args, "--resume"])
    assert _losses(out) == _losses(reference)  # bit for bit, as an uninterrupted run
    a, b = load_file(str(out / "encoder.safetensors")), load_file(str(reference / "encoder.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key
