#!/usr/bin/env bash
# One prepared GPU session for issue 9: a recipe sweep at a small budget, the best recipes at a 4x larger
# one, then the best recipe on a 12-class x 1,000-video pool. Results land in $OUT (or ./bench-out).
# Usage: bash bench/gpu_recipe.sh
set -u
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
$PY -c "import torch, yaml, safetensors, sklearn, rich; print('torch', torch.__version__)" 2>&1 | tee -a "$OUT/device.txt"
best() {  # the N recipes with the largest mean attentive-probe gain over random init
  $PY -c "
import json, sys
rows = [json.loads(l) for l in open('$1')]
score = {r['recipe']: sum(v for k, v in r['gain_ema'].items() if k.endswith('/attentive')) for r in rows}
top = sorted(score, key=score.get, reverse=True)[:$2]
print(','.join(top + [r for r in '${3:-}'.split(',') if r and r not in top]))"
}
timeout 190 $PY bench/recipe_sweep.py --budget 20000 --batch 32 --time-limit 140 --tag gpu-20k \
  --out "$OUT/sweep-20k.jsonl" 2>&1 | grep -v Warning | tee "$OUT/sweep-20k.txt"
TOP=$(best "$OUT/sweep-20k.jsonl" 4 vjepa)
echo "top at 20k: $TOP" | tee -a "$OUT/sweep-20k.txt"
timeout 110 $PY bench/recipe_sweep.py --recipes "$TOP" --budget 80000 --batch 32 --time-limit 70 \
  --tag gpu-80k --out "$OUT/sweep-80k.jsonl" 2>&1 | grep -v Warning | tee "$OUT/sweep-80k.txt"
BEST=$(best "$OUT/sweep-80k.jsonl" 1)
timeout 90 $PY bench/recipe_sweep.py --recipes "$BEST" --pool-per-class 1000 --budget 400000 --batch 128 \
  --tag gpu-large --out "$OUT/large.jsonl" 2>&1 | grep -v Warning | tee "$OUT/large.txt"
echo done
