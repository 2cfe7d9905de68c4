#!/usr/bin/env bash
# One prepared GPU session for issue 21 (pretraining that keeps learning as it trains longer):
#  - a screen of recipes on the demo task: per recipe and seed one run of 80k clip-steps at batch 32, read at
#    10k / 20k / 40k inside it, in parallel processes sharing the GPU;
#  - the longest curve: 400k clip-steps at batch 128 on a 12-class x 1,000-video pool, read at 25k-200k, for
#    the default recipe and the candidate.
# fp32 throughout (as on the CPU). Results land in $OUT. Usage: bash bench/device/gpu_scaling.sh
set -u
. "$(dirname "$0")/gpu_session.sh"
# The device returns only a few files from $OUT: every process writes under $WORK, and a snapshot of it is packed
# into $OUT/results.tgz every 20 s, so a session cut short by its time limit still returns what it had.
FINAL_OUT=$OUT
OUT=${WORK:-/tmp/picojepa-gpu-work}
mkdir -p "$OUT"
cp "$FINAL_OUT/device.txt" "$OUT/"
( while true; do tar czf "$FINAL_OUT/.results.tgz" -C "$OUT" . && mv "$FINAL_OUT/.results.tgz" "$FINAL_OUT/results.tgz"; sleep 20; done ) &
snapshot=$!
LIMIT=${LIMIT:-300}  # seconds after which no process starts a new run
SCREEN=${SCREEN:-vicreg-ema,plain-ema,vicreg-motion,vicreg-ema-mask0.5,vicreg-ema-lr1e-4,vicreg-ema-0.999,vicreg-ema-std0.5,vicreg-frozen,vicreg-pixels,plain-motion}
LONG=${LONG:-vicreg-ema,vicreg-motion}
SCREEN_BUDGETS=${SCREEN_BUDGETS:-10000,20000,40000,80000}
LONG_BUDGETS=${LONG_BUDGETS:-25000,50000,100000,200000,400000}
LARGE_PER_CLASS=${LARGE_PER_CLASS:-1000}
ARGS=${ARGS:-}  # extra arguments for every process (a CPU dry run shrinks the sets with them)
CACHE=${CACHE:-/dev/shm/picojepa-scaling}
nproc | tee -a "$OUT/device.txt"
start=$(date +%s)
$PY bench/learning/scaling.py $ARGS --prepare-only --data-cache $CACHE --workers 16 > "$OUT/prepare.txt" 2>&1
$PY bench/learning/scaling.py $ARGS --prepare-only --data-cache $CACHE --workers 6 --pool-per-class $LARGE_PER_CLASS > "$OUT/prepare-large.txt" 2>&1 &
prep=$!
echo "demo data ready after $(( $(date +%s) - start )) s" | tee -a "$OUT/timeline.txt"
for r in ${SCREEN//,/ }; do
  timeout $((LIMIT + 240)) $PY bench/learning/scaling.py $ARGS --recipes "$r" --seeds 0,1 --budgets $SCREEN_BUDGETS \
    --longest-only --data-cache $CACHE --threads 1 --workers 1 --time-limit "$LIMIT" --tag gpu-screen \
    --out "$OUT/screen-$r.jsonl" > "$OUT/screen-$r.txt" 2>&1 &
done
wait $prep
echo "large pool ready after $(( $(date +%s) - start )) s" | tee -a "$OUT/timeline.txt"
for r in ${LONG//,/ }; do
  timeout $((LIMIT + 240)) $PY bench/learning/scaling.py $ARGS --recipes "$r" --seeds 0 --pool-per-class $LARGE_PER_CLASS --batch 128 \
    --budgets $LONG_BUDGETS --longest-only --data-cache $CACHE --threads 1 --workers 1 \
    --tag gpu-long --out "$OUT/long-$r.jsonl" > "$OUT/long-$r.txt" 2>&1 &
done
wait $(jobs -p | grep -v "^$snapshot$")
echo "all done after $(( $(date +%s) - start )) s" | tee -a "$OUT/timeline.txt"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv | tee -a "$OUT/device.txt"
kill $snapshot
tar czf "$FINAL_OUT/results.tgz" -C "$OUT" .
