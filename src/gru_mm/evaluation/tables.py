"""A table is a list of rows (dicts with the same keys); written as CSV and as Markdown."""

from __future__ import annotations

import csv
import io


def table_csv(table: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(table[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def table_markdown(table: list[dict]) -> str:
    keys = list(table[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in table:
        cells = (f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values())
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def log_table(client, run_id: str, table: list[dict], path: str) -> None:
    """The table as `<path>.csv` and `<path>.md` artifacts of the run."""
    client.log_text(run_id, table_csv(table), f"{path}.csv")
    client.log_text(run_id, table_markdown(table), f"{path}.md")
