"""When a call happened, from the shapes logs use: epoch numbers in s, ms, us or ns, and ISO 8601 strings.

Stored timestamps are naive UTC. An epoch number's unit is decided by its magnitude (what a
reasonable date is in each unit): below 1e11 it is seconds (1e11 s is the year 5138), below 1e14
milliseconds, below 1e17 microseconds, else nanoseconds. An ISO string with an offset (`Z`,
`+01:00`, `-0500`) is converted to UTC; one without is taken as UTC already. The SQL macros
(JSONL, Parquet) and the Python function (OTel) apply the same rule.
"""
from __future__ import annotations

import datetime as dt
import math
import re

# an offset after a time of day ("2024-11-08" alone ends in "-08", which is a day, not an offset)
ISO_OFFSET_RE = r"[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$"

MACROS = [
    """CREATE OR REPLACE TEMP MACRO epoch_ts(x) AS make_timestamp((CASE
         WHEN abs(x) < 1e11 THEN x * 1e6 WHEN abs(x) < 1e14 THEN x * 1e3
         WHEN abs(x) < 1e17 THEN x ELSE x / 1e3 END)::BIGINT)""",
    f"""CREATE OR REPLACE TEMP MACRO iso_ts(s) AS CASE
         WHEN try_cast(s AS DOUBLE) IS NOT NULL THEN try(epoch_ts(s::DOUBLE))
         WHEN regexp_matches(s, '{ISO_OFFSET_RE}') THEN timezone('UTC', try_cast(s AS TIMESTAMPTZ))
         ELSE try_cast(s AS TIMESTAMP) END""",
]


def epoch_to_utc(value) -> dt.datetime | None:
    """An epoch number (or its string) in s/ms/us/ns -> naive UTC datetime; None when it is not one."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):  # "nan", "inf": not a time
        return None
    scale = 1 if abs(x) < 1e11 else 1e3 if abs(x) < 1e14 else 1e6 if abs(x) < 1e17 else 1e9
    try:
        return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=round(x / scale * 1e6))
    except OverflowError:
        return None


def parse(value) -> dt.datetime | None:
    """An epoch number or an ISO 8601 string -> naive UTC datetime (None when neither)."""
    if value is None or isinstance(value, bool):
        return None
    epoch = epoch_to_utc(value)
    if epoch is not None or not isinstance(value, str):
        return epoch
    try:
        t = dt.datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    if re.search(ISO_OFFSET_RE, value.strip()) and t.tzinfo is not None:
        t = t.astimezone(dt.UTC).replace(tzinfo=None)
    return t.replace(tzinfo=None)
