"""python -m traces config [--stage NAME] [--json] — every stage's resolved settings, where each value came from, and
what each one does.

Precedence, lowest first: the dataclass default, `[tool.mend.<stage>]` in pyproject.toml,
`MEND_<STAGE>_<KEY>` environment variables, command-line flags (shown by the commands that take them).
A description is the first line of the setting's comment in its settings module ("…": the comment goes on there).
"""
from __future__ import annotations

import argparse
import ast
import inspect
import io
import json
import sys
import tokenize

from rich.console import Console
from rich.table import Table

from traces import json_out, settings
from traces.scrub import scrub_text
from traces.terminal import safe


def descriptions(cls: type) -> dict[str, str]:
    """{field: the first line of its trailing `# comment`}. Read from the settings module's source rather than kept
    in a second table: those comments are where every setting is explained (docs/architecture.md, "Settings"),
    and a copy of them here would drift from them."""
    try:
        source = inspect.getsource(sys.modules[cls.__module__])
    except (OSError, TypeError):
        return {}  # no source to read (a frozen build): the settings show without descriptions
    comments = {tok.start[0]: tok for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    node = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
    out = {}
    for field in node.body:
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name) and field.lineno in comments:
            more = _continues(comments.get(field.lineno + 1))
            out[field.target.id] = comments[field.lineno].string.lstrip("#").strip() + (" …" if more else "")
    return out


def _continues(tok) -> bool:
    """A comment alone on the next line carries the description on, unless it heads a section (`# --- ...`)."""
    return tok is not None and tok.line.strip().startswith("#") and not tok.string.startswith("# ---")


def rows(stage: str) -> list[tuple[str, object, str, str]]:
    """(key, value, source, description) of each setting of `stage`."""
    values, sources = settings.load_with_sources(stage)
    about = descriptions(type(values))
    return [(key, value, sources[key], about.get(key, "")) for key, value in settings.as_dict(values).items()]


def _scrubbed(value):
    """Settings name env vars, never hold keys, but a URL may carry a password (teacher_url = "https://u:pw@...")."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    if isinstance(value, dict):
        return {k: _scrubbed(v) for k, v in value.items()}
    return value


def _show(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def document(stages: list[str]) -> dict:
    """What --json prints: {project_root, database, stages: {stage: {key: {value, source, description}}}}."""
    return {"project_root": str(settings.project_root()), "database": str(settings.db_path()),
            "stages": {stage: {key: {"value": _scrubbed(value), "source": source, "description": about}
                               for key, value, source, about in rows(stage)} for stage in stages}}


def print_tables(stages: list[str], console: Console) -> None:
    console.print(f"project root: {safe(settings.project_root())}")
    console.print(f"database:     {safe(settings.db_path())}")
    for stage in stages:
        table = Table(title=safe(f"[tool.mend.{stage}]"))
        for col in ("key", "value", "source", "description"):
            table.add_column(col, overflow="fold")
        for key, value, source, about in rows(stage):
            table.add_row(key, safe(_show(_scrubbed(value))), source, safe(about))
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces config", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=list(settings.STAGES), action="append", help="only this stage (repeatable)")
    json_out.add_json_flag(ap)
    args = ap.parse_args(argv)
    stages = args.stage or list(settings.STAGES)
    if args.json:
        json_out.emit(document(stages))
    else:
        print_tables(stages, Console())
    return 0
