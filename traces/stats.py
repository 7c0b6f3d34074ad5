"""python -m traces stats [--days N] — trace counts by source, model, split and day; quarantined lines.

Quarantined lines are counted by reason and file, with the first lines where each occurs; the lines
themselves: `python -m traces quarantine FILE`. Opens the store read-only, so it works while nothing
else writes (and says so when something does).
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from traces import settings, store
from traces.terminal import safe

QUERIES = {
    "by source": "SELECT source_format, count(*) FROM traces GROUP BY ALL ORDER BY 2 DESC",
    "by model": "SELECT coalesce(model, '(none)'), count(*) FROM traces GROUP BY ALL ORDER BY 2 DESC",
    "by split": "SELECT split, count(*) FROM traces GROUP BY ALL ORDER BY 1",
    "by day": "SELECT coalesce(strftime(ts, '%Y-%m-%d'), '(no timestamp)'), count(*) FROM traces "
              "GROUP BY ALL ORDER BY 1 DESC LIMIT ?",
    # the first few line numbers per (reason, file): where to look, without listing thousands
    "quarantine by reason": """SELECT reason, source_file, count(*),
                                      array_to_string(list(source_line ORDER BY source_line)[1:5], ', ')
                                      || CASE WHEN count(*) > 5 THEN ', ...' ELSE '' END
                               FROM quarantine GROUP BY ALL ORDER BY 3 DESC, 1, 2 LIMIT 30""",
}


def collect(days: int = 14) -> dict[str, list[tuple]]:
    """Every table's rows as plain tuples (also what tests and the nightly report read)."""
    path = settings.db_path()
    if not path.exists():
        return {name: [] for name in QUERIES} | {"ingests": []}
    with store.connect(read_only=True) as con:
        out = {name: con.execute(sql, [days] if "?" in sql else []).fetchall() for name, sql in QUERIES.items()}
        out["ingests"] = con.execute(
            """SELECT source_file, status, n_read, n_stored, n_duplicate, n_quarantined, coalesce(n_skipped, 0),
                      finished_at, coalesce(error, '') FROM ingests ORDER BY started_at DESC LIMIT 10""").fetchall()
    return out


def _table(title: str, header: tuple[str, ...], rows: list[tuple]) -> Table:
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="right" if rows and isinstance(rows[0][i], int) else "left", overflow="fold")
    for r in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else safe(v) for v in r))  # models, files, errors: untrusted
    return table


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces stats", description=__doc__)
    ap.add_argument("--days", type=int, default=14, help="days shown in the per-day table")
    args = ap.parse_args(argv)
    console = Console()
    data = collect(args.days)
    total = sum(n for _, n in data["by split"])
    console.print(f"[bold]{total:,}[/] traces in {safe(settings.db_path())}")
    for name in ("by source", "by model", "by split", "by day"):
        console.print(_table(f"traces {name}", (name.split()[-1], "traces"), data[name]))
    console.print(_table("quarantined lines by reason and file", ("reason", "file", "lines", "first lines"),
                         data["quarantine by reason"]))
    if data["quarantine by reason"]:
        console.print("the quarantined lines of one file: [cyan]python -m traces quarantine FILE[/] "
                      "[dim](--reason TEXT, --limit N)[/]")
    console.print(_table("latest ingests", ("file", "status", "read", "stored", "duplicate", "quarantined",
                                            "skipped", "finished", "error"), data["ingests"]))
    return 0
