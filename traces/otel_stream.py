"""OTel OTLP JSON files read as a stream: memory bounded by one export line or one span, never the file.

Two layouts (traces.otel): JSON lines, one export request per line (the collector's file exporter), read line by line
with the json module, as before; or one export request, pretty-printed and often hundreds of MB, walked with ijson
(a C streaming parser over yajl) one span at a time, `resourceSpans[].scopeSpans[].spans[]`, the parts around the
spans never built. Several pretty-printed exports one after another (`jq .` output) are read one after another.
Each span goes through the same code as before (otel.span_rows), so the rows are the same. Where a resource has
both `scopeSpans` and the pre-1.0 `instrumentationLibrarySpans` (no exporter writes both), the first one is read.

A document that stops parsing midway fails the file with the byte range and the span count where it broke; the
spans before it are stored (as a truncated .gz is handled by traces.readers).
"""
from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from traces import otel, readers
from traces.readers import IngestError

BUF = 64 << 10  # ijson's read size: the error's byte range is this wide


def rows(path: Path, skipped: Counter) -> Iterator[dict]:
    """Canonical rows of the LLM-call spans and of bad parts, streamed; spans that are not LLM calls counted in
    `skipped` as they are read."""
    line = readers._first_line(path)
    counter = itertools.count(1)
    if line.strip() and readers._incomplete(line):
        return _document_rows(path, counter, skipped)
    return _line_rows(path, counter, skipped)


def _line_rows(path: Path, counter, skipped: Counter) -> Iterator[dict]:
    for n, line in _lines(path):
        if line.strip():
            doc, err = otel._loads(line)
            yield from otel.export_rows(doc, err, line, f"file line {n}", counter, skipped)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) split at "\\n" only (a raw U+2028 in a string is no line end), bad UTF-8 replaced."""
    raw, f = readers._open_raw(path)
    with raw:
        n = 0
        while True:
            try:
                data = f.readline()
            except readers.READ_ERRORS as e:
                raise readers._unreadable(path, readers._describe(e), n) from None
            if not data:
                return
            n += 1
            data = data.removesuffix(b"\n")
            yield n, (data.removeprefix(b"\xef\xbb\xbf") if n == 1 else data).decode("utf-8", errors="replace")


def _document_rows(path: Path, counter, skipped: Counter) -> Iterator[dict]:
    import ijson
    raw, f = readers._open_raw(path)
    source = readers._Reader(f)
    with raw:
        events = ijson.parse(source, buf_size=BUF, multiple_values=True, use_float=True)
        try:
            for n, part, broken in _exports(events):
                where = "file line 1" if n == 1 else f"export {n} of the file"
                if part is _NOT_EXPORT:
                    yield otel.bad_row(next(counter), "", f"{broken} ({where})")
                else:
                    yield from otel.span_rows([(part, broken)], where, counter, skipped)
        except readers._Unreadable as e:
            raise _broken(path, str(e), counter, source.pos) from None
        except ijson.JSONError as e:
            raise _broken(path, f"invalid JSON: {str(e).splitlines()[0]}", counter, source.pos) from None


def _broken(path: Path, why: str, counter, pos: int) -> IngestError:
    read = next(counter) - 1
    return IngestError(f"{path}: cannot read the OTLP export after its {read:,} spans (in bytes "
                       f"{max(0, pos - BUF):,}-{pos:,}): {why}; the spans before it are stored, nothing after it is "
                       "(fix or re-export the file, then ingest it again)")


_NOT_EXPORT = object()


def _exports(events) -> Iterator[tuple[int, Any, str | None]]:
    """(export number, span, None) per span, (n, part, why) where the nesting is broken, (n, _NOT_EXPORT, why) for
    a top-level value that is no export request: otel.spans over a stream of parse events."""
    for n, (_, event, value) in enumerate(events, 1):
        if event != "start_map":
            _skip(events, event)
            yield n, _NOT_EXPORT, "export request is not a JSON object"
            continue
        found = yield from _numbered(n, _map(events, 0, ""))
        if not found:
            yield n, _NOT_EXPORT, "export request has no `resourceSpans`"


def _numbered(n: int, parts):
    """(n, part, why) per (part, why) of `parts`; returns what `parts` returns (a generator expression would not)."""
    while True:
        try:
            part, why = next(parts)
        except StopIteration as stop:
            return stop.value
        yield n, part, why


def _map(events, level: int, where: str):
    """The spans under an object at `level` (its start_map read); returns whether it had that level's key."""
    found = None
    for _, event, value in events:
        if event == "end_map":
            return found is not None
        key, (_, event, value) = value, next(events)
        if key not in otel.LEVELS[level] or found not in (None, key):
            _skip(events, event)  # not on the way to the spans: parsed, never built
            continue
        found, path = key, f"{where}.{key}".lstrip(".")
        if event == "start_array":
            yield from _items(events, level + 1, path)
        elif event != "null":
            part = _value(events, event, value)
            yield part, f"`{path}` must be an array, got {otel.json_type(part)}"
    return found is not None


def _items(events, level: int, path: str):
    for i, (_, event, value) in enumerate(events):
        if event == "end_array":
            return
        where = f"{path}[{i}]"
        if level == len(otel.LEVELS):
            yield _value(events, event, value), None
        elif event == "start_map":
            yield from _map(events, level, where)
        else:
            part = _value(events, event, value)
            yield part, f"`{where}` must be an object, got {otel.json_type(part)}"


def _skip(events, event: str) -> None:
    """Read past the value whose first event is `event` without building it."""
    _walk(events, event, None, lambda event, value: None)


def _value(events, event: str, value: Any) -> Any:
    """The whole value whose first event is (event, value), built from the events that follow."""
    import ijson
    builder = ijson.ObjectBuilder()
    _walk(events, event, value, builder.event)
    return builder.value


def _walk(events, event: str, value: Any, visit) -> None:
    """visit(event, value) for each event of the value whose first event is (event, value)."""
    depth = 0
    while True:
        visit(event, value)
        depth += event in ("start_map", "start_array")
        depth -= event in ("end_map", "end_array")
        if not depth:
            return
        _, event, value = next(events)
