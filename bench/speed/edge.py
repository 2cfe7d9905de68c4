"""Edge inference: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8.

    PYTHONPATH=src python bench/speed/edge.py latency [--preset pico-112]      # one member and the 4-member graph
    PYTHONPATH=src python bench/speed/edge.py profile [--preset pico-112]      # where one clip's time goes
    PYTHONPATH=src python bench/speed/edge.py accuracy --experiment EXP       # int8 vs fp32 on EXP's test split
    PYTHONPATH=src python bench/speed/edge.py int8-methods --experiment EXP   # dynamic vs static (calibrated) int8
    PYTHONPATH=src python bench/speed/edge.py stream-memory [--minutes 1 60]  # peak RSS of streaming prediction

``latency``: per-clip latency at batch 1 and clips/s at batches of 8 and 32 clips, for one member (encoder +
linear head) and for the ensemble graph of 4 members with their own encoders (the independent protocol, the
costly case) and a hard vote. Random weights: speed does not depend on what the models learned. The
runtimes take turns, run by run (load from other processes falls on each alike), median after warm-up; torch
runs with OMP_WAIT_POLICY=PASSIVE unless it is set (see main). ``profile``: time per operator type of one
clip, torch and ONNX Runtime fp32/int8. ``accuracy``: exports an experiment, predicts its test split with torch, ONNX
Runtime fp32 and int8, and compares. ``int8-methods``: the General model of an experiment quantised
dynamically (what ``export --int8`` does) and statically (QDQ, calibrated on clips of the training split),
each scored on the test split and timed at batch 1. ``stream-memory``: writes synthetic videos of the given
lengths and streams each through ``picojepa predict --stream`` in a fresh process, reporting its peak
resident memory. Results are printed and appended as JSON lines to bench/results/<date>-cpu-edge.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from picojepa.config import load_config
from picojepa.deploy.export import export_graph, export_onnx
from picojepa.deploy.graphs import EnsembleGraph, HardVote, MemberGraph
from picojepa.deploy.manifest import INPUT, MEMBER_PROBABILITIES, PREDICTION, PROBABILITIES, read_manifest
from picojepa.deploy.onnx_support import open_session
from picojepa.deploy.quantize import quantize_int8
from picojepa.models import VideoViT
from picojepa.probe.classifier import VideoClassifier
from picojepa.probe.heads import make_head

RESULTS = Path(__file__).parent / "results"
CLASSES = ["move_left", "move_right", "rotate_ccw", "rotate_cw"]


def machine() -> dict:
    import onnxruntime

    return {"cpus": os.cpu_count(), "cpu": _cpu_name(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def record(entry: dict) -> None:
    entry = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "load_avg": os.getloadavg(), **entry}
    print(json.dumps(entry), flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"{datetime.now(timezone.utc):%Y-%m-%d}-cpu-edge.jsonl", "a") as f:
        f.write(json.dumps(entry) + "\n")


def median_seconds(run, min_reps: int = 5, budget_s: float = 20.0, warmup: int = 2) -> tuple[float, float]:
    """(median, fastest) seconds of repeated runs after warm-up; on a busy machine the fastest run is the
    closest to what the runtime does alone."""
    times = round_robin({"run": run}, min_reps, budget_s, warmup)["run"]
    return float(np.median(times)), float(np.min(times))


def round_robin(runs: dict, min_reps: int = 5, budget_s: float = 20.0, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds of each run, taking turns (one of each per round), so that load from other processes falls
    on every runtime alike; warm-up rounds first."""
    for _ in range(warmup):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    while len(times[next(iter(runs))]) < min_reps or (time.perf_counter() - start < budget_s * len(runs)
                                                      and len(times[next(iter(runs))]) < 50):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    return times


def random_members(preset: str, count: int, num_clips: int = 1) -> list[VideoClassifier]:
    cfg = load_config(preset)
    members = []
    for seed in range(count):
        torch.manual_seed(seed)
        encoder = VideoViT(cfg.model)
        members.append(VideoClassifier(encoder, make_head("linear", encoder.embed_dim, len(CLASSES)), "linear",
                                       CLASSES, cfg, num_clips=num_clips).eval())
    return members


# ----------------------------------------------------------------------------------------------- latency
def latency(args: argparse.Namespace) -> None:
    members = random_members(args.preset, 4)
    cfg = members[0].cfg.model
    graphs = {"1 member": (MemberGraph(members[0]), [PROBABILITIES]),
              "4-member ensemble (vote)": (EnsembleGraph(members, HardVote(4, len(CLASSES))),
                                           [PROBABILITIES, PREDICTION, MEMBER_PROBABILITIES])}
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        for what, (module, outputs) in graphs.items():
            if not any(what.startswith(g) for g in args.graphs):
                continue
            fp32, int8 = Path(tmp) / f"{len(outputs)}.onnx", Path(tmp) / f"{len(outputs)}.int8.onnx"
            example = torch.randn(2, 2, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
            export_graph(module, example, fp32, outputs)
            quantize_int8(fp32, int8)
            sizes = {"fp32_mb": fp32.stat().st_size / 1e6, "int8_mb": int8.stat().st_size / 1e6}
            sessions = {"onnxruntime fp32": open_session(fp32), "onnxruntime int8": open_session(int8)}
            for batch in args.batches:
                x = torch.randn(batch, 1, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=gen)
                feed = {INPUT: x.numpy()}
                runs = {"torch eager": lambda x=x, m=module: m(x),
                        **{name: (lambda s=s, f=feed: s.run(None, f)) for name, s in sessions.items()}}
                with torch.inference_mode():
                    times = round_robin(runs, budget_s=args.budget)
                for runtime, seconds in times.items():
                    median = float(np.median(seconds))
                    record({"bench": "edge-latency", "preset": args.preset, "graph": what, "runtime": runtime,
                            "batch": batch, "ms_per_clip": 1000 * median / batch, "clips_per_s": batch / median,
                            "fastest_ms_per_clip": 1000 * min(seconds) / batch, "runs": len(seconds),
                            "timing": "round robin over the runtimes, median", **sizes, **machine()})


# ----------------------------------------------------------------------------------------------- profile
def profile(args: argparse.Namespace) -> None:
    """Share of one batch-1 clip's time per operator type (top 8), torch eager and ONNX Runtime."""
    import onnxruntime as ort

    module = MemberGraph(random_members(args.preset, 1)[0])
    cfg = load_config(args.preset).model
    x = torch.randn(1, 1, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for _ in range(3):
            module(x)
        with torch.profiler.profile() as prof:
            for _ in range(args.runs):
                module(x)
    ops = {e.key: e.self_cpu_time_total / 1000 / args.runs for e in prof.key_averages()}
    record({"bench": "edge-profile", "preset": args.preset, "runtime": "torch eager", **_top(ops), **machine()})
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "m.onnx", Path(tmp) / "m.int8.onnx"
        export_graph(module, torch.randn(2, 2, *x.shape[2:]), fp32, [PROBABILITIES])
        quantize_int8(fp32, int8)
        for name, path in (("onnxruntime fp32", fp32), ("onnxruntime int8", int8)):
            options = ort.SessionOptions()
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tmp) / "ort")
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for _ in range(3 + args.runs):
                session.run(None, {INPUT: x.numpy()})
            events = json.loads(Path(session.end_profiling()).read_text())
            ops: dict[str, float] = {}
            runs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
            for e in runs[len(runs) * 3 // (3 + args.runs):]:  # leave the warm-up runs out
                op = e["args"].get("op_name", "?")
                ops[op] = ops.get(op, 0.0) + e["dur"] / 1000 / args.runs
            record({"bench": "edge-profile", "preset": args.preset, "runtime": name, **_top(ops), **machine()})


def _top(ms_per_op: dict[str, float], count: int = 8) -> dict:
    total = sum(ms_per_op.values())
    top = sorted(ms_per_op.items(), key=lambda kv: -kv[1])[:count]
    return {"op_ms_per_clip": total, "top_ops": {k: f"{v:.2f} ms ({100 * v / total:.0f} %)" for k, v in top}}


# ----------------------------------------------------------------------------------------------- accuracy
def accuracy(args: argparse.Namespace) -> None:
    from picojepa.deploy.batch import predict_videos
    from picojepa.deploy.scoring import OnnxScorer
    from picojepa.experiment.predict import predict

    exp = Path(args.experiment)
    splits = json.loads((exp / "splits.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        test = Path(tmp) / "test"
        for video in splits["splits"]["test"]:  # the test split as class folders (links, no copies)
            (test / splits["labels"][video]).mkdir(parents=True, exist_ok=True)
            (test / splits["labels"][video] / Path(video).name).symlink_to(video)
        out = Path(tmp) / "onnx"
        t0 = time.perf_counter()
        summary = export_onnx([exp], out, aggregate=args.aggregate, int8=True, progress=False)
        export_s = time.perf_counter() - t0
        results = {"torch": predict([exp], test, Path(tmp) / "torch.csv", args.aggregate, "cpu", workers=1,
                                    progress=False)}
        for name, int8 in (("onnx fp32", False), ("onnx int8", True)):
            results[name] = predict_videos(OnnxScorer(out, int8=int8), test, Path(tmp) / f"{name}.csv", workers=1,
                                           progress=False)
        preds = {name: _predictions(Path(tmp) / f"{name}.csv") for name in results}
        models = list(results["onnx fp32"].accuracy)
        for name, result in results.items():
            agreement = {m: float(np.mean([preds[name][k] == v for k, v in preds["onnx fp32"].items()
                                           if k[1] == m])) for m in models}
            record({"bench": "edge-accuracy", "experiment": str(exp), "aggregate": args.aggregate,
                    "runtime": name, "test_videos": result.videos, "accuracy": result.accuracy,
                    "agreement_with_onnx_fp32": agreement, "videos_per_s": result.videos / result.seconds,
                    "files_mb": {f: s / 1e6 for f, s in summary.files.items()}, "export_s": export_s,
                    "export_max_abs_difference": summary.max_difference, **machine()})


def _predictions(path: Path) -> dict[tuple[str, str], str]:
    import csv

    with open(path, newline="") as f:
        return {(r["video"], r["model"]): r["pred"] for r in csv.DictReader(f)}


# ----------------------------------------------------------------------------------------------- int8 methods
def int8_methods(args: argparse.Namespace) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from picojepa.data.dataset import FrameStore, eval_loader
    from picojepa.deploy.scoring import cache_settings_of, prepare_clips
    from picojepa.probe.classifier import load_classifier

    exp = Path(args.experiment)
    splits = json.loads((exp / "splits.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        export_onnx([exp], out, members="general", int8=True, progress=False)
        manifest = read_manifest(out)
        sampling = manifest.sampling
        clf = load_classifier(exp / "classifiers" / "general")

        def clips_of(videos: list[str]) -> np.ndarray:
            store = FrameStore([Path(v) for v in videos], cache_settings_of(sampling), cache=None)
            loader = eval_loader(store, sampling.frames, sampling.clips_per_video, 16, 1)
            return np.concatenate([prepare_clips(np.stack([c for _, c, _ in items]), sampling.size)
                                   for items in loader])

        rng = np.random.default_rng(0)
        calibration = clips_of(list(rng.choice(splits["splits"]["train"], args.calibration_videos, replace=False)))

        class TrainingClips(CalibrationDataReader):
            def __init__(self) -> None:
                self.batches = iter([{INPUT: calibration[i: i + 4]} for i in range(0, len(calibration), 4)])

            def get_next(self) -> dict | None:
                return next(self.batches, None)

        quant_pre_process(str(out / "general.onnx"), str(out / "prepared.onnx"), skip_symbolic_shape=True)
        quantize_static(out / "prepared.onnx", out / "static.onnx", TrainingClips(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        op_types_to_quantize=["MatMul", "Gemm"])
        test = clips_of(splits["splits"]["test"])
        y = np.array([manifest.classes.index(splits["labels"][v]) for v in splits["splits"]["test"]])
        graphs = {"fp32": "general.onnx", "dynamic int8 (export --int8)": "general.int8.onnx",
                  f"static int8 (QDQ, MinMax, {args.calibration_videos} training videos)": "static.onnx"}
        reference = None
        for name, file in graphs.items():
            session = open_session(out / file)
            probs = np.concatenate([session.run(None, {INPUT: test[i: i + 8]})[0] for i in range(0, len(test), 8)])
            reference = probs if reference is None else reference
            one = test[:1]
            seconds, _ = median_seconds(lambda s=session, x=one: s.run(None, {INPUT: x}), budget_s=args.budget)
            record({"bench": "edge-int8-methods", "experiment": str(exp), "model": "general",
                    "head": clf.head_kind, "graph": name, "test_videos": len(y),
                    "accuracy": float((probs.argmax(1) == y).mean()),
                    "agreement_with_fp32": float((probs.argmax(1) == reference.argmax(1)).mean()),
                    "max_abs_difference_vs_fp32": float(np.abs(probs - reference).max()),
                    "ms_per_video_batch1": 1000 * seconds, "clips_per_video": sampling.clips_per_video,
                    "file_mb": (out / file).stat().st_size / 1e6, **machine()})


# ----------------------------------------------------------------------------------------------- streaming
def write_long_video(path: Path, minutes: float, fps: int = 25, width: int = 160, height: int = 120) -> Path:
    """A synthetic video of the given length, generated and encoded frame by frame (bounded memory)."""
    import av

    rng = np.random.default_rng(0)
    background = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(int(minutes * 60 * fps)):
            frame = background.copy()
            x, y = (3 * t) % (width - 24), (40 + t // 50) % (height - 24)
            frame[y: y + 24, x: x + 24] = (230, 200, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def stream_memory(args: argparse.Namespace) -> None:
    members = random_members(args.preset, 4, num_clips=4)  # 4 clips per window, as predict takes per video
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        exp = _classifier_folders(root, members)
        export_onnx(exp, root / "onnx", int8=args.int8, progress=False)
        for minutes in args.minutes:
            video = write_long_video(root / f"{minutes}min.mp4", minutes)
            cmd = [sys.executable, "-m", "picojepa", "predict", "--models", str(root / "onnx"), "--runtime", "onnx",
                   *(["--int8"] if args.int8 else []), "--stream", str(video), "--window-seconds",
                   str(args.window), "--hop-seconds", str(args.hop), "--out", str(root / "windows.csv"), "--quiet"]
            # A small parent per run, so that RUSAGE_CHILDREN's peak covers that run only.
            probe = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
                     "r = subprocess.run(sys.argv[1:]); "
                     "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t, "
                     "r.returncode)")
            out = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True)
            peak_kib, seconds, rc = out.stdout.split()[-3:]
            if rc != "0":
                raise SystemExit(f"streaming failed: {out.stderr[-2000:]}")
            windows = len((root / "windows.csv").read_text().splitlines()) - 1
            record({"bench": "edge-stream-memory", "preset": args.preset, "members": 4, "int8": args.int8,
                    "video_minutes": minutes, "video": "160x120, 25 fps, x264", "window_s": args.window,
                    "hop_s": args.hop, "rows": windows, "peak_rss_mb": int(peak_kib) / 1024,
                    "seconds": float(seconds), "video_mb": video.stat().st_size / 1e6, **machine()})
            video.unlink()


def _classifier_folders(root: Path, members: list[VideoClassifier]) -> list[Path]:
    from picojepa.probe.classifier import ProbeConfig, TrainedHead, save_classifier

    dirs = []
    for i, clf in enumerate(members):
        dirs.append(root / f"member_{i}")
        save_classifier(dirs[-1], clf, None, ProbeConfig(num_clips=clf.num_clips),
                        TrainedHead(clf.head, 0, float("nan")))
    return dirs


def main() -> None:
    if "OMP_WAIT_POLICY" not in os.environ:
        # GNU OpenMP's default (active) waiting stalls torch's 2-thread pool whenever another process holds a
        # core: ~930 ms instead of ~23 ms per pico-112 clip here. ONNX Runtime's threads never spin either
        # (open_session). OpenMP reads the variable when torch loads, so set it and start again.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    lat = sub.add_parser("latency")
    lat.add_argument("--preset", default="pico-112")
    lat.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    lat.add_argument("--graphs", nargs="+", default=["1", "4"], help="1 (one member) and/or 4 (the ensemble)")
    lat.add_argument("--budget", type=float, default=15.0, help="seconds of timed runs per measurement")
    prof = sub.add_parser("profile")
    prof.add_argument("--preset", default="pico-112")
    prof.add_argument("--runs", type=int, default=10)
    acc = sub.add_parser("accuracy")
    acc.add_argument("--experiment", required=True)
    acc.add_argument("--aggregate", default="vote")
    methods = sub.add_parser("int8-methods")
    methods.add_argument("--experiment", required=True)
    methods.add_argument("--calibration-videos", type=int, default=32)
    methods.add_argument("--budget", type=float, default=10.0)
    mem = sub.add_parser("stream-memory")
    mem.add_argument("--preset", default="pico-112")
    mem.add_argument("--minutes", type=float, nargs="+", default=[1, 60])
    mem.add_argument("--window", type=float, default=8.0)
    mem.add_argument("--hop", type=float, default=8.0)
    mem.add_argument("--int8", action="store_true")
    args = ap.parse_args()
    {"latency": latency, "profile": profile, "accuracy": accuracy, "int8-methods": int8_methods,
     "stream-memory": stream_memory}[args.what](args)


if __name__ == "__main__":
    main()
