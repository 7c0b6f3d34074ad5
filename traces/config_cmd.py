"""python -m traces config [--stage NAME] — every stage's resolved settings and where each value came from.

Precedence, lowest first: the dataclass default, `[tool.mend.<stage>]` in pyproject.toml,
`MEND_<STAGE>_<KEY>` environment variables, command-line flags (shown by the commands that take them).
"""
from __future__ import annotations

import argparse
import json

from rich.console import Console
from rich.table import Table

from traces import settings
from traces.scrub import scrub_text
from traces.terminal import safe


def rows(stage: str) -> list[tuple[str, str, str]]:
    values, sources = settings.load_with_sources(stage)
    return [(key, _show(value), sources[key]) for key, value in settings.as_dict(values).items()]


def _show(value) -> str:
    """Settings name env vars, never hold keys, but a URL may carry a password (teacher_url = "https://u:pw@...")."""
    return scrub_text(value if isinstance(value, str) else json.dumps(value))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces config", description=__doc__)
    ap.add_argument("--stage", choices=list(settings.STAGES), action="append", help="only this stage (repeatable)")
    args = ap.parse_args(argv)
    console = Console()
    console.print(f"project root: {safe(settings.project_root())}")
    console.print(f"database:     {safe(settings.db_path())}")
    for stage in args.stage or settings.STAGES:
        table = Table(title=safe(f"[tool.mend.{stage}]"))
        for col in ("key", "value", "source"):
            table.add_column(col, overflow="fold")
        for key, value, source in rows(stage):
            table.add_row(key, safe(value), source)
        console.print(table)
    return 0
