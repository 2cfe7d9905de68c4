"""Ensemble inference speed: videos/s of `predict` with N members, against the decode-only ceiling and
the model-only speed. One JSON line per measurement.

    PYTHONPATH=src python bench/speed/predict.py --preset pico-112 --device cpu --videos 32
    PYTHONPATH=src python bench/speed/predict.py --preset pico --device cuda --videos 256 --workers 12

Needs PyAV (it writes and decodes real mp4 files). The members have random weights: speed does not
depend on what they learned.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from picojepa.config import load_config
from picojepa.data.dataset import FrameStore, cache_settings, eval_loader
from picojepa.datasets.synth import generate_dataset
from picojepa.experiment.predict import predict
from picojepa.models import VideoViT, encoder_flops_per_clip
from picojepa.probe.classifier import ProbeConfig, TrainedHead, VideoClassifier, load_classifier, save_classifier
from picojepa.probe.heads import make_head
from picojepa.train.checkpoint import save_encoder, write_run_config


def make_members(root: Path, preset: str, members: int, classes: list[str]) -> list[Path]:
    cfg = load_config(preset)
    dirs = []
    for i in range(members):
        torch.manual_seed(i)
        run = root / f"encoder_{i}"
        run.mkdir(parents=True)
        encoder = VideoViT(cfg.model)
        save_encoder(encoder, run)
        write_run_config(run, cfg, finished=True)
        head = make_head("linear", encoder.embed_dim, len(classes))
        clf = VideoClassifier(encoder, head, "linear", classes, cfg, num_clips=4)
        save_classifier(root / f"member_{i}", clf, run, ProbeConfig(), TrainedHead(head, 0, float("nan")))
        dirs.append(root / f"member_{i}")
    return dirs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pico-112")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--videos", type=int, default=32)
    ap.add_argument("--members", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8, help="videos per batch")
    ap.add_argument("--size", type=int, default=256, help="side of the generated videos")
    ap.add_argument("--frames", type=int, default=64)
    args = ap.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        classes = ["move_left", "move_right", "rotate_cw", "rotate_ccw"]
        per_class = -(-args.videos // len(classes))
        t0 = time.perf_counter()
        data = generate_dataset(root / "videos", classes=classes, videos_per_class=per_class, size=args.size,
                                frames=args.frames, fps=16, seed=0, progress=False)
        gen_s = time.perf_counter() - t0
        dirs = make_members(root / "models", args.preset, args.members, sorted(classes))
        n = per_class * len(classes)
        common = {"preset": args.preset, "members": args.members, "videos": n, "workers": args.workers,
                  "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                  "cpus": os.cpu_count(), "torch": torch.__version__, "video_size": args.size,
                  "video_frames": args.frames}
        print(json.dumps({"bench": "predict", "what": "generate", "seconds": round(gen_s, 1), **common}))

        cfg = load_config(args.preset)
        paths = sorted(Path(data).rglob("*.mp4"))
        store = FrameStore(paths, cache_settings(cfg), cache=None)
        t0 = time.perf_counter()
        decoded = [items for items in eval_loader(store, cfg.model.num_frames, 4, args.batch_size, args.workers)]
        decode_s = time.perf_counter() - t0
        print(json.dumps({"bench": "predict", "what": "decode_only", "videos_per_s": round(n / decode_s, 1),
                          **common}))

        models = [load_classifier(d, device) for d in dirs]
        batches = [torch.from_numpy(np.concatenate([c for _, c, _ in items])) for items in decoded]
        for m in models:  # warm-up
            m.proba_from_clips(batches[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for batch in batches:
            for m in models:
                m.proba_from_clips(batch)
        if device.type == "cuda":
            torch.cuda.synchronize()
        model_s = time.perf_counter() - t0
        clips = n * 4 * args.members
        print(json.dumps({"bench": "predict", "what": "models_only", "videos_per_s": round(n / model_s, 1),
                          "clip_forwards_per_s": round(clips / model_s, 1),
                          "tflops": round(clips * encoder_flops_per_clip(cfg.model) / model_s / 1e12, 3), **common}))

        out = root / "preds.csv"
        summary = predict(dirs, Path(data), out, "vote", args.device, args.batch_size, args.workers, progress=False)
        print(json.dumps({"bench": "predict", "what": "predict_end_to_end",
                          "videos_per_s": round(summary.videos / summary.seconds, 1),
                          "seconds": round(summary.seconds, 1), **common}))


if __name__ == "__main__":
    main()
