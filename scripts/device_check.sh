#!/usr/bin/env bash
# Every GPU figure of issue 17 in one prepared run (about 7 minutes on the lent H200; no network needed).
#
#   bash scripts/device_check.sh OUTDIR              # PyTorch on CUDA, base model (demo weights made here)
#   bash scripts/device_check.sh --dry-run OUTDIR    # the same steps, tiny model on the CPU, < 2 minutes (CI)
#
# OUTDIR receives at most 6 files, 2 folders deep at most (what the device tool brings back):
#   summary.md, summary.json            every figure, and each step's status
#   gpu-<gpu name>/report.{md,json,png}  the mmdet-bench report, ready to commit as benchmarks/results/gpu-<gpu name>/
#   details.tar.gz                       logs and every intermediate report (gpu_check, decode, mmdet-run outputs)
# Bulky work files (demo weights, generated media) go to a scratch folder, deleted at the end unless --work DIR.
#
# Steps, each under `timeout` and inside an overall deadline (DEVICE_CHECK_BUDGET seconds: 450 by default;
# 420 for --dry-run, a cap against runaway steps: it needs about 80 CPU-seconds, 1-2 minutes on 2 idle cores). The summary and the
# tarball are rewritten after every step, so a run cut short keeps what it measured. The exit status is 1 when
# any step failed, timed out or was skipped for lack of time.
#   env       modules, versions, GPU (missing modules are listed, not fatal)
#   weights   seeded demo weights of the model (an 800 MB checkpoint cannot be carried)
#   media     a folder of generated 720p media (10 s videos at 30 fps: exact decode of 300 frames, 10 kept)
#   gpu_check fp32/fp16/bf16 x SDPA kernels x CUDA graphs vs fp32: parity, p50 ms/clip at batch 1/8/32, peak GPU
#             memory, TFLOP/s as a share of the measured bf16 matmul peak (benchmarks/gpu_check.py)
#   e2e       mmdet-run --backend torch --device cuda --workers 16 --decode-processes on the folder
#   bench     mmdet-bench --device cuda: the committed report
#   decode    decode frames/s per core and its scaling, threads vs processes at 1/4/16 (benchmarks/decode.py)
# Python: $PYTHON, else .venv/bin/python when present, else python3 (the GPU machine's, with torch). The package
# is used from src/ (PYTHONPATH), nothing is installed; wheels carried in .whl/ (e.g. PyAV, see
# /work/.library/device/README.md) are unpacked into the scratch folder first, without the network.
set -uo pipefail

DRY=0
WORK=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1; shift ;;
        --work) WORK="$2"; shift 2 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--dry-run] [--work DIR] OUTDIR" >&2; exit 2; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$1" && OUT=$(cd "$1" && pwd)
KEEP_WORK=1
if [ -z "$WORK" ]; then WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmdet-device-check.XXXXXX"); KEEP_WORK=0; fi
mkdir -p "$WORK/logs"
: > "$WORK/steps.tsv"

if [ -n "${PYTHON:-}" ]; then PY=$PYTHON
elif [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python
else PY=python3; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if compgen -G "$ROOT/.whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" "$ROOT"/.whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi

if [ $DRY = 1 ]; then
    BUDGET=${DEVICE_CHECK_BUDGET:-420}; DEVICE=cpu; CONFIG=tiny; BATCHES=1; WORKERS=2
    MEDIA=(--videos 2 --images 1 --seconds 2 --fps 25)
    GPU_ARGS=(--batches 1 --warmup 0 --min-reps 1 --time-budget 0 --parity-clips 1 --threads 2 --deadline-s 100
              --no-host-timing)
    DECODE_ARGS=(--workers 1,2 --copies 2 --seconds 2 --fps 25 --no-prepare)
    # --no-e2e: the bench's pipeline-vs-seed part would repeat the e2e step on the CPU (tests cover its logic)
    BENCH_ARGS=(--config tiny --device cpu --quick --rows torch-eager-fp32 --batch-sizes 1 --fidelity-clips 1
                --min-reps 1 --warmup 0 --time-budget 0 --workers 2 --no-e2e)
else
    BUDGET=${DEVICE_CHECK_BUDGET:-450}; DEVICE=cuda; CONFIG=base; BATCHES=1,8,32; WORKERS=16
    MEDIA=(--videos 48 --images 16 --seconds 10 --fps 30)
    GPU_ARGS=(--batches 1,8,32 --warmup 2 --min-reps 5 --time-budget 0.3 --parity-clips 8 --deadline-s 100)
    DECODE_ARGS=(--workers 1,4,16 --copies 2 --per-worker 2 --seconds 10 --fps 30)
    BENCH_ARGS=(--config base --device cuda --batch-sizes 1,8,32 --rows torch-eager-fp32,torch-fp16-graphs,torch-bf16-graphs
                --min-reps 5 --warmup 2 --time-budget 0.5 --workers 16)
fi
START=$SECONDS
FAILED=0

summarise() {
    "$PY" -m mmdet_deploy.benchmarks.device_check summary "$OUT" "$WORK" $([ $DRY = 1 ] && echo --dry-run) \
        >> "$WORK/logs/summary.log" 2>&1
    tar -czf "$OUT/details.tar.gz.part" -C "$WORK" --exclude=site --exclude='*.pth' --exclude=media \
        --exclude='*.mp4' --exclude='*.npy' --exclude=artefacts . 2>/dev/null
    mv -f "$OUT/details.tar.gz.part" "$OUT/details.tar.gz"
}

# step NAME MAX_SECONDS COMMAND...: run under timeout within the deadline; log, record, summarise.
step() {
    local name=$1 max=$2; shift 2
    local left=$((BUDGET - (SECONDS - START) - 10))
    local limit=$(( max < left ? max : left ))
    if [ "$limit" -lt 5 ]; then
        printf '%s\t125\t0\tskipped: %s s of the %s s budget left\n' "$name" "$left" "$BUDGET" >> "$WORK/steps.tsv"
        echo "== $name skipped: ${left} s of the ${BUDGET} s budget left" >&2
        FAILED=1; summarise; return 125
    fi
    echo "== $name (at most ${limit} s)" >&2
    local t0=$SECONDS rc
    timeout -k 10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    local note
    # the last line that is not a warning (demo weights warn on every load) or its source line
    note=$(grep -v -E '^\s|^$|Warning' "$WORK/logs/$name.log" | tail -n 1 | tr '\t|' '  ' | cut -c1-160)
    [ $rc -eq 0 ] || FAILED=1
    [ $rc -eq 124 ] && note="timed out after ${limit} s; $note"
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$note" >> "$WORK/steps.tsv"
    echo "   rc=$rc in $((SECONDS - t0)) s: $note" >&2
    summarise
    return $rc
}

# Console entry points and the demo-weights writer as `python -c` programs (timeout runs programs, not functions)
RUN_CLI='import sys; from mmdet_deploy.cli.run import main; sys.argv[0] = "mmdet-run"; main()'
BENCH_CLI='import sys; from mmdet_deploy.cli.bench import main; sys.argv[0] = "mmdet-bench"; main()'
DEMO_WEIGHTS='import sys, warnings; warnings.simplefilter("ignore")
from mmdet_deploy.model import write_demo_checkpoint
print(write_demo_checkpoint(sys.argv[1], config=sys.argv[2], seed=0))'

step env 60 "$PY" -m mmdet_deploy.benchmarks.device_check env "$WORK"
REPORT_NAME=$(grep -m 1 -E '^(gpu-[a-z0-9-]+|cpu)$' "$WORK/logs/env.log" 2>/dev/null || echo cpu)
[ $DRY = 1 ] && REPORT_NAME=cpu-dry-run
WEIGHTS=$WORK/demo-$CONFIG.pth
step weights 90 "$PY" -c "$DEMO_WEIGHTS" "$WEIGHTS" "$CONFIG"
step media 120 "$PY" -m mmdet_deploy.benchmarks.device_check media "$WORK/media" "${MEDIA[@]}"
step gpu_check 130 "$PY" -m mmdet_deploy.benchmarks.gpu_check --weights "$WEIGHTS" --config "$CONFIG" \
    --device "$DEVICE" --out "$WORK/gpu_check" "${GPU_ARGS[@]}"
# Threads vs processes at 16 workers is the decode step's comparison; the run itself uses processes.
extra=(); [ $DRY = 0 ] && extra=(--precision bf16 --cuda-graphs)
step e2e-processes 90 "$PY" -c "$RUN_CLI" "$WORK/media" --model "$WEIGHTS" --backend torch --device "$DEVICE" \
    --config "$CONFIG" --out "$WORK/e2e-processes" --workers "$WORKERS" --decode-processes --batch-size 16 \
    --face-detectors haar --overwrite -q "${extra[@]}"
if step bench 300 "$PY" -c "$BENCH_CLI" --out "$WORK/bench" --weights "$WEIGHTS" "${BENCH_ARGS[@]}"; then
    mkdir -p "$OUT/$REPORT_NAME"
    cp "$WORK/bench/report.md" "$WORK/bench/report.json" "$OUT/$REPORT_NAME/"
    [ -f "$WORK/bench/report.png" ] && cp "$WORK/bench/report.png" "$OUT/$REPORT_NAME/"
fi
step decode 100 "$PY" -m mmdet_deploy.benchmarks.decode --out "$WORK/decode" "${DECODE_ARGS[@]}"
summarise
[ $KEEP_WORK = 1 ] || rm -rf "$WORK"
echo "device check: $(( SECONDS - START )) s; see $OUT/summary.md" >&2
exit $FAILED
