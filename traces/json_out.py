"""`--json` for every reporting command: one JSON document on stdout and nothing else there.

Shared by `traces stats`, `traces config`, `evals clusters`, `evals registry list`, `evals gate`, `curate status` and
`curate report`, so that each follows the gate's convention: with --json, stdout carries the document alone and
whatever else the command prints (progress, notes, library messages) goes to stderr; without it, the rich tables.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import json
import math
import os
import sys

JSON_HELP = "print one JSON document on stdout instead of the tables (anything else goes to stderr)"


def add_json_flag(parser) -> None:
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool):
    """With --json, stdout carries the JSON document alone: whatever else the command prints meanwhile (rich
    consoles, progress, library messages, even at the file-descriptor level) goes to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def plain(x):
    """JSON-safe values: numpy scalars as Python numbers, NaN/inf as null (strict JSON has neither), times as ISO
    8601, paths and anything else as text."""
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        return [plain(v) for v in x]
    if type(x).__module__ == "numpy" and hasattr(x, "item"):  # np.generic, without importing numpy here
        x = x.item()
    if isinstance(x, decimal.Decimal):  # DuckDB's sum() of integers
        x = float(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (dt.date, dt.time)):
        return x.isoformat()
    if isinstance(x, dt.timedelta):
        return x.total_seconds()
    return x if x is None or isinstance(x, (str, int, float, bool)) else str(x)


def emit(document) -> None:
    """The one JSON document on stdout."""
    sys.stdout.write(json.dumps(plain(document), indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def records(keys: tuple[str, ...] | list[str], rows) -> list[dict]:
    """SQL rows as objects: a JSON reader names fields, it does not count columns."""
    return [dict(zip(keys, row)) for row in rows]
