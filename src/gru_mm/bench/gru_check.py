"""Randomised exactness check of gru_mm.nn.GRU on one device, without pytest or hypothesis.

`python -m gru_mm.bench.gru_check --device cuda` compares, on random batches (unsorted lengths
including 0, 1 and T; 1-3 layers; uni- and bidirectional; with and without h0):
- cell "torch", every path: outputs, h_n and all gradients against nn.GRU over
  pack_padded_sequence on the same device (TF32 off), to 1e-5 relative on the CPU and 5e-5 on
  CUDA (see RTOL);
- cell "torch" with graphs=True ("torch:graphs"): the checked call replays a CUDA graph captured
  for its (B, bucket) shape after one eager call with other lengths (the reversed batch);
- cell "cho2014": outputs, h_n, gates and gradients against the same layer in float64 on the CPU
  (which the test suite checks against a NumPy transcription of the equations).
Exit status 0 when everything matches. Meant for GPU machines where the test tools are missing.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gru_mm.nn.gru import GRU, PATHS

# Relative tolerance per device. CPU: 1e-5, the bound. CUDA: 5e-5, because cuDNN runs a
# padded and a packed call with different algorithms and summation orders: the H200 run
# (docs/gpu-2026-11-26-h200/gru_check_cuda.txt) measured 1.04e-5 to 1.33e-5 between them on
# multi-layer and bidirectional cases with TF32 off. That is float32 rounding accumulated over the
# layers and the backward; a logic error (a wrong step, state or row) shows up as O(1).
RTOL = {"cpu": 1e-5, "cuda": 5e-5}


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    if b.numel() == 0:
        return 0.0
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def _case(gen: torch.Generator) -> dict:
    def r(lo: int, hi: int) -> int:
        return int(torch.randint(lo, hi + 1, (1,), generator=gen))

    T, B = r(1, 40), r(1, 9)
    lengths = [r(0, T) for _ in range(B)]
    if r(0, 1):
        lengths[0], lengths[-1] = T, 1
    return {
        "T": T,
        "lengths": lengths,
        "F": r(1, 16),
        "H": r(1, 24),
        "L": r(1, 3),
        "D": r(1, 2),
        "h0": bool(r(0, 1)),
    }


def check_torch_cell(c: dict, path: str, device: str, seed: int) -> float:
    torch.manual_seed(seed)
    T, F, H, L, D = c["T"], c["F"], c["H"], c["L"], c["D"]
    lengths = torch.tensor(c["lengths"])
    B = len(lengths)
    graphs = path == "graphs"
    ours = GRU(F, H, L, bidirectional=D == 2, path="padded_gather" if graphs else path, graphs=graphs)
    ours = ours.to(device)
    ref = nn.GRU(F, H, L, batch_first=True, bidirectional=D == 2).to(device)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, F, device=device)
    h0 = torch.randn(L * D, B, H, device=device) if c["h0"] else None
    go, gh = torch.randn(B, T, D * H, device=device), torch.randn(L * D, B, H, device=device)
    xa = x.clone().requires_grad_()
    ha = None if h0 is None else h0.clone().requires_grad_()
    if graphs:  # one eager call of the same shape, other lengths; the checked call then replays
        o, h = ours(torch.randn_like(xa).requires_grad_(), lengths.flip(0), None if ha is None else ha * 1)
        (o.sum() + h.sum()).backward()
        ours.zero_grad()
        ha = None if h0 is None else h0.clone().requires_grad_()
    replays = ours._graph_cache.replays
    out, h_n = ours(xa, lengths, ha)
    if graphs and device == "cuda" and int(lengths.max()) > 0 and ours._graph_cache.replays == replays:
        raise RuntimeError("graphs=True: the second call of a shape did not replay a graph")
    ((out * go).sum() + (h_n * gh).sum()).backward()
    keep = (lengths > 0).to(device)
    mask = (torch.arange(T)[None] < lengths[:, None]).to(device)
    errs = [float(out.detach()[~mask].abs().max()) if (~mask).any() else 0.0]
    h0f = torch.zeros(L * D, B, H, device=device) if h0 is None else h0
    errs.append(_err(h_n[:, ~keep], h0f[:, ~keep]))
    if not keep.any():
        return max(errs)
    xr = x[keep].clone().requires_grad_()
    hr = None if h0 is None else h0[:, keep].clone().requires_grad_()
    o, h = ref(pack_padded_sequence(xr, lengths[keep.cpu()], batch_first=True, enforce_sorted=False), hr)
    o = pad_packed_sequence(o, batch_first=True, total_length=T)[0]
    ((o * go[keep]).sum() + (h * gh[:, keep]).sum()).backward()
    errs += [_err(out[keep], o), _err(h_n[:, keep], h), _err(xa.grad[keep], xr.grad)]
    if hr is not None:
        errs.append(_err(ha.grad[:, keep], hr.grad))
    refp = dict(ref.named_parameters())
    errs += [_err(p.grad, refp[n].grad) for n, p in ours.named_parameters()]
    return max(errs)


def check_cho2014(c: dict, device: str, seed: int, path: str = "auto") -> float:
    torch.manual_seed(seed)
    T, F, H, L, D = c["T"], c["F"], c["H"], c["L"], c["D"]
    lengths = torch.tensor(c["lengths"])
    B = len(lengths)
    ours = GRU(F, H, L, bidirectional=D == 2, cell="cho2014", path=path).to(device)
    ref = GRU(F, H, L, bidirectional=D == 2, cell="cho2014").double()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(B, T, F)
    h0 = torch.randn(L * D, B, H)
    go, gh = torch.randn(B, T, D * H), torch.randn(L * D, B, H)
    results = []
    for model, dev, dt in ((ours, device, torch.float32), (ref, "cpu", torch.float64)):
        xi = x.to(dev, dt).requires_grad_()
        hi = h0.to(dev, dt).requires_grad_()
        out, h_n, gates = model(xi, lengths, hi, return_gates=True)
        loss = (out * go.to(dev, dt)).sum() + (h_n * gh.to(dev, dt)).sum()
        grads = torch.autograd.grad(loss, [xi, hi, *model.parameters()], allow_unused=True)
        results.append([out, h_n, gates["z"], gates["r"], *grads])
    return max(_err(a, b) for a, b in zip(*results, strict=True) if a is not None and b is not None)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gru_mm.bench.gru_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gru_check: --device cuda given but torch sees no CUDA device", file=sys.stderr)
        return 2
    # exactness is about the algorithm: compare in true float32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    rtol = RTOL.get(torch.device(args.device).type, RTOL["cuda"])
    gen = torch.Generator().manual_seed(args.seed)
    worst: dict[str, float] = {}
    failures = 0
    t0 = time.perf_counter()
    for i in range(args.cases):
        c = _case(gen)
        paths = (*PATHS, "graphs")
        checks = {f"torch:{path}": (check_torch_cell, (c, path, args.device, i)) for path in paths}
        checks["cho2014"] = (check_cho2014, (c, args.device, i))
        checks["cho2014:persistent"] = (check_cho2014, (c, args.device, i, "persistent"))
        for name, (fn, fargs) in checks.items():
            try:
                e = fn(*fargs)
            except Exception as exc:  # report and go on: one report shows every broken path
                print(f"FAIL {name} case {i} {c}: {type(exc).__name__}: {exc}")
                failures += 1
                continue
            worst[name] = max(worst.get(name, 0.0), e)
            if not e <= rtol:
                print(f"FAIL {name} case {i} {c}: relative error {e:.3g}")
                failures += 1
    for name, e in worst.items():
        print(f"{name:22} worst relative error {e:.2e}")
    print(
        f"gru_check on {args.device}: {args.cases} cases, {failures} failures (relative tolerance "
        f"{rtol:g}), {time.perf_counter() - t0:.1f}s"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
