"""Run by tests/data/test_store_rss.py as `python -m store_peak_child MANIFEST CACHE|- STORAGE`: validates
a manifest and reads every training sample through the DataLoader, then prints the process's peak RSS."""

import json
import sys

from gru_mm.data.datamodule import SequenceDataModule
from gru_mm.data.sources.manifest import Manifest


def main() -> None:
    manifest, cache, storage = sys.argv[1:4]
    cache_dir = None if cache == "-" else cache
    source = Manifest(manifest, cache_dir=cache_dir, storage=storage, decode_processes=1)
    dm = SequenceDataModule(source, batch_size=16)
    dm.validate()
    steps = sum(int(b.inputs["audio"].lengths.sum()) for b in dm.train_dataloader())
    # VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across execve, so a child of a large process
    # (an xdist worker) reports its parent's peak; VmHWM belongs to the process's own address space. A
    # process forked from the test zygote starts from the zygote's resident pages: the test compares
    # peaks of the same kind of process, so that base cancels.
    with open("/proc/self/status") as status:
        hwm = next(line for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mb": int(hwm.split()[1]) / 1024, "steps": steps}))


if __name__ == "__main__":
    main()
