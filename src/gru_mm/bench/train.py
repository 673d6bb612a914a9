"""End-to-end training throughput: the real training step (data loader, model, optimizer, Lightning)
against the pattern most multimodal codebases use (MultiBench, MMSA), on the same data and model.

Ours: `gru-mm-train`'s datamodule (length bucketing) and LightningModule under a Lightning Trainer.
Baseline: random batches padded to the batch maximum, `pack_padded_sequence` + `nn.GRU` per modality,
one process for data, a plain PyTorch loop; encoders, fusion and head are the same modules.

Per configuration it reports samples/s, the share of step time spent waiting for data (fetching the
batch and moving it to the device), the padding ratio per modality (padded / real steps), GPU-busy /
wall (CUDA only, from torch.profiler over a window of steps) and peak memory.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

from gru_mm.config import register_resolvers
from gru_mm.paths import CONF_DIR

# name -> overrides of the default experiment
CONFIGS = {
    "default": [],
    "large": ["model.gru.hidden_size=256", "model.gru.bidirectional=true", "data.batch_size=64"],
}
WARMUP_STEPS = 3  # first steps (allocator, cuDNN plans, lazy inits) are not timed
# model.compile: the first shape compiles, the second recompiles with dynamic shapes, backward compiles too
COMPILE_WARMUP_STEPS = 8
PROFILE_STEPS = 10  # steps of the CUDA profiler window for GPU-busy / wall


class PackedGRU(nn.Module):
    """The baseline's GRU: `pack_padded_sequence` + `nn.GRU` + `pad_packed_sequence`, as MultiBench and
    MMSA run it. Lengths of 0 (an absent modality) are clamped to 1, since packing refuses them."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        **_ignored,
    ):
        super().__init__()
        self.rnn = nn.GRU(
            input_size,
            hidden_size,
            num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional = bidirectional

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.rnn(packed)
        steps, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return steps, h_n


class StepTimer(pl.Callback):
    """Data wait = from the end of one step to the start of the next (fetch + move to the device)."""

    def __init__(self, modalities: list[str], profile: bool, warmup: int = WARMUP_STEPS):
        self.modalities = modalities
        self.profile = profile
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        self.steps = self.samples = 0
        self.wait = self.total = 0.0
        self.padded = dict.fromkeys(self.modalities, 0)
        self.real = dict.fromkeys(self.modalities, 0)
        self._end: float | None = None
        self._start_all: float | None = None
        self._seen = 0
        self._prof, self._prof_t0 = None, 0.0
        self.gpu_busy_s = self.prof_wall_s = None
        self.h2d_copies: dict[str, int] = {}

    def batch_start(self, batch, device: torch.device) -> None:
        self._sync(device)
        now = time.perf_counter()
        self._seen += 1
        if self._seen == self.warmup + 1:
            self._start_all = now
            if self.profile and device.type == "cuda":
                self._prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA])
                self._prof.__enter__()
                self._prof_t0 = now
        if self._start_all is not None and self._end is not None:
            self.wait += now - self._end
        if self._start_all is not None:
            for m in self.modalities:
                seq = batch.inputs[m]
                self.padded[m] += seq.batch_size * seq.max_len
                self.real[m] += int(seq.lengths.sum())

    def batch_end(self, batch, device: torch.device) -> None:
        self._sync(device)
        self._end = time.perf_counter()
        if self._start_all is None:
            return
        self.steps += 1
        self.samples += len(batch)
        self.total = self._end - self._start_all
        if self._prof is not None and self.steps == PROFILE_STEPS:
            self._prof.__exit__(None, None, None)
            self.prof_wall_s = self._end - self._prof_t0
            self.gpu_busy_s, self.h2d_copies = gpu_work(self._prof.key_averages())
            self._prof = None
            # The profiled steps (CUPTI tracing slows the host) and the trace's processing (seconds,
            # which the next step's data wait would absorb) are not timed: the timed window starts now.
            self.steps = self.samples = 0
            self.wait = self.total = 0.0
            self._start_all = self._end = time.perf_counter()

    @staticmethod
    def _sync(device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_start(batch, pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batch_end(batch, pl_module.device)

    def record(self) -> dict:
        steps_s = self.total / max(1, self.steps)
        return {
            "steps": self.steps,
            "samples_per_s": round(self.samples / self.total, 1) if self.total else None,
            "ms_per_step": round(1000 * steps_s, 2),
            "data_wait_frac": round(self.wait / self.total, 4) if self.total else None,
            "padding_ratio": {m: round(self.padded[m] / max(1, self.real[m]), 3) for m in self.modalities},
            "gpu_busy_frac": round(self.gpu_busy_s / self.prof_wall_s, 4) if self.gpu_busy_s else None,
            # host-to-device copies per step over the profiled window (CUDA only): the batch's and the model's
            "h2d_per_step": {k: round(n / PROFILE_STEPS, 1) for k, n in self.h2d_copies.items()} or None,
        }


class CopyCounter(TorchDispatchMode):
    """Counts the tensor copies (aten._to_copy / copy_) that run inside it."""

    def __init__(self):
        super().__init__()
        self.copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten._to_copy, torch.ops.aten.copy_):
            self.copies += 1
        return func(*args, **(kwargs or {}))


def _first(samples, n: int) -> list:
    """The first n samples of a split (a list or any data set with len and indexing)."""
    return [samples[i] for i in range(min(n, len(samples)))]


def copies(fn) -> int:
    """The tensor copies (aten._to_copy, copy_) that `fn()` makes: a batch's host-to-device copies."""
    with CopyCounter() as counter:
        fn()
    return counter.copies


def batch_copies(module: pl.LightningModule, loader, samples, batch_size: int, device: str) -> int:
    """The copies that moving one training batch, as `loader` hands it over, to `device` through the
    module's transfer hook makes. Not to `module.device`: after `fit`, Lightning has moved the module back
    to the CPU, and a move to the CPU copies nothing."""
    batch = loader.collate_fn(_first(samples, batch_size))
    batch = batch.pin_memory() if loader.pin_memory else batch
    return copies(lambda: module.transfer_batch_to_device(batch, torch.device(device), 0))


def gpu_work(events) -> tuple[float, dict[str, int]]:
    """(seconds the GPU ran kernels and copies, {"pinned"/"pageable": host-to-device copies}) from
    torch.profiler's averages. As torch's own table does, device events only and no user annotations (an
    annotation such as `Optimizer.step#AdamW.step` spans the whole step on the GPU's timeline)."""
    busy_us, copies = 0.0, {"pinned": 0, "pageable": 0}
    for e in events:
        if e.device_type != torch.autograd.DeviceType.CUDA or getattr(e, "is_user_annotation", False):
            continue
        busy_us += e.self_device_time_total
        if e.key.startswith("Memcpy HtoD"):
            copies["pageable" if "Pageable" in e.key else "pinned"] += e.count
    return busy_us / 1e6, copies


def _compose(name: str, device: str, data_dir: Path | None, extra: list[str]):
    register_resolvers()  # and the config schemas that conf/'s defaults lists name
    overrides = [*CONFIGS[name], *extra, "logger=none"]
    if device == "cuda":
        overrides.append("trainer=gpu")
    if data_dir is not None:
        overrides.append(f"paths.data_dir={data_dir}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def _build(cfg):
    from gru_mm.models.build import build_datamodule, build_module

    pl.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    datamodule.validate()
    module = build_module(cfg, datamodule=datamodule, pretrained=False)
    return datamodule, module


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


def run_ours(cfg, device: str, max_steps: int) -> dict:
    datamodule, module = _build(cfg)
    compiled = bool(cfg.model.get("compile", False))
    warmup = COMPILE_WARMUP_STEPS if compiled else WARMUP_STEPS
    timer = StepTimer(list(datamodule.feature_shapes), profile=True, warmup=warmup)
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision=cfg.trainer.precision,
        max_epochs=-1,  # max_steps ends it (the large configuration's epoch is shorter than --steps)
        max_steps=max_steps + warmup,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        gradient_clip_val=cfg.trainer.gradient_clip_val,
        use_distributed_sampler=False,
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.fit(module, datamodule=datamodule)
    loader = trainer.train_dataloader
    settings = {
        "workers": loader.num_workers,
        "pinned": loader.pin_memory,
        "packed": bool(getattr(loader.collate_fn, "pack", False)),  # one buffer, one copy per batch
        "compile": compiled,
    }
    if device == "cuda":
        train = datamodule.source.split("train")
        settings["batch_copies"] = batch_copies(module, loader, train, datamodule.batch_size, device)
    return timer.record() | {"peak_mem_mb": round(_peak_memory_mb(device), 1)} | settings


def run_baseline(cfg, device: str, max_steps: int) -> dict:
    """Same encoders, fusion and head; nn.GRU over packed sequences; random batches; a plain loop."""
    from omegaconf import open_dict

    with open_dict(cfg):
        cfg.model.gru._target_ = f"{__name__}.PackedGRU"
    datamodule, module = _build(cfg)
    dev = torch.device(device)
    net = module.net.to(dev).train()  # the MultimodalGRU, without Lightning around it
    loader = torch.utils.data.DataLoader(
        datamodule.source.split("train"),
        batch_size=datamodule.batch_size,
        shuffle=True,
        collate_fn=datamodule.collate,
        num_workers=0,
        generator=torch.Generator().manual_seed(int(cfg.seed)),
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=float(cfg.optimizer.lr))
    loss_fn = nn.CrossEntropyLoss()
    timer = StepTimer(list(datamodule.feature_shapes), profile=True)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    steps = 0
    while steps < max_steps + WARMUP_STEPS:
        for batch in loader:
            batch = batch.to(dev)
            timer.batch_start(batch, dev)
            loss = loss_fn(net(batch.inputs), batch.target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), float(cfg.trainer.gradient_clip_val or 1e9))
            optimizer.step()
            timer.batch_end(batch, dev)
            steps += 1
            if steps >= max_steps + WARMUP_STEPS:
                break
    settings = {"workers": 0, "pinned": False, "packed": False, "compile": False}
    if device == "cuda":
        batch = datamodule.collate(_first(datamodule.source.split("train"), datamodule.batch_size))
        settings["batch_copies"] = copies(lambda: batch.to(dev))
    return timer.record() | {"peak_mem_mb": round(_peak_memory_mb(device), 1)} | settings


def run_case(name: str, impl: str, device: str, data_dir: Path | None, extra: list[str], steps: int) -> dict:
    started = time.perf_counter()
    if "fork" in multiprocessing.get_all_start_methods():
        # this process was spawned, so its DataLoader workers would be too (re-importing everything);
        # forked, as under gru-mm-train
        multiprocessing.set_start_method("fork", force=True)
    # the table is the output: Lightning's notes (seed, devices, tips) and warnings would bury it
    logging.disable(logging.INFO)
    warnings.filterwarnings("ignore")
    cfg = _compose(name, device, data_dir, extra)
    fn = run_ours if impl == "gru_mm" else run_baseline
    rec = fn(cfg, device, steps)
    return {
        "config": name,
        "impl": impl,
        "device": device,
        **rec,
        "case_s": round(time.perf_counter() - started),
    }


def _label(variant: list[str]) -> str:
    """A short name for a variant's overrides (data.num_workers=4 model.compile=true -> w4+compile)."""
    short = {"data.num_workers": "w", "model.compile": "compile"}
    parts = []
    for o in variant:
        key, _, value = o.partition("=")
        if short.get(key) == "compile":
            parts.append("compile" if value.lower() == "true" else "eager")
        else:
            parts.append(f"{short[key]}{value}" if key in short else o)
    return "+".join(parts) or "defaults"


def run(
    device: str,
    quick: bool,
    out: Path | None,
    data_dir: Path | None = None,
    configs: list[str] | None = None,
    extra: list[str] | None = None,
    steps: int | None = None,
    variants: list[list[str]] | None = None,
    budget_s: float | None = None,
) -> list[dict]:
    """Per configuration the baseline, then ours once per variant (extra overrides, e.g. workers or
    compile; default: the config as it is). Each case in a fresh process, so that peak memory is its own
    and no state leaks between them. With `budget_s`, no new case starts once that many seconds passed."""
    import json
    from concurrent.futures import ProcessPoolExecutor

    steps = steps or (20 if quick else 90)
    variants = variants or [[]]
    started = time.perf_counter()
    names = configs or list(CONFIGS)
    # the first variant of every configuration (with its baseline) before the other variants, so that a
    # budget spent early leaves the least important cases out
    cases = [c for n in names for c in ((n, "baseline", []), (n, "gru_mm", variants[0]))]
    cases += [(n, "gru_mm", v) for v in variants[1:] for n in names]
    records: list[dict] = []
    print(HEADER)
    ctx = multiprocessing.get_context("spawn")
    for name, impl, variant in cases:
        label = _label(variant) if impl == "gru_mm" else "-"
        if budget_s is not None and time.perf_counter() - started > budget_s:
            print(f"budget of {budget_s:.0f} s spent: {name} {impl} {label} not run", flush=True)
            continue
        # not a multiprocessing.Pool: its daemonic processes cannot start DataLoader workers
        with ProcessPoolExecutor(1, mp_context=ctx) as pool:
            case = (name, impl, device, data_dir, [*(extra or []), *variant], steps)
            try:
                rec = pool.submit(run_case, *case).result()
            except Exception as err:  # one failing case (e.g. compile on a new machine) leaves the others
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
                print(f"{name} {impl} {label}: failed: {type(err).__name__}: {first}", flush=True)
                records.append({"config": name, "impl": impl, "variant": label, "error": first})
                continue
        rec["variant"] = label
        records.append(rec)
        print(_row(rec), flush=True)
    ok = [r for r in records if "error" not in r]
    for name in names:
        base = next((r for r in ok if r["config"] == name and r["impl"] == "baseline"), None)
        for ours in (r for r in ok if r["config"] == name and r["impl"] == "gru_mm"):
            if base and base["samples_per_s"] and ours["samples_per_s"]:
                ours["speedup_over_baseline"] = round(ours["samples_per_s"] / base["samples_per_s"], 2)
                print(
                    f"{name} {ours['variant']}: gru_mm / baseline samples/s = "
                    f"{ours['speedup_over_baseline']:.2f}x"
                )
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(records, indent=1) + "\n")
    return records


HEADER = (
    f"{'config':<8} {'impl':<9} {'variant':<12} {'samples/s':>9} {'ms/step':>8} {'data wait':>9} "
    f"{'padding ratio':<24} {'gpu busy':>8} {'h2d/step':>14} {'peak MB':>8} {'case s':>6}"
)


def _h2d(r: dict) -> str:
    """Host-to-device copies per step, pinned + pageable (the batch's own in brackets)."""
    h = r.get("h2d_per_step")
    batch = f" ({r['batch_copies']})" if r.get("batch_copies") is not None else ""
    return "-" if not h else f"{h['pinned']:g}p+{h['pageable']:g}{batch}"


def _row(r: dict) -> str:
    pad = " ".join(f"{m}={v:.2f}" for m, v in r["padding_ratio"].items())
    busy = "-" if r["gpu_busy_frac"] is None else f"{100 * r['gpu_busy_frac']:.1f}%"
    return (
        f"{r['config']:<8} {r['impl']:<9} {r['variant']:<12} {r['samples_per_s']:>9.1f} "
        f"{r['ms_per_step']:>8.2f} {100 * r['data_wait_frac']:>8.1f}% {pad:<24} {busy:>8} {_h2d(r):>14} "
        f"{r['peak_mem_mb']:>8.0f} {r['case_s']:>6}"
    )


def markdown_table(records: list[dict]) -> str:
    """A markdown table of the records (for docs/benchmarks.md)."""
    lines = [
        "| config | impl | variant | samples/s | ms/step | data wait | padding ratio | GPU busy | "
        "H2D copies/step: pinned+pageable (batch) | peak MB | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['impl']} | {r['variant']} | failed: {r['error'][:80]} |")
            continue
        pad = ", ".join(f"{m} {v:.2f}" for m, v in r["padding_ratio"].items())
        busy = "-" if r["gpu_busy_frac"] is None else f"{100 * r['gpu_busy_frac']:.1f} %"
        ratio = f"{r['speedup_over_baseline']:.2f}x" if "speedup_over_baseline" in r else "-"
        lines.append(
            f"| {r['config']} | {r['impl']} | {r.get('variant', '-')} | {r['samples_per_s']:.1f} | "
            f"{r['ms_per_step']:.2f} | {100 * r['data_wait_frac']:.1f} % | {pad} | {busy} | {_h2d(r)} | "
            f"{r['peak_mem_mb']:.0f} | {ratio} |"
        )
    return "\n".join(lines)
