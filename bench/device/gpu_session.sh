# Sourced by the prepared GPU session scripts: output folder ($OUT, default ./bench-out), import path,
# Python ($PY), and the device and torch version on record in $OUT/device.txt.
OUT=${OUT:-bench-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
$PY -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/device.txt"
