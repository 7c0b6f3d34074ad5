"""The loop the JSON record formats read in Python share: Phoenix spans (traces.phoenix), `llm logs --json`
records (traces.llm_logs) and Langfuse observations (traces.langfuse).

A reader hands in (line, JSON text) records (traces.readers.paged_records) and a `read(line, doc)` that returns
(row, None) for an LLM call or (None, why) for an item that is not one; this decodes each record, quarantines
one that is not JSON or breaks `read` (otel.guarded: the reason names the field, never the value), counts the
skipped by reason, and keeps a quarantined record's text as the file has it.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from traces import otel

Decoded = tuple[int, str, Any, "str | None"]  # (line, raw text, document, why it is not JSON)


def decoded(records: Iterable[tuple[int, str]]) -> list[Decoded]:
    return [(line, raw, *otel._loads(raw)) for line, raw in records]


def rows(items: Iterable[Decoded], read: Callable, fmt: str, noun: str) -> tuple[list[dict], Counter]:
    """Decoded records -> (canonical rows of LLM calls and of bad records, {skip reason: items skipped})."""
    out, skipped = [], Counter()
    for line, raw, doc, err in items:
        if err:  # said as the other JSON readers say it (the column of a cut line's record says little)
            out.append(otel.bad_row(line, raw, "invalid JSON" if err.startswith("invalid") else err, fmt))
            continue
        row, reason = otel.guarded(line, doc, read, fmt, noun)
        if row is None:
            skipped[reason] += 1
            continue
        row["raw"] = raw[:otel.KEEP_CHARS]
        out.append(row)
    return out, skipped
