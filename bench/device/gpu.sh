#!/usr/bin/env bash
# One prepared GPU session: pretraining step speed (ablations, compile, CUDA graphs), data paths and a
# profile. Results land in $OUT (or ./bench-out). Usage: bash bench/device/gpu.sh
set -u
. "$(dirname "$0")/gpu_session.sh"
B=${B:-256}
run() { echo "+ $*"; timeout "${T:-150}" "$@" 2>"$OUT/last-stderr.txt" | tee -a "$OUT/pretrain.jsonl"; tail -3 "$OUT/last-stderr.txt"; }
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --ablate --warmup 3 --steps 10 --repeats 3
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --compile --warmup 5 --steps 20 --repeats 3
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --compile --data bank --videos 512 --warmup 5 --steps 20 --repeats 3
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --data bank --videos 512 --warmup 3 --steps 10 --repeats 3
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --data loader --videos 512 --workers 12 --warmup 3 --steps 10 --repeats 3
run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size 10 --warmup 3 --steps 10 --repeats 3 --set train.compile=false
T=200 run $PY bench/speed/pretrain.py --preset pico --device cuda --batch-size "$B" --compile-mode reduce-overhead --warmup 5 --steps 20 --repeats 3
(cd bench && timeout 120 $PY profile_step.py --preset pico --device cuda --batch-size "$B" --rows 30) > "$OUT/profile.txt" 2>&1
echo done
