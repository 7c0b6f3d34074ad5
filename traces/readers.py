"""The format readers of `traces ingest`: bytes in (plain or gzip), batches of records out, never a Python
object per line.

Modelled on datatrove's readers/: one reader per format, each handing the orchestration (traces.ingest)
`fills`, callables that put one batch into a DuckDB temp table of the connection they are given: `lines`
(line, raw JSON text) for the JSONL checker (traces.jsonl_sql), or `pre` (the canonical columns) for OTel
spans and store-layout Parquet. A fill returns False (`checked` was built from `lines`), True (`pre` is
ready) or None (Parquet rows that are records: `lines` is ready, the caller runs the checker). The format is
decided per file from its first JSON value (detect_format), not from its name.
"""
from __future__ import annotations

import bisect
import gzip
import json
import re
import zlib
from pathlib import Path
from typing import Callable, Iterator

from traces import jsonl_sql, langfuse, llm_logs, otel, phoenix

CHUNK_BYTES = 16 << 20  # read 16 MiB at a time; lines are regrouped into batches of batch_lines
SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".jsonl.gz", ".json.gz", ".ndjson.gz")
REFUSED = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".xlsx", ".xls")
FIRST_LINE_MAX = 64 << 20  # a first line longer than this is not probed as one JSON value
READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


class IngestError(Exception):
    """A file that cannot be ingested (its message names the file, and the line where it applies)."""


# ---------- bytes: plain or gzip, a broken stream reported with the line it broke after ----------

def _open_raw(path: Path):
    raw = path.open("rb")  # a Path, or an object in object storage (traces.locations.RemoteFile)
    return raw, (gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw)


class _Unreadable(Exception):
    """The byte stream broke (truncated or corrupt compression); the caller knows the line."""


def _read(f, n: int) -> bytes:
    """Up to n bytes; a corrupt or truncated compressed stream raises _Unreadable once what was
    decompressed before the break has been returned (read1 hands it over piece by piece)."""
    if getattr(f, "mend_broken", None):
        raise _Unreadable(f.mend_broken)
    if not isinstance(f, gzip.GzipFile):
        try:
            return f.read(n)
        except READ_ERRORS as e:  # a stream that broke: an http or s3 body cut off or timed out
            raise _Unreadable(_describe(e)) from None
    out = bytearray()
    try:
        while len(out) < n and (piece := f.read1(min(n - len(out), 1 << 20))):
            out += piece
    except READ_ERRORS as e:
        f.mend_broken = _describe(e)
        if not out:
            raise _Unreadable(f.mend_broken) from None
    return bytes(out)


def _unreadable(path: Path, why: str, lines_read: int) -> IngestError:
    where = f"after line {lines_read:,}" if lines_read else "at its start"
    kept = "the lines before it are stored, " if lines_read else ""
    return IngestError(f"{path}: cannot read {where}: {why}; {kept}nothing after it is "
                       "(fix or re-export the file, then ingest it again)")


def _describe(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "the compressed stream is truncated"
    if isinstance(e, gzip.BadGzipFile):
        return f"not a gzip file ({e})"
    return f"{type(e).__name__}: {e}"


def _first_line(path: Path) -> str:
    """The first non-blank line (BOM stripped), at most FIRST_LINE_MAX bytes of it."""
    raw, f = _open_raw(path)
    with raw:
        buf = b""
        while len(buf) < FIRST_LINE_MAX:
            try:
                chunk = _read(f, 1 << 16)
            except _Unreadable as e:
                raise _unreadable(path, str(e), 0) from None
            buf += chunk
            lines = buf.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)
            if not chunk or (len(lines) > 1):
                return lines[0].decode("utf-8", errors="replace")
    return buf.decode("utf-8", errors="replace")


def _incomplete(line: str) -> bool:
    """True when the line is the start of a JSON value that continues on later lines (pretty-printed)."""
    try:
        json.loads(line)
        return False
    except json.JSONDecodeError as e:
        return e.pos >= len(line.rstrip())
    except RecursionError:
        return False


# ---------- formats and records ----------

def detect_format(path: Path) -> str:
    """jsonl (one record per line) | json (one document: an object or an array) | otel | parquet | one of
    RECORD_FORMATS (phoenix, llm_logs, langfuse).

    Decided by the file's first JSON value, so that a chat log that mentions "resourceSpans" is not OTel."""
    name = path.name.lower()
    if name.endswith(REFUSED):
        raise IngestError(f"{path}: CSV/spreadsheet files are not read (no standard layout for chat logs); "
                          "export JSONL (one JSON object per line) or Parquet")
    if name.endswith(".parquet"):
        return "parquet"
    line = _first_line(path)
    if line.strip() and _incomplete(line):
        if _first_key(path) == "resourceSpans":  # an OTLP export, told without reading it whole (often huge)
            return "otel"
        text = read_text(path)
        doc, err = otel._loads(text)
        return _spans_format(_first_record(text) if err else doc) or "json"
    try:
        first = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        # a broken first line: one that opens an array is a one-line JSON document (a bad item is quarantined
        # alone, not the whole array as one line); anything else is a bad JSONL line
        return "json" if line.lstrip().startswith("[") else "jsonl"
    return _spans_format(first) or ("json" if isinstance(first, list) else "jsonl")


def _first_key(path: Path) -> str | None:
    """The first key of the document's top-level object, streamed (ijson); None when it is no object."""
    import ijson
    raw, f = _open_raw(path)
    with raw:
        try:
            events = ijson.basic_parse(_Reader(f), buf_size=1 << 16)
            first, second = next(events, (None, None)), next(events, (None, None))
        except (ijson.JSONError, _Unreadable):
            return None
    return second[1] if first[0] == "start_map" and second[0] == "map_key" else None


class _Reader:
    """A byte stream for ijson: the BOM dropped, a broken .gz raised as _Unreadable."""

    def __init__(self, f):
        self.f, self.pos = f, 0

    def read(self, n: int) -> bytes:
        data = _read(self.f, n)
        if not self.pos:
            data = data.removeprefix(b"\xef\xbb\xbf")
        self.pos += len(data)
        return data


def _first_record(text: str):
    """The first record of a document that does not parse whole: a Phoenix answer with one broken span is still
    told by the span before it (each span is then read alone)."""
    for _, record in paged_records(text):
        doc, err = otel._loads(record)
        if err is None:
            return doc
    return None


# the formats whose records are read one by one in Python (traces.records), told by their first record
RECORD_FORMATS = {"phoenix": phoenix, "llm_logs": llm_logs, "langfuse": langfuse}


def _spans_format(doc) -> str | None:
    if otel.is_export_request(doc):
        return "otel"
    return next((name for name, module in RECORD_FORMATS.items() if module.is_document(doc)), None)


def read_text(path: Path) -> str:
    raw, f = _open_raw(path)
    with raw:
        data = bytearray()
        try:
            while chunk := _read(f, CHUNK_BYTES):
                data += chunk
        except _Unreadable as e:
            raise _unreadable(path, str(e), data.count(b"\n")) from None
    return bytes(data).removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")


def line_batches(path: Path, batch_lines: int, on_bytes=None) -> Iterator["object"]:
    """Arrow tables (line BIGINT, raw VARCHAR) of at most batch_lines lines; no Python object per line."""
    import pyarrow as pa
    parts, n_parts, next_line = [], 0, 1
    raw, f = _open_raw(path)
    broken = None
    with raw:
        carry = b""
        while True:
            try:
                chunk = _read(f, CHUNK_BYTES)
            except _Unreadable as e:  # store the whole lines read so far, then fail the file
                broken, chunk, carry = str(e), b"", b""
            data = carry + chunk
            if not chunk:
                carry = b""
            else:
                cut = data.rfind(b"\n")
                # memoryview slices: no copy of the 16 MiB chunk
                carry, data = (data, b"") if cut < 0 else (data[cut + 1:], memoryview(data)[:cut])
            if next_line == 1 and not parts and bytes(data[:3]) == b"\xef\xbb\xbf":
                data = data[3:]
            if data:
                parts.append(_split(data))
                n_parts += len(parts[-1])
            if on_bytes:
                on_bytes(raw.tell())
            if n_parts >= batch_lines or (not chunk and n_parts):
                pending = parts[0] if len(parts) == 1 else pa.concat_arrays(parts)
                while len(pending) >= batch_lines or (not chunk and len(pending)):
                    yield _numbered(pending[:batch_lines], next_line)
                    next_line += min(batch_lines, len(pending))
                    pending = pending[batch_lines:]
                parts, n_parts = ([pending], len(pending)) if len(pending) else ([], 0)
            if not chunk:
                if broken:
                    raise _unreadable(path, broken, next_line - 1)
                return


def _split(data):
    """Lines as an Arrow string array that points into `data` (no copy, no Python object per line).

    Each string keeps its trailing newline (JSON allows surrounding whitespace; SQL trims it)."""
    import numpy as np
    import pyarrow as pa
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10) + 1
    if not len(ends) or ends[-1] != len(data):
        ends = np.append(ends, len(data))
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    lines = pa.LargeStringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(data))
    try:
        lines.validate(full=True)  # UTF-8 check, ~10x faster than bytes.decode
    except pa.ArrowInvalid:  # rare: bad bytes become U+FFFD (one odd character, not a failed batch)
        return _split(bytes(data).decode("utf-8", errors="replace").encode())
    return lines


def _numbered(lines, first: int):
    import numpy as np
    import pyarrow as pa
    # from_buffers / from_arrays: pa.table(dict) and pa.array(ndarray) import pandas (seconds)
    numbers = np.arange(first, first + len(lines), dtype=np.int64)
    column = pa.Array.from_buffers(pa.int64(), len(lines), [None, pa.py_buffer(numbers)])
    return pa.Table.from_arrays([column, lines], names=["line", "raw"])


def document_records(text: str) -> Iterator[tuple[int, str]]:
    """(line where it starts, its JSON text) per record of a JSON document: an object, an array's items, or
    several of these one after another (`jq .` output).

    A value that does not parse is one record (the checker quarantines it as invalid JSON at its line) and
    reading goes on after it (_bad_value_end), so one bad item never takes the items after it along."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    i = _skip_ws(text, 0)
    while i is not None and i < len(text):
        if text[i] == "[":
            i = yield from _array_items(text, i, line_of)
        else:
            end, _ = _value_extent(text, i)
            yield line_of(i), text[i:end]
            i = end
        i = _skip_ws(text, i) if i is not None else None


_DECODER = json.JSONDecoder()


def _value_extent(text: str, i: int) -> tuple[int, bool]:
    """(where the value at i ends, whether it parsed)."""
    try:
        return _DECODER.raw_decode(text, i)[1], True
    except (json.JSONDecodeError, RecursionError):
        return _bad_value_end(text, i), False


# a string (never past a line end: a raw newline is invalid in one, and one broken quote must not turn the
# rest of the file inside out), a bracket, a comma or a line end
_TOKENS = re.compile(r'"(?:[^"\\\n]|\\.)*"|[\[\]{},\n]')
_CLOSES = {"]": "[", "}": "{"}


def _bad_value_end(text: str, i: int) -> int:
    """Where a value that does not parse ends: where its brackets close (a raw control character, a bad
    escape), before a closer that is not its own, or at the next line indented as its first one that opens
    an object or array (the next record of a pretty-printed file), whichever comes first; at least 1 char."""
    limit, opened = _next_record_line(text, i), []
    for m in _TOKENS.finditer(text, i, limit):
        tok = m.group()
        if tok in ("[", "{"):
            opened.append(tok)
        elif tok in _CLOSES and opened and opened[-1] == _CLOSES[tok]:
            opened.pop()
            if not opened:
                return m.end()
        elif tok in _CLOSES or (not opened and tok in (",", "\n")):
            return max(m.start(), i + 1)  # the enclosing array's comma or closer, or the end of a bare value
        elif not opened:
            return m.end()  # a string on its own
    return limit


def _next_record_line(text: str, i: int) -> int:
    """The start of the next line indented as i's own that opens an object or array; the end of the text
    when there is none or i is not the first thing on its line (a compact document)."""
    indent = text[text.rfind("\n", 0, i) + 1:i]
    if indent.strip(" \t"):
        return len(text)
    m = re.compile("\n" + re.escape(indent) + r"[{\[]").search(text, i)
    return m.start() + 1 if m else len(text)


def _array_items(text: str, i: int, line_of):
    """Yield an array's items; return the index after its `]`, or None when the text ends first."""
    i, parsed = _skip_ws(text, i + 1), True
    while i < len(text) and text[i] != "]":
        end, parsed = _value_extent(text, i)
        yield line_of(i), text[i:end]
        i = _skip_ws(text, end)
        if text.startswith(",", i):  # else a missing comma or stray text: read as the next item
            i = _skip_ws(text, i + 1)
    if i < len(text):
        return i + 1
    if parsed:  # the text ends after a whole item: say the array is cut, as a quarantined record
        yield line_of(len(text)), "(end of file: the JSON array is not closed)"
    return None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


# a REST answer's page: Phoenix's {"data": [span, ...], "next_cursor": ...}, Langfuse's {"data": [...], "meta": ...}
_PAGE = re.compile(r'\{\s*"data"\s*:\s*\[')


def paged_records(text: str) -> Iterator[tuple[int, str]]:
    """document_records, with the items of a REST answer's page as records of their own (each at its own line)."""
    newlines = [m.start() for m in re.finditer("\n", text)]
    for line, record in document_records(text):
        page = _PAGE.match(record)
        if not page:
            yield line, record
            continue
        first = newlines[line - 2] + 1 if line > 1 else 0  # where the record's line starts in the text
        start = text.index(record, first)
        # the items of `data` one by one (a broken one alone), what follows the array (`next_cursor`, `meta`) ignored
        yield from _array_items(text, start + page.end() - 1, lambda pos: bisect.bisect_left(newlines, pos) + 1)


def record_batches(path: Path, batch_lines: int) -> Iterator["object"]:
    """A JSON document's records as `lines` tables, as line_batches gives for JSONL."""
    import pyarrow as pa
    records = list(document_records(read_text(path)))
    for start in range(0, len(records), batch_lines):
        part = records[start:start + batch_lines]
        yield pa.table({"line": pa.array([n for n, _ in part], pa.int64()),
                        "raw": pa.array([r for _, r in part], pa.large_string())})


# ---------- fills: one batch into a temp table of the caller's connection ----------

def jsonl_fills(cfg, tables) -> Iterator[Callable]:
    """`lines` tables (JSONL, or a JSON document's records) -> `checked`, through the one SQL checker."""
    sql = jsonl_sql.checked_sql(cfg.scrub_secrets)
    for table in tables:
        def fill(con, table=table):
            con.register("lines", table)
            try:
                con.execute(sql)
            finally:
                con.unregister("lines")
            return False
        yield fill


OTEL_COLUMNS = ["line", "source_format", "src_id", "ts", "model", "messages", "response", "tool_calls", "tools",
                "params", "usage", "metadata", "feedback", "error", "raw"]


def rows_fill(rows: list[dict]) -> Callable:
    """OTel rows (traces.otel.rows, already canonical) -> `pre`."""
    import pyarrow as pa
    types = {"line": pa.int64(), "ts": pa.timestamp("us")}
    table = pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.string())) for c in OTEL_COLUMNS})

    def fill(con):
        con.register("rows_in", table)
        try:
            con.execute("CREATE OR REPLACE TEMP TABLE pre AS SELECT * FROM rows_in")
        finally:
            con.unregister("rows_in")
        return True
    return fill


PARQUET_COLUMNS = {"trace_id": "src_id", "ts": "ts", "model": "model", "messages": "messages",
                   "response": "response", "tool_calls": "tool_calls", "tools": "tools", "params": "params",
                   "usage": "usage", "metadata": "metadata", "feedback": "feedback"}
JSON_COLUMNS = {"messages", "tool_calls", "tools", "params", "usage", "metadata", "feedback"}


def _parquet_select(types: dict[str, str]) -> str:
    """The store's columns from a Parquet batch, whatever Arrow types it used (lists of structs -> JSON)."""
    select = []
    for col, alias in PARQUET_COLUMNS.items():
        t = types.get(col)
        if t is None:
            expr = "NULL::TIMESTAMP" if col == "ts" else "NULL::VARCHAR"
        elif col == "ts":
            expr = _ts_expr(f"p.{col}", t)
        elif col in JSON_COLUMNS and t not in ("VARCHAR", "JSON"):
            expr = f"to_json(p.{col})::VARCHAR"
        else:
            expr = f"TRY_CAST(p.{col} AS VARCHAR)"
        select.append(f"{expr} AS {alias}")
    return ", ".join(select)


def _ts_expr(col: str, t: str) -> str:
    if t.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"timezone('UTC', {col})"
    if t.startswith(("TIMESTAMP", "DATE")):
        return f"{col}::TIMESTAMP"
    if t in ("VARCHAR", "JSON"):
        return f"iso_ts({col})"
    return f"try(epoch_ts({col}::DOUBLE))"


def parquet_fills(path: Path, batch_lines: int) -> Iterator[Callable]:
    """Store-layout Parquet (has `response`) -> `pre`; any other Parquet -> its rows as JSON records."""
    import pyarrow.parquet as pq
    first_row = 1
    # an object in object storage is read by ranges (footer, then row groups), never downloaded whole
    source = path.arrow_file() if hasattr(path, "arrow_file") else path
    for batch in pq.ParquetFile(source).iter_batches(batch_size=batch_lines):
        def fill(con, batch=batch, first=first_row):
            con.register("pq", batch)
            try:
                types = {r[0]: r[1] for r in con.execute("DESCRIBE SELECT * FROM pq").fetchall()}
                if "response" not in types:
                    con.execute(f"""CREATE OR REPLACE TEMP TABLE lines AS
                                    SELECT {first - 1} + row_number() OVER () AS line, to_json(p)::VARCHAR AS raw
                                    FROM pq p""")
                    return None  # rows are records: the JSONL checker reads them
                error = "'parquet file has no column `messages`'" if "messages" not in types else "NULL"
                con.execute(f"""CREATE OR REPLACE TEMP TABLE pre AS
                    SELECT {first - 1} + row_number() OVER () AS line, 'parquet' AS source_format,
                           {_parquet_select(types)}, {error}::VARCHAR AS error, to_json(p)::VARCHAR AS raw
                    FROM pq p""")
                return True
            finally:
                con.unregister("pq")
        first_row += batch.num_rows
        yield fill
