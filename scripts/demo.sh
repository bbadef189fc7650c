#!/usr/bin/env bash
# The main job on the bundled default: demo weights -> ONNX (with parity proof) -> mmdet-run on samples/.
# Usage: bash scripts/demo.sh            (base model, about 2.5 minutes on 2 CPU cores)
#        CONFIG=tiny bash scripts/demo.sh (the tiny test configuration, under a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
CONFIG=${CONFIG:-base}
WEIGHTS=${WEIGHTS:-weights/demo-$CONFIG.pth}
MODEL=weights/$(basename "${WEIGHTS%.*}").onnx
OUT=${OUT:-runs/demo-$CONFIG}
if [ ! -f "$WEIGHTS" ]; then
    .venv/bin/mmdet-export demo-weights "$WEIGHTS" --config "$CONFIG"
fi
if [ ! -f "$MODEL" ] || [ "$WEIGHTS" -nt "$MODEL" ]; then
    .venv/bin/mmdet-export onnx --weights "$WEIGHTS" --out "$MODEL" --config "$CONFIG" --samples samples
fi
status=0
.venv/bin/mmdet-run samples --model "$MODEL" --out "$OUT" --overwrite || status=$?
echo
echo "== $OUT/results.csv"
cat "$OUT/results.csv"
echo
echo "== $OUT/predictions.csv"
cat "$OUT/predictions.csv"
exit $status
