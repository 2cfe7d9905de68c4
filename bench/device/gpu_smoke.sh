#!/usr/bin/env bash
# GPU check of the command line itself: generate videos, pretrain with the GPU-resident cache, run a
# small experiment. PyAV comes from a wheel carried in .whl/. Usage: bash bench/device/gpu_smoke.sh
set -eu
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH="$PWD/src:/tmp/site" PYTHONUNBUFFERED=1
P="python3 -m picojepa"
$P synth --out /tmp/syn --classes 4 --videos-per-class 24 --size 128 --frames 32 --quiet
$P pretrain --data /tmp/syn --out /tmp/run --preset pico-112 --epochs 4 -b 32 --device cuda --compile \
  --cache-dir /tmp/cache --set data.frame_stride=2 --quiet 2>&1 | tee "$OUT/pretrain.txt"
cp /tmp/run/metrics.jsonl "$OUT/metrics.jsonl"
$P experiment --data /tmp/syn --out /tmp/exp --preset tiny --epochs 2 --probe-epochs 5 --device cuda \
  --cache-dir /tmp/cache --quiet 2>&1 | tail -25 | tee "$OUT/experiment.txt"
$P predict --models /tmp/exp --videos /tmp/syn --out /tmp/preds.csv --device cuda --workers 8 --quiet \
  | tail -4 | tee "$OUT/predict.txt"
echo done
