"""`gru-mm-bench`: benchmarks of this project's building blocks."""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path


def _machine(device: str) -> str:
    import torch

    if device == "cuda":
        return (
            f"{torch.cuda.get_device_name()} (torch {torch.__version__}, "
            f"cuDNN {torch.backends.cudnn.version()})"
        )
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gru-mm-bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    gru = sub.add_parser(
        "gru", help="forward+backward time of GRU implementations on variable-length batches"
    )
    gru.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    gru.add_argument("--quick", action="store_true", help="a small grid (under a minute on 2 CPU cores)")
    gru.add_argument("--out", type=Path, help="write the records as a JSON list to this file")
    gru.add_argument("--reps", type=int, help="timed rounds per case (default 3 on CPU, 5 on CUDA)")
    gru.add_argument("--max-seconds", type=float, help="start no new case after this many seconds")
    gru.add_argument(
        "--impls",
        help="comma-separated implementations to time (default: all the device runs), e.g. "
        "gru_mm,gru_mm:graphs,torch_padded,torch_packed,torch_padded:graphs (':graphs': CUDA only)",
    )
    gru.add_argument("--hidden", help="comma-separated hidden sizes: only these grid points (e.g. 256,512)")
    gru.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice; 1 with --quick on the CPU, where OpenMP "
        "threads contending with other jobs on a small machine made runs 5-10x slower)",
    )
    decode = sub.add_parser(
        "decode",
        help="first-run manifest decoding: ranks started together (shared out vs each rank all), "
        "and one process with 1 vs N decoding threads",
    )
    decode.add_argument("--ranks", type=int, default=2, help="processes started together")
    decode.add_argument("--rows", type=int, default=200, help="audio files in the generated manifest")
    decode.add_argument("--seconds", type=float, default=3.0, help="length of each audio file")
    decode.add_argument("--rounds", type=int, default=2, help="runs of each mode, alternated")
    decode.add_argument(
        "--threads", type=int, default=2, help="decoding threads compared with 1 in one process"
    )
    decode.add_argument("--out", type=Path, help="write the records as a JSON list to this file")
    train = sub.add_parser(
        "train",
        help="end-to-end training throughput (data loader, model, optimizer, Lightning) of the default "
        "experiment and a larger model, against random batches + packed nn.GRU (the MultiBench/MMSA pattern)",
    )
    train.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    train.add_argument("--quick", action="store_true", help="20 timed steps per case instead of 90")
    train.add_argument("--steps", type=int, help="timed training steps per case (after 3 untimed ones)")
    train.add_argument(
        "overrides", nargs="*", help="config overrides for every case, e.g. data.source.n_train=500"
    )
    train.add_argument("--configs", nargs="+", choices=("default", "large"), help="default: both")
    train.add_argument(
        "--data-dir", type=Path, help="where the built-in data set is cached (default: paths.data_dir)"
    )
    train.add_argument("--out", type=Path, help="write the records as a JSON list to this file")
    train.add_argument(
        "--variants",
        nargs="+",
        metavar="OVERRIDES",
        help="run ours once per variant, each a space-separated list of overrides in one argument, e.g. "
        "'data.num_workers=0' 'data.num_workers=4 model.compile=true' (default: the config as it is)",
    )
    train.add_argument(
        "--budget", type=float, metavar="SECONDS", help="start no new case after this many seconds"
    )
    data = sub.add_parser(
        "data",
        help="data.storage=memory vs store on generated audio + frames manifests: build time, random-order "
        "reads through the DataLoader, peak RSS (each case in its own process)",
    )
    data.add_argument("--quick", action="store_true", help="one manifest of 60 samples (for tests)")
    data.add_argument("--sizes", type=int, nargs="+", help="samples per manifest (default: 1000 10000)")
    data.add_argument("--storages", nargs="+", choices=("memory", "store"), default=["memory", "store"])
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    data.add_argument("--threads", type=int, default=1, help="torch threads of the reading process")
    data.add_argument("--passes", type=int, default=3, help="epochs read; the best one counts")
    data.add_argument(
        "--data-dir",
        type=Path,
        help="where the manifests are generated and kept (default: a temporary folder)",
    )
    data.add_argument("--out", type=Path, help="write the records as a JSON list to this file")
    args = parser.parse_args(argv)
    if args.bench == "data":
        from gru_mm.bench.data import run as run_data

        if (args.sizes and min(args.sizes) < 10) or args.workers < 0 or min(args.threads, args.passes) < 1:
            print(
                "gru-mm-bench: --sizes must be >= 10, --workers >= 0, --threads and --passes >= 1",
                file=sys.stderr,
            )
            return 2
        print(f"gru-mm-bench data: {_machine('cpu')}")
        sizes = tuple(args.sizes) if args.sizes else None
        run_data(
            args.quick,
            args.out,
            sizes,
            tuple(args.storages),
            args.workers,
            args.data_dir,
            threads=args.threads,
            passes=args.passes,
        )
        return 0
    if args.bench == "train":
        import torch

        from gru_mm.bench.train import run as run_train

        if args.device == "cuda" and not torch.cuda.is_available():
            print("gru-mm-bench: --device cuda given but torch sees no CUDA device", file=sys.stderr)
            return 2
        print(f"gru-mm-bench train on {args.device}: {_machine(args.device)}")
        variants = [v.split() for v in args.variants] if args.variants else None
        run_train(
            args.device,
            args.quick,
            args.out,
            args.data_dir,
            args.configs,
            args.overrides,
            args.steps,
            variants=variants,
            budget_s=args.budget,
        )
        return 0
    if args.bench == "decode":
        from gru_mm.bench.decode import run

        if min(args.ranks, args.rows, args.rounds, args.threads) < 1 or args.seconds <= 0:
            print(
                "gru-mm-bench: --ranks, --rows, --rounds, --threads and --seconds must be positive",
                file=sys.stderr,
            )
            return 2
        print(f"gru-mm-bench decode: {_machine('cpu')}")
        run(args.ranks, args.rows, args.seconds, args.rounds, args.out, args.threads)
        return 0

    import torch

    from gru_mm.bench.gru import run_grid

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gru-mm-bench: --device cuda given but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.reps is not None and args.reps < 1:
        print("gru-mm-bench: --reps must be >= 1", file=sys.stderr)
        return 2
    impls = None
    if args.impls:
        from gru_mm.bench.gru import CUDA_EXTRA, GRAPH_IMPLS, IMPLS, PERSISTENT_IMPLS

        impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
        known = IMPLS + CUDA_EXTRA + GRAPH_IMPLS + PERSISTENT_IMPLS
        unknown = [i for i in impls if i not in known]
        if unknown or not impls:
            names = ", ".join(known)
            print(f"gru-mm-bench: --impls takes names from {names}; got {args.impls!r}", file=sys.stderr)
            return 2
    saved = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    threads = args.threads or (1 if args.quick and args.device == "cpu" else None)
    try:  # restore the process-wide settings afterwards (main() also runs inside tests)
        if threads:
            torch.set_num_threads(threads)
        if args.device == "cuda":  # TF32 as in ../shared/perf/gru-anchors.md
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        print(f"gru-mm-bench gru on {args.device}: {_machine(args.device)}")
        hiddens = None if not args.hidden else {int(h) for h in args.hidden.split(",") if h.strip()}
        run_grid(args.device, args.quick, args.out, args.reps, args.max_seconds, impls=impls, hiddens=hiddens)
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]
    if args.out:
        print(f"records written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
