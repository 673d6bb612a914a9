"""Metrics and params reach the tracking server from a background thread, so training never waits
on it: not for each call's round trip (about 150 ms on loopback), and not through an outage, during
which MLflow's client would retry each call for minutes and then fail the run.

Each batch is also appended to a journal on disk before `put` returns (one JSON line, fsynced), so a
SIGKILL loses nothing that was queued: the run's next process (a resume) sends what is left, into the
same run, and `python -m gru_mm.tracking.outbox FILE` sends it by hand. A refusal for good (HTTP 4xx:
bad credentials, a deleted run) is not an outage: it is raised at the next `put`, not retried.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag

from gru_mm.tracking.store import TrackingRejected, check_reachable, rejected_status

log = logging.getLogger("gru_mm.tracking")

JOURNAL_NAME = "mlflow_outbox.jsonl"  # in the run folder


def _send_batch(client, batch: dict[str, Any]) -> None:
    client.log_batch(
        batch["run_id"],
        metrics=[Metric(*m) for m in batch["metrics"]],
        params=[Param(*p) for p in batch["params"]],
        tags=[RunTag(*t) for t in batch["tags"]],
    )


def unsent(path: Path) -> list[dict[str, Any]]:
    """The batches of a journal that never reached the server, in order.

    A journal holds a line per batch (`{"seq": n, "run_id": ..., "metrics": ...}`) and, as they arrive,
    lines `{"sent": n}`: batches are sent in order, so everything up to n arrived. A last line cut short
    by a kill was never confirmed to its caller, and is ignored.
    """
    batches, sent = [], -1
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "sent" in record:
            sent = max(sent, record["sent"])
        else:
            batches.append({"seq": i, **record})  # files written before `seq` existed: their line number
    return [b for b in batches if b["seq"] > sent]


def _drop_redone_steps(batch: dict[str, Any], from_step: int) -> dict[str, Any]:
    """The batch without metric points at step `from_step` or later: a run resumed from a checkpoint taken
    at that global step logs them again (Lightning logs an epoch's last points at its global step - 1)."""
    return {**batch, "metrics": [m for m in batch["metrics"] if m[3] < from_step]}


class Journal:
    """The outbox on disk: batches appended as they are queued (fsynced), marked as they arrive,
    and the file emptied whenever nothing is pending (so it stays as small as the backlog)."""

    def __init__(self, path: Path, keep: list[dict[str, Any]]):
        """Open `path` holding only `keep` (renumbered from 0), written atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps({**b, "seq": i}) + "\n" for i, b in enumerate(keep))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the outbox's lifetime)

    def append(self, record: dict[str, Any], sync: bool = True) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()  # in the kernel now: a SIGKILL cannot lose it
        if sync:
            os.fsync(self._fh.fileno())  # on the disk: nor can a crash of the machine

    def clear(self) -> None:
        self._fh.truncate(0)  # opened for appending: the next line goes at the (new) end


class Outbox:
    """An ordered queue of `log_batch` calls for one tracking server, sent by a daemon thread.

    Each send is preceded by a quick probe of the server's /health (MLflow's client would retry a
    dead server for minutes). A failed send marks the server down; the thread tries again every
    `retry_s` seconds and sends, in order, once it answers. With a `journal`, what an earlier process
    left unsent in it is sent first (without metric points from `redo_from_step` on: see
    `_drop_redone_steps`), and everything queued is kept there until it arrives.
    """

    def __init__(
        self,
        client,
        tracking_uri: str,
        retry_s: float = 5.0,
        journal: Path | None = None,
        redo_from_step: int | None = None,
    ):
        self.client = client
        self.tracking_uri = tracking_uri
        self.retry_s = retry_s
        self.down = False
        self.error: TrackingRejected | None = (
            None  # the server refused a batch for good: nothing more is sent
        )
        self._queue: queue.Queue = queue.Queue()
        self._pending: list[dict[str, Any]] = []  # everything not yet confirmed sent, in order
        self._lock = threading.Lock()
        self._settled = threading.Event()  # nothing pending, or nothing more will be sent
        self._settled.set()
        self._journal: Journal | None = None
        left = unsent(journal) if journal is not None else []
        if redo_from_step is not None:
            left = [_drop_redone_steps(b, redo_from_step) for b in left]
        left = [
            {**b, "seq": i} for i, b in enumerate(b for b in left if b["metrics"] or b["params"] or b["tags"])
        ]
        if journal is not None:
            self._journal = Journal(journal, left)
        self._seq = len(left)
        self.recovered = len(left)
        for batch in left:
            self._enqueue(batch)
        self._thread = threading.Thread(target=self._run, name="gru-mm-outbox", daemon=True)
        self._thread.start()

    @property
    def journal_path(self) -> Path | None:
        return self._journal.path if self._journal else None

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def put(self, run_id: str, metrics=(), params=(), tags=()) -> None:
        if self.error is not None:  # fail fast: the server will not take anything more
            raise TrackingRejected(str(self.error), self.error.status)
        with self._lock:
            batch = {
                "seq": self._seq,
                "tracking_uri": self.tracking_uri,
                "run_id": run_id,
                "metrics": [[m.key, m.value, m.timestamp, m.step] for m in metrics],
                "params": [[p.key, p.value] for p in params],
                "tags": [[t.key, t.value] for t in tags],
            }
            self._seq += 1
            if self._journal is not None:
                self._journal.append(batch)
        self._enqueue(batch)

    def _enqueue(self, batch: dict[str, Any]) -> None:
        with self._lock:
            self._pending.append(batch)
            self._settled.clear()
        self._queue.put(batch)

    def _run(self) -> None:
        while True:
            batch = self._queue.get()
            while not self._send(batch):
                if self.error is not None:  # refused for good: the journal keeps the rest
                    self._settled.set()
                    return
                time.sleep(self.retry_s)
            with self._lock:
                self._pending.remove(batch)
                if self._journal is not None:  # a lost mark only re-sends a batch, which MLflow ignores
                    if self._pending:
                        self._journal.append({"sent": batch["seq"]}, sync=False)
                    else:
                        self._journal.clear()
                if not self._pending:
                    self._settled.set()

    def _send(self, batch: dict[str, Any]) -> bool:
        try:  # a quick probe first: MLflow's client would retry a dead server for minutes
            check_reachable(self.tracking_uri, timeout=2.0)
            _send_batch(self.client, batch)
        except Exception as err:
            if (status := rejected_status(err)) is not None:
                where = f"; what it did not send is kept in {self.journal_path}" if self._journal else ""
                self.error = TrackingRejected(
                    f"MLflow tracking server {self.tracking_uri} "
                    f"refused the metrics of run {batch['run_id']} "
                    f"with HTTP {status} ({err}): check the credentials and that the run still exists{where}",
                    status,
                )
                log.error("%s", self.error)
                return False
            if not self.down:  # an outage: keep the batch, warn once, probe until it answers
                log.warning(
                    "MLflow tracking server %s is not answering (%s); training goes on, and its "
                    "metrics are kept and sent once it answers",
                    self.tracking_uri,
                    err,
                )
            self.down = True
            return False
        if self.down:
            log.warning("MLflow tracking server %s answers again; sending what was kept", self.tracking_uri)
        self.down = False
        return True

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued has been sent; False if that took longer than `timeout`, or the
        server refused it."""
        return self._settled.wait(timeout) and self.error is None


def replay(path: Path, tracking_uri: str | None = None) -> int:
    """Send a journal's unsent batches (to the server they were meant for unless `tracking_uri`), marking
    each as sent in the file as it arrives; returns how many were sent."""
    from mlflow.tracking import MlflowClient

    clients: dict[str, MlflowClient] = {}
    batches = unsent(path)
    with open(path, "a", encoding="utf-8") as marks:
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            marks.write("\n")  # a line cut short by a kill: keep the marks on lines of their own
        for batch in batches:
            uri = tracking_uri or batch["tracking_uri"]
            _send_batch(clients.setdefault(uri, MlflowClient(uri)), batch)
            marks.write(json.dumps({"sent": batch["seq"]}) + "\n")
            marks.flush()
    return len(batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gru_mm.tracking.outbox",
        description="send metrics a run could not send to its tracking server",
    )
    parser.add_argument("file", type=Path, help=f"the {JOURNAL_NAME} in the run's folder")
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
