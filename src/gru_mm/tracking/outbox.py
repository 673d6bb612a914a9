"""Metrics and params reach the tracking server from a background thread, so training never waits
on it: not for each call's round trip (about 150 ms on loopback), and not through an outage, during
which MLflow's client would retry each call for minutes and then fail the run.

What the server has not received when the run ends is written to a JSON-lines file;
`python -m gru_mm.tracking.outbox FILE` sends it once the server is back.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from gru_mm.tracking.store import check_reachable

log = logging.getLogger("gru_mm.tracking")


class Outbox:
    """An ordered queue of `log_batch` calls for one tracking server, sent by a daemon thread.

    Each send is preceded by a quick probe of the server's /health (MLflow's client would retry a
    dead server for minutes). A failed send marks the server down; the thread tries again every
    `retry_s` seconds and sends, in order, once it answers.
    """

    def __init__(self, client, tracking_uri: str, retry_s: float = 5.0):
        self.client = client
        self.tracking_uri = tracking_uri
        self.retry_s = retry_s
        self.down = False
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[dict[str, Any]] = []  # everything not yet confirmed sent, in order
        self._lock = threading.Lock()
        self._idle = threading.Event()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="gru-mm-outbox", daemon=True)
        self._thread.start()

    def put(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        batch = {"run_id": run_id,
                 "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                 "params": [[p.key, p.value] for p in params], "tags": [[t.key, t.value] for t in tags]}
        with self._lock:
            self._pending.append(batch)
            self._idle.clear()
        self._queue.put(batch)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            while not self._send(batch):
                time.sleep(self.retry_s)
            with self._lock:
                self._pending.remove(batch)
                if not self._pending:
                    self._idle.set()

    def _send(self, batch: dict[str, Any]) -> bool:
        try:  # a quick probe first: MLflow's client would retry a dead server for minutes
            check_reachable(self.tracking_uri, timeout=2.0)
            self.client.log_batch(batch["run_id"], metrics=[Metric(*m) for m in batch["metrics"]],
                                  params=[Param(*p) for p in batch["params"]],
                                  tags=[RunTag(*t) for t in batch["tags"]])
        except Exception as err:  # an outage: keep the batch, warn once, probe until it answers
            if not self.down:
                log.warning("MLflow tracking server %s is not answering (%s); training goes on, and its "
                            "metrics are kept and sent once it answers", self.tracking_uri, err)
            self.down = True
            return False
        if self.down:
            log.warning("MLflow tracking server %s answers again; sending what was kept", self.tracking_uri)
        self.down = False
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been sent; False if that took longer than `timeout`."""
        return self._idle.wait(timeout)

    def spill(self, path: Path) -> int:
        """Write what has not been sent to `path` (JSON lines, with the server); returns the count.
        The batch in flight is included: replaying may repeat it, which only duplicates points."""
        with self._lock:
            pending = list(self._pending)
        if pending:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                for batch in pending:
                    fh.write(json.dumps({"tracking_uri": self.tracking_uri, **batch}) + "\n")
        return len(pending)


def replay(path: Path, tracking_uri: str | None = None) -> int:
    """Send a spilled file's batches (to the server they were meant for unless `tracking_uri`)."""
    from mlflow.tracking import MlflowClient

    clients: dict[str, MlflowClient] = {}
    count = 0
    for line in path.read_text().splitlines():
        batch = json.loads(line)
        uri = tracking_uri or batch["tracking_uri"]
        client = clients.setdefault(uri, MlflowClient(uri))
        client.log_batch(batch["run_id"], metrics=[Metric(*m) for m in batch["metrics"]],
                         params=[Param(*p) for p in batch["params"]], tags=[RunTag(*t) for t in batch["tags"]])
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gru_mm.tracking.outbox",
                                     description="send metrics a run could not send to its tracking server")
    parser.add_argument("file", type=Path, help="the mlflow_unsent.jsonl a run wrote")
    parser.add_argument("--tracking-uri", help="send there instead of to the server the run used")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"{parser.prog}: {args.file}: no such file", file=sys.stderr)
        return 2
    try:
        sent = replay(args.file, args.tracking_uri)
    except Exception as err:
        print(f"{parser.prog}: could not send {args.file}: {err}", file=sys.stderr)
        return 1
    print(f"{sent} batch(es) sent from {args.file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
