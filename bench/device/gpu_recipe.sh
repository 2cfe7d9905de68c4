#!/usr/bin/env bash
# One prepared GPU session for issue 9: a recipe sweep at a small budget, then the best recipe on a
# 12-class x 1,000-video pool. Results land in $OUT (or ./bench-out).
# Usage: bash bench/device/gpu_recipe.sh
set -u
. "$(dirname "$0")/gpu_session.sh"
$PY -c "import yaml, safetensors, sklearn, rich" 2>&1 | tee -a "$OUT/device.txt"  # the image has them
best() {  # the N recipes with the largest mean attentive-probe gain over random init
  $PY -c "
import json, sys
rows = [json.loads(l) for l in open('$1')]
score = {r['recipe']: sum(v for k, v in r['gain_ema'].items() if k.endswith('/attentive')) for r in rows}
top = sorted(score, key=score.get, reverse=True)[:$2]
print(','.join(top + [r for r in '${3:-}'.split(',') if r and r not in top]))"
}
SWEEP=${SWEEP:-vicreg-local-1,sigreg-local-0.5,future2+vicreg-local-1,vicreg-local-0.1,stopgrad+sigreg-local-0.5,sigreg-local-0.05,patch8+vicreg-local-1}
timeout 230 $PY bench/learning/recipe_sweep.py --recipes "$SWEEP" --budget 20000 --batch 32 --time-limit 165 --tag gpu-20k-b \
  --out "$OUT/sweep-20k.jsonl" 2>&1 | grep -v Warning | tee "$OUT/sweep-20k.txt"
BEST=$(best "$OUT/sweep-20k.jsonl" 1)
echo "best at 20k: $BEST" | tee -a "$OUT/sweep-20k.txt"
timeout 140 $PY bench/learning/recipe_sweep.py --recipes "$BEST" --pool-per-class 1000 --budget 200000 --batch 128 \
  --tag gpu-large --out "$OUT/large.jsonl" 2>&1 | grep -v Warning | tee "$OUT/large.txt"
echo done
