#!/usr/bin/env bash
# GPU checks of the training pipeline: the default experiment with trainer=gpu in float32 and in
# bf16-mixed, timed, then `gru-mm-bench train --device cuda`, on a machine with CUDA torch +
# Lightning but without hydra/omegaconf (carried as wheels in .whl/).
# Results: $OUT/spine_gpu.log, $OUT/bench_train_cuda.{txt,json}.
#
#   bash scripts/gpu_spine_check.sh     # from the repository root
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
root=$(mktemp -d)
for precision in 32-true bf16-mixed; do
    name=$([ "$precision" = 32-true ] && echo fp32 || echo bf16)
    echo "== $(date +%T) default experiment, trainer=gpu, precision=$precision"
    SECONDS=0
    timeout 200 "$PY" -m gru_mm.train trainer=gpu trainer.precision="$precision" logger=csv \
        paths.root="$root" run_name="$name" trainer.enable_progress_bar=false 2>&1 | tee -a "$OUT/spine_gpu.log" \
        | grep -E "epoch [0-9]|test/(acc|f1)|Error|error" | head -20
    echo "$name wall_s=$SECONDS" | tee -a "$OUT/spine_gpu.log"
done
# End-to-end throughput (issue 14): the real training step vs random batches + packed nn.GRU, on the GPU.
echo "== $(date +%T) gru-mm-bench train --device cuda"
timeout 240 "$PY" -m gru_mm.bench.cli train --device cuda --quick --data-dir "$root/data" \
    --out "$OUT/bench_train_cuda.json" 2>&1 | grep -vE "Warning|warn" | tee "$OUT/bench_train_cuda.txt"
