"""Run by test_run_folders.py as `python -m start_on_go GO ARGS...`: says "ready", waits until the file GO
exists, then runs `gru-mm-train ARGS...`, so that two such processes start composing at the same moment."""

import sys
import time
from pathlib import Path

from gru_mm.train import main

if __name__ == "__main__":
    go = Path(sys.argv[1])
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.001)
    sys.argv = ["gru-mm-train", *sys.argv[2:]]
    main()
