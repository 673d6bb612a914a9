"""How far float32 CUDA results of every path sit from a float64 truth, next to packed nn.GRU's own
float32 error: the data behind tests/nn/test_gru_exact.py's CUDA error budget (issue 14).

    python scripts/gpu_exact_budget.py [--cases 120]     # from the repository root, on a CUDA machine
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "nn"))
import test_gru_exact as t  # noqa: E402  (the test's own case runner: one definition of the check)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=120)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    rng = random.Random(0)
    rows = {p: [] for p in t.PATHS}
    for i in range(args.cases):
        T, B = rng.randint(1, 12), rng.randint(1, 7)
        case = {
            "T": T,
            "lengths": [rng.randint(0, T) for _ in range(B)],
            "F": rng.randint(1, 6),
            "H": rng.randint(1, 8),
            "L": rng.randint(1, 3),
            "D": rng.choice([1, 2]),
            "with_h0": rng.random() < 0.5,
            "seed": i,
        }
        if not any(case["lengths"]):
            continue
        truth = t.run_packed(case, "cpu", torch.float64)
        ref32 = t.run_packed(case, args.device, torch.float32)
        for path in t.PATHS:
            ours64 = t.run_ours(case, path, args.device, torch.float64)
            ours32 = t.run_ours(case, path, args.device, torch.float32)
            e64 = max(t.rel_err(ours64[k], truth[k]) for k in truth)
            worst = max(truth, key=lambda k: t.rel_err(ours32[k], truth[k]))
            e32, r32 = t.rel_err(ours32[worst], truth[worst]), t.rel_err(ref32[worst], truth[worst])
            rows[path].append((e64, e32, r32, e32 / max(r32, 1e-12), worst, case))
    print(
        f"{'path':14} {'cases':>5} {'f64 max':>9} {'f32 p50':>9} {'f32 p99':>9} {'f32 max':>9} "
        f"{'ref32 max':>9} {'ratio p50':>9} {'ratio max':>9}  worst case"
    )
    for path, r in rows.items():
        e64 = max(x[0] for x in r)
        e32 = sorted(x[1] for x in r)
        ratio = sorted(x[3] for x in r)
        worst = max(r, key=lambda x: x[1])
        print(
            f"{path:14} {len(r):5d} {e64:9.2g} {e32[len(e32) // 2]:9.2g} {e32[int(len(e32) * 0.99)]:9.2g} "
            f"{e32[-1]:9.2g} {max(x[2] for x in r):9.2g} {ratio[len(ratio) // 2]:9.3g} {ratio[-1]:9.3g}  "
            f"{worst[4]} ref {worst[2]:.2g} {worst[5]}"
        )


if __name__ == "__main__":
    main()
