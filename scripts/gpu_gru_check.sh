#!/usr/bin/env bash
# GPU checks for gru_mm.nn.GRU (issues 3 and 14): about 8-9 minutes with the default time boxes
# (GRID_SECONDS=150 for step 3, PERSISTENT_SECONDS=120 for step 6), so one device call with
# timeout_s=600 holds it; every step also has its own timeout. The H100 run of 2026-11-27 (before
# CUDA graphs) took 13 s for step 1, 18 s for step 2; step 3 then ran 9 implementations and its
# box covered 35 of 40 grid points; it now times the 5 that decide issue 14's item 1.
#
#   bash scripts/gpu_gru_check.sh            # from the repository root; results go to $OUT (or ./gpu_out)
#   GRID_IMPLS=gru_mm,torch_padded bash scripts/gpu_gru_check.sh   # other implementations in step 3
#
# Needs python with a CUDA build of torch (and numpy); the package itself need not be installed
# (PYTHONPATH=src). pytest and hypothesis are used when present; the standalone check runs always.
#  1. exactness on CUDA, standalone: every path of cell "torch" (and graphs=True: a replay after one
#     eager call with other lengths) vs nn.GRU over pack_padded_sequence, cell "cho2014" vs float64
#     on the CPU, outputs + h_n + all gradients, to 5e-5 relative on CUDA (gru_check.RTOL)  (~15-40 s)
#  2. the tests marked gpu in tests/nn (their names contain "cuda"), among them the CUDA-graph tests
#     (replay == eager bit for bit, graph reuse across lengths, capture counts), when pytest +
#     hypothesis are importable  (~30-90 s)
#  3. gru-mm-bench gru --device cuda over the 40-point grid, time-boxed to 150 s of cases: eager
#     gru_mm, graphed gru_mm, eager padded and packed nn.GRU, graphed nn.GRU; prints one line per
#     case, then the table "CUDA graphs ..." and the lines "graphs: ..." (issue 14 item 1's target:
#     graphed gru_mm >= 1.5x the faster EAGER nn.GRU at every point)  (~3-4 min)
#  4. CUDA graphs with new lengths every call (gru_mm.bench.gru_graphs): per case, ms per fwd+bwd
#     (pipelined), graphs captured/replays, replay vs eager, and eager nn.GRU's GPU-busy time, which
#     bounds what any graph of the same kernels can gain  (~30-60 s)
#  5. host-side overhead of the eager CUDA paths on this machine's CPU (gru_mm.bench.gru_host, ~15 s)
#  6. the persistent kernels (path="persistent", both cells; never timed on a GPU before): their
#     self-check with the grid barrier, then the grid at hidden 128-512 against eager and graphed
#     nn.GRU, cho2014's fused kernel and step loop; the lines "persistent: ..." state issue 14 item
#     2's targets (torch cell >= 2x graphed nn.GRU at hidden >= 256; cho2014 <= 1.5x the faster
#     eager nn.GRU). GRU_MM_PERSISTENT_BH=32 halves the programs (worth a second run if time allows).
#     (~2 min, time-boxed)
# Every step is time-limited and the script goes on after a failure; the exit status is the number
# of failed steps. Files in $OUT: gpu_info.txt, gru_check_cuda.txt, pytest_cuda.txt,
# bench_gru_cuda.txt, bench_gru_cuda.json, bench_gru_cuda.md (the table for docs/benchmarks.md),
# gru_graphs_cuda.txt, gru_host.txt, persistent_check.txt, bench_persistent_cuda.{txt,json,md}.
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
timeout 75 "$PY" -m gru_mm.bench.gru_check --device cuda --cases 30 2>&1 | tee "$OUT/gru_check_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))

step "2. the GRU tests marked gpu (CUDA graphs included)"
if "$PY" -c "import pytest, hypothesis" 2>/dev/null; then
    # --noconftest: the project's conftest may import tools the GPU machine lacks (hydra, mlflow);
    # -m gpu selects by marker: every test that needs CUDA carries @pytest.mark.gpu (and "cuda" in its name)
    timeout 120 "$PY" -m pytest -q -p no:cacheprovider --noconftest -o addopts="" -m gpu -rfE \
        tests/nn/test_gru_exact.py tests/nn/test_gru_api.py tests/nn/test_cho2014.py \
        tests/nn/test_cho2014_triton.py tests/nn/test_gru_host.py tests/nn/test_gru_gates.py \
        tests/nn/test_gru_graphs.py tests/nn/test_gru_persistent.py 2>&1 | tail -n 60 | tee "$OUT/pytest_cuda.txt"
    [ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))
else
    echo "pytest or hypothesis missing: skipped (steps 1 and 4 cover the same checks)" | tee "$OUT/pytest_cuda.txt"
fi

step "3. benchmark on CUDA: eager and graphed"
GRID_IMPLS="${GRID_IMPLS:-gru_mm,gru_mm:graphs,torch_padded,torch_packed,torch_padded:graphs}"
timeout 210 "$PY" -m gru_mm.bench.cli gru --device cuda --impls "$GRID_IMPLS" --max-seconds "${GRID_SECONDS:-150}" \
    --out "$OUT/bench_gru_cuda.json" 2>&1 | tee "$OUT/bench_gru_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))
[ -s "$OUT/bench_gru_cuda.json" ] && "$PY" -m gru_mm.bench.gru "$OUT/bench_gru_cuda.json" > "$OUT/bench_gru_cuda.md"

step "4. CUDA graphs with new lengths every call"
timeout 90 "$PY" -m gru_mm.bench.gru_graphs --device cuda --calls 40 2>&1 | tee "$OUT/gru_graphs_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))

step "5. host-side overhead of the eager path (CPU, one thread)"
timeout 45 "$PY" -m gru_mm.bench.gru_host --reps 9 2>&1 | tee "$OUT/gru_host.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))

step "6. persistent kernels: self-check with the barrier, then timed"
timeout 60 "$PY" -c "
import torch
from gru_mm.nn import gru_persistent as gp
for sync in (True, False):
    print('grid_sync', sync, 'self-check passed:', gp.self_check(torch.device('cuda'), grid_sync=sync))
" 2>&1 | tee "$OUT/persistent_check.txt"
grep -q "grid_sync True self-check passed: True" "$OUT/persistent_check.txt" || fails=$((fails + 1))
timeout 170 "$PY" -m gru_mm.bench.cli gru --device cuda --hidden 128,256,512 --max-seconds "${PERSISTENT_SECONDS:-120}" \
    --impls torch_padded,torch_packed,torch_padded:graphs,gru_mm:persistent,cho2014:persistent,cho2014 \
    --out "$OUT/bench_persistent_cuda.json" 2>&1 | tee "$OUT/bench_persistent_cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fails=$((fails + 1))
[ -s "$OUT/bench_persistent_cuda.json" ] && "$PY" -m gru_mm.bench.gru "$OUT/bench_persistent_cuda.json" > "$OUT/bench_persistent_cuda.md"

step "done: $fails failed step(s); results in $OUT"
exit "$fails"
