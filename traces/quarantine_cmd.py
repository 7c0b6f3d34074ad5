"""python -m traces quarantine FILE [--reason TEXT] [--limit N] — the quarantined lines of one file.

FILE is the path as ingested (absolute), or any path or file name that ends it. Prints each line's
number, reason and the line as stored (secrets scrubbed, first 10 kB; shown escaped and shortened to
`--width` characters): what to fix in the source before ingesting the file again.
"""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from traces import settings, store
from traces.terminal import safe


def matching_files(con, file: str) -> list[str]:
    files = [r[0] for r in con.execute("SELECT DISTINCT source_file FROM quarantine").fetchall()]
    exact = [f for f in files if f == file]
    return exact or sorted(f for f in files if f.endswith("/" + file.lstrip("./")) or f.endswith(file))


def lines(file: str, reason: str | None = None, limit: int = 50) -> tuple[list[str], list[tuple]]:
    """(files matched, [(file, line, reason, raw)]) in file and line order."""
    if not settings.db_path().exists():
        return [], []
    with store.connect(read_only=True) as con:
        files = matching_files(con, file)
        if not files:
            return [], []
        rows = con.execute(
            """SELECT source_file, source_line, reason, raw FROM quarantine
               WHERE list_contains(?, source_file) AND (? IS NULL OR contains(reason, ?))
               ORDER BY source_file, source_line LIMIT ?""", [files, reason, reason, limit]).fetchall()
    return files, rows


def _shown(raw: str | None, width: int) -> str:
    """One line of escaped text: control characters visible, rich markup inert."""
    return safe((raw or "").encode("unicode_escape").decode("ascii"), limit=width)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces quarantine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", help="the ingested file (absolute path, or a path or name that ends it)")
    ap.add_argument("--reason", default=None, help="only lines whose reason contains this text")
    ap.add_argument("--limit", type=int, default=50, help="most lines shown (default 50)")
    ap.add_argument("--width", type=int, default=160, help="characters of each raw line shown")
    args = ap.parse_args(argv)
    console = Console()
    files, rows = lines(args.file, args.reason, args.limit)
    if not files:
        console.print(f"no quarantined lines for {safe(args.file)} in {safe(settings.db_path())}")
        return 1
    table = Table(title=f"quarantined lines ({len(rows)} shown, --limit {args.limit})")
    for col in ("file", "line", "reason", "raw"):
        table.add_column(col, justify="right" if col == "line" else "left", overflow="fold")
    for f, line, reason, raw in rows:
        table.add_row(safe(f), f"{line:,}" if line is not None else "", safe(reason), _shown(raw, args.width))
    console.print(table)
    return 0
