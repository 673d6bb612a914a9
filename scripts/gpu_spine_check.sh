#!/usr/bin/env bash
# GPU checks of the training pipeline: the default experiment with trainer=gpu in float32 and in
# bf16-mixed, timed, on a machine with CUDA torch + Lightning but without hydra/omegaconf (carried
# as wheels in .whl/). Results: $OUT/spine_gpu.log.
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
