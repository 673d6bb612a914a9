#!/usr/bin/env bash
# GPU checks for gru_mm.nn.GRU (issue 3): about 6 minutes, at most 9.75 (every step has its own
# timeout), so one device call with timeout_s=600 holds it. The first run (H200, 2026-11-26) took
# 13 s for step 1, 18 s for step 2, and the benchmark's 180 s box covered 35 of 40 grid points.
#
#   bash scripts/gpu_gru_check.sh            # from the repository root; results go to $OUT (or ./gpu_out)
#
# Needs python with a CUDA build of torch (and numpy); the package itself need not be installed
# (PYTHONPATH=src). pytest and hypothesis are used when present; the standalone check runs always.
#  1. exactness on CUDA, standalone: every path of cell "torch" vs nn.GRU over pack_padded_sequence,
#     cell "cho2014" vs float64 on the CPU, outputs + h_n + all gradients, to 5e-5 relative on CUDA
#     (cuDNN's padded and packed kernels sum in different orders; see gru_check.RTOL)  (~15-40 s)
#  2. the tests marked gpu in tests/nn, when pytest + hypothesis are importable (~20-60 s)
#  3. gru-mm-bench gru --device cuda: the full grid, time-boxed to 270 s of cases (~5 min)
#  4. host-side overhead of the CUDA paths on this machine's CPU (gru_mm.bench.gru_host, ~15 s)
# Every step is time-limited and the script goes on after a failure; the exit status is the number
# of failed steps. Files in $OUT: gpu_info.txt, gru_check_cuda.txt, pytest_cuda.txt,
# bench_gru_cuda.txt, bench_gru_cuda.json, bench_gru_cuda.md (the table for docs/benchmarks.md),
# gru_host.txt.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
fails=0
step() { echo "== $(date +%T) $*"; }

step "device"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
    "$PY" -c "import triton; print('triton', triton.__version__)" 2>&1
} | tee "$OUT/gpu_info.txt"

step "1. standalone exactness check on CUDA"
timeout 90 "$PY" -m gru_mm.bench.gru_check --device cuda --cases 30 2>&1 | tee "$OUT/gru_check_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))

step "2. the GRU tests marked gpu"
if "$PY" -c "import pytest, hypothesis" 2>/dev/null; then
    # --noconftest: the project's conftest may import tools the GPU machine lacks (hydra, mlflow);
    # -m gpu selects by marker, not by name: every test that needs CUDA carries @pytest.mark.gpu
    timeout 90 "$PY" -m pytest -q -p no:cacheprovider --noconftest -o addopts="" -m gpu \
        tests/nn/test_gru_exact.py tests/nn/test_gru_api.py tests/nn/test_cho2014.py \
        tests/nn/test_cho2014_triton.py tests/nn/test_gru_host.py tests/nn/test_gru_gates.py 2>&1 | tail -n 40 | tee "$OUT/pytest_cuda.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))
else
    echo "pytest or hypothesis missing: skipped (step 1 covers the same checks)" | tee "$OUT/pytest_cuda.txt"
fi

step "3. benchmark on CUDA"
timeout 360 "$PY" -m gru_mm.bench.cli gru --device cuda --max-seconds 270 --out "$OUT/bench_gru_cuda.json" 2>&1 \
    | tee "$OUT/bench_gru_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))
[ -s "$OUT/bench_gru_cuda.json" ] && "$PY" -m gru_mm.bench.gru "$OUT/bench_gru_cuda.json" > "$OUT/bench_gru_cuda.md"

step "4. host-side overhead (CPU, one thread)"
timeout 45 "$PY" -m gru_mm.bench.gru_host --reps 9 2>&1 | tee "$OUT/gru_host.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))

step "done: $fails failed step(s); results in $OUT"
exit "$fails"
