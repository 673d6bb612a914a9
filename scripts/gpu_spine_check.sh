#!/usr/bin/env bash
# GPU check of the end-to-end training step (issue 14, item 3), about 3-4 minutes on one GPU (the data set is
# generated first, then the cases run within a budget: no new case after BUDGET=110 s, all killed at 240 s):
# `gru-mm-bench train --device cuda` on the default experiment and the larger configuration (hidden 256,
# bidirectional, batch 64): per configuration the baseline (random batches, pack_padded_sequence + nn.GRU,
# one process for data, pageable copies), then ours (Lightning, bucketing, packed pinned batches) with
# 4 data workers, with none, and with 4 workers and model.compile=true. Each row: samples/s, the share of
# step time waiting for data, padding ratio per modality, GPU busy / wall (torch.profiler over 10 steps),
# host-to-device copies per step (pinned + pageable), peak GPU memory, and ours over the baseline.
# FULL=1 also trains the default experiment with the real CLI in fp32 and bf16-mixed (about 4 more minutes).
# Runs on a machine with CUDA torch + Lightning but without hydra/omegaconf (carried as wheels in .whl/).
# Results: $OUT/bench_train_cuda.{txt,json,md} (and $OUT/spine_gpu.log with FULL=1).
#
#   bash scripts/gpu_spine_check.sh                       # from the repository root
#   BUDGET=3000 TIMEOUT=3600 bash scripts/gpu_spine_check.sh --device cpu --quick  # dry run on the CPU
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if ! "$PY" -c "import hydra" 2>/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
DEVICE=cuda
STEPS=(--steps 30)
DATA=()
for arg in "$@"; do
    case "$arg" in
        --device=*) DEVICE="${arg#--device=}" ;;
        cpu | cuda) DEVICE="$arg" ;;
        --quick) STEPS=(--steps 4) DATA=(data.source.n_train=256 data.source.n_val=32 data.source.n_test=32) ;;
    esac
done
root=$(mktemp -d)
echo "== $(date +%T) $(nproc) CPU cores; generating the data set"
SECONDS=0
timeout 150 "$PY" -c "import logging, sys, warnings; from pathlib import Path
logging.disable(logging.INFO); warnings.filterwarnings('ignore')
from gru_mm.bench.train import _build, _compose
_build(_compose('default', 'cpu', Path(sys.argv[1]), sys.argv[2:]))" "$root/data" ${DATA[@]+"${DATA[@]}"} || exit 1
echo "data ready in ${SECONDS} s"
echo "== $(date +%T) gru-mm-bench train --device $DEVICE"
# Cases in this order (the budget leaves the last out if the machine is slow): baseline and w4 of each
# configuration, then w0 of each, then w4+compile of each. No new case starts after $BUDGET s (a case takes
# 10-20 s on a GPU machine, compiling ones 30-60 s more).
timeout "${TIMEOUT:-240}" "$PY" -m gru_mm.bench.cli train --device "$DEVICE" --data-dir "$root/data" \
    --budget "${BUDGET:-110}" \
    --out "$OUT/bench_train_$DEVICE.json" "${STEPS[@]}" ${DATA[@]+"${DATA[@]}"} \
    --variants "data.num_workers=4" "data.num_workers=0" "data.num_workers=4 model.compile=true" \
    2>&1 | grep --line-buffered -vE "Warning|warn|^\s*$|srun" | tee "$OUT/bench_train_$DEVICE.txt"
status=${PIPESTATUS[0]}
echo "bench exit status $status"
if [ -s "$OUT/bench_train_$DEVICE.json" ]; then
    "$PY" -c "import json, sys; from gru_mm.bench.train import markdown_table as t
print(t(json.load(open(sys.argv[1]))))" "$OUT/bench_train_$DEVICE.json" | tee "$OUT/bench_train_$DEVICE.md"
fi
if [ "${FULL:-0}" = 1 ] && [ "$DEVICE" = cuda ]; then
    for precision in 32-true bf16-mixed; do
        name=$([ "$precision" = 32-true ] && echo fp32 || echo bf16)
        echo "== $(date +%T) default experiment, trainer=gpu, precision=$precision"
        SECONDS=0
        timeout 200 "$PY" -m gru_mm.train trainer=gpu trainer.precision="$precision" logger=csv \
            paths.root="$root" run_name="$name" trainer.enable_progress_bar=false 2>&1 \
            | tee -a "$OUT/spine_gpu.log" | grep -E "epoch [0-9]|test/(acc|f1)|Error|error" | head -20
        echo "$name wall_s=$SECONDS" | tee -a "$OUT/spine_gpu.log"
    done
fi
exit "$status"
