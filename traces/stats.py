"""python -m traces stats [--days N] [--json] — trace counts by source, model, split and day; quarantined lines.

Quarantined lines are counted by reason and file, with the first lines where each occurs; the lines
themselves: `python -m traces quarantine FILE`. Opens the store read-only, so it works while nothing
else writes (and says so when something does).
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from traces import json_out, settings, store
from traces.terminal import safe

QUERIES = {
    "by source": "SELECT source_format, count(*) FROM traces GROUP BY ALL ORDER BY 2 DESC",
    "by model": "SELECT model, count(*) FROM traces GROUP BY ALL ORDER BY 2 DESC",
    "by split": "SELECT split, count(*) FROM traces GROUP BY ALL ORDER BY 1",
    "by day": "SELECT strftime(ts, '%Y-%m-%d'), count(*) FROM traces GROUP BY ALL ORDER BY 1 DESC NULLS LAST LIMIT ?",
    # the first few line numbers per (reason, file): where to look, without listing thousands
    "quarantine by reason": """SELECT reason, source_file, count(*), list(source_line ORDER BY source_line)[1:5]
                               FROM quarantine GROUP BY ALL ORDER BY 3 DESC, 1, 2 LIMIT 30""",
}
# the JSON document's field names for each table's columns (--json)
FIELDS = {"by source": ("source_format", "traces"), "by model": ("model", "traces"), "by split": ("split", "traces"),
          "by day": ("day", "traces"), "quarantine by reason": ("reason", "file", "lines", "first_lines"),
          "ingests": ("file", "status", "read", "stored", "duplicate", "quarantined", "skipped", "finished_at",
                      "error")}


def collect(days: int = 14) -> dict[str, list[tuple]]:
    """Every table's rows as plain tuples (also what tests and the nightly report read)."""
    path = settings.db_path()
    if not path.exists():
        return {name: [] for name in QUERIES} | {"ingests": []}
    with store.connect(read_only=True) as con:
        out = {name: con.execute(sql, [days] if "?" in sql else []).fetchall() for name, sql in QUERIES.items()}
        out["ingests"] = con.execute(
            """SELECT source_file, status, n_read, n_stored, n_duplicate, n_quarantined, coalesce(n_skipped, 0),
                      finished_at, error FROM ingests ORDER BY started_at DESC LIMIT 10""").fetchall()
    return out


def document(data: dict[str, list[tuple]]) -> dict:
    """What --json prints: every table as a list of objects (NULL model, day or error: null)."""
    doc = {"database": str(settings.db_path()), "traces": sum(n for _, n in data["by split"])}
    return doc | {name.replace(" ", "_"): json_out.records(FIELDS[name], rows) for name, rows in data.items()}


def _cell(v) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):  # first quarantined lines: five at most (QUERIES)
        return ", ".join(map(str, v))
    return "(none)" if v is None else safe(v)  # models, files, errors: untrusted


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> Table:
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if rows and isinstance(rows[0][i], int) else "left", overflow="fold")
    for r in rows:
        table.add_row(*map(_cell, r))
    return table


def _quarantine_rows(rows: list[tuple]) -> list[tuple]:
    """The first lines, with "..." where the reason occurs more often than they show."""
    return [(*r[:3], _cell(r[3]) + (", ..." if r[2] > len(r[3]) else "")) for r in rows]


def print_tables(data: dict[str, list[tuple]], console: Console) -> None:
    total = sum(n for _, n in data["by split"])
    console.print(f"[bold]{total:,}[/] traces in {safe(settings.db_path())}")
    for name in ("by source", "by model", "by split", "by day"):
        console.print(_table(f"traces {name}", (name.split()[-1], "traces"), data[name]))
    console.print(_table("quarantined lines by reason and file", ("reason", "file", "lines", "first lines"),
                         _quarantine_rows(data["quarantine by reason"])))
    if data["quarantine by reason"]:
        console.print("the quarantined lines of one file: [cyan]python -m traces quarantine FILE[/] "
                      "[dim](--reason TEXT, --limit N)[/]")
    ingests = [(*r[:-1], r[-1] or "") for r in data["ingests"]]
    console.print(_table("latest ingests", ("file", "status", "read", "stored", "duplicate", "quarantined",
                                            "skipped", "finished", "error"), ingests))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces stats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=14, help="days shown in the per-day table")
    json_out.add_json_flag(ap)
    args = ap.parse_args(argv)
    data = collect(args.days)
    if args.json:
        json_out.emit(document(data))
    else:
        print_tables(data, Console())
    return 0
