#!/usr/bin/env bash
# Second prepared GPU session: profile, attention kernels, batch size, and ensemble inference (PyAV carried
# as a wheel in .whl/). Usage: bash bench/device/gpu_followup.sh
set -u
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl \
  && export PYTHONPATH="$PYTHONPATH:/tmp/site"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
(cd bench && timeout 90 python3 profile_step.py --preset pico --device cuda --batch-size 256 --rows 30) > "$OUT/profile.txt" 2>&1
timeout 60 python3 bench/speed/attention.py --device cuda --batch-size 256 | tee "$OUT/attention.jsonl"
run() { echo "+ $*"; timeout "${T:-120}" "$@" 2>>"$OUT/stderr.txt" | tee -a "$OUT/results.jsonl"; }
run python3 bench/speed/predict.py --preset pico --device cuda --videos 256 --workers 14 --batch-size 16
run python3 bench/speed/pretrain.py --preset pico --device cuda --batch-size 256 --compile --sdpa-backend cudnn --warmup 5 --steps 20 --repeats 3
run python3 bench/speed/pretrain.py --preset pico --device cuda --batch-size 512 --compile --warmup 5 --steps 10 --repeats 3
run python3 bench/speed/predict.py --preset pico-112 --device cuda --videos 256 --workers 14 --batch-size 16
tail -20 "$OUT/stderr.txt"
echo done
