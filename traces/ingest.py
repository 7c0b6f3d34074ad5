"""python -m traces ingest [PATH ...] [--holdout-fraction F] [--group-key K] [--no-scrub] [--redact-pii]

Load LLM call logs into the `traces` table. With no PATH, ingests the files in the inbox folder
(`[tool.mend.traces] inbox`) whose sha256 is not yet in `ingests` with status `complete`.
Folders are walked for *.jsonl, *.ndjson, *.json, *.parquet (and .gz of the JSON ones).

Formats (decided per file from its first JSON value, not its name): OpenAI Chat Completions logs and
`{"messages": [...]}` records, one per line (JSONL), or as one pretty-printed object or a JSON array
(traces.jsonl_sql); OTel spans as OTLP JSON: GenAI semantic conventions, openllmetry, OpenInference
(traces.otel); Parquet with the store's columns, or any Parquet whose rows are such records (the Hugging
Face chat layout: `messages` as a list of structs). CSV is refused (no standard layout for chat logs).

Every item read is stored, a duplicate of a stored trace (same id and same content), quarantined with
its file, line and the field at fault, or skipped with a reason (spans that are not LLM calls): per
file, read = stored + duplicate + quarantined + skipped. Items are inserted in batches of `batch_lines`,
each in one transaction that is committed, and the database is released between batches, so other
commands wait one batch, not one file; Ctrl-C leaves no half batch (exit 130), and running the command
again resumes (ids are keys). A file that cannot be read (a truncated .gz, a CSV) is marked `failed`
with the reason and the others are still ingested (exit 1).
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import gzip
import hashlib
import json
import os
import re
import socket
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from traces import canonical, jsonl_sql, otel, settings, store

CHUNK_BYTES = 16 << 20  # read 16 MiB at a time; lines are regrouped into batches of batch_lines
SUFFIXES = (".jsonl", ".json", ".ndjson", ".parquet", ".jsonl.gz", ".json.gz", ".ndjson.gz")
REFUSED = (".csv", ".tsv", ".csv.gz", ".tsv.gz", ".xlsx", ".xls")
FIRST_LINE_MAX = 64 << 20  # a first line longer than this is not probed as one JSON value
READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


class IngestError(Exception):
    """A file that cannot be ingested (its message names the file, and the line where it applies)."""


@dataclass
class FileSummary:
    path: str
    format: str
    ingest_id: str
    counts: canonical.BatchCounts = field(default_factory=canonical.BatchCounts)
    skipped: Counter = field(default_factory=Counter)  # reason -> items read that are not LLM calls
    seconds: float = 0.0
    status: str = "complete"  # complete | skipped (already ingested) | failed
    error: str | None = None  # why it failed


def check_settings(cfg) -> None:
    """Values that would hang the reader or make the split meaningless are refused before any work."""
    if not isinstance(cfg.batch_lines, int) or cfg.batch_lines < 1:
        raise settings.SettingsError(f"batch_lines must be a whole number >= 1, got {cfg.batch_lines!r} "
                                     "(flag --batch-lines, MEND_TRACES_BATCH_LINES or [tool.mend.traces])")
    if not 0.0 <= float(cfg.holdout_fraction) <= 1.0:
        raise settings.SettingsError(f"holdout_fraction must be between 0 and 1, got {cfg.holdout_fraction!r} "
                                     "(flag --holdout-fraction, MEND_TRACES_HOLDOUT_FRACTION or [tool.mend.traces])")


# ---------- reading ----------

def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _open_raw(path: Path):
    raw = open(path, "rb")
    return raw, (gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw)


class _Unreadable(Exception):
    """The byte stream broke (truncated or corrupt compression); the caller knows the line."""


def _read(f, n: int) -> bytes:
    """Up to n bytes; a corrupt or truncated compressed stream raises _Unreadable once what was
    decompressed before the break has been returned (read1 hands it over piece by piece)."""
    if getattr(f, "mend_broken", None):
        raise _Unreadable(f.mend_broken)
    if not isinstance(f, gzip.GzipFile):
        return f.read(n)
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


def detect_format(path: Path) -> str:
    """jsonl (one record per line) | json (one document: an object or an array) | otel | parquet.

    Decided by the file's first JSON value, so that a chat log that mentions "resourceSpans" is not OTel."""
    name = path.name.lower()
    if name.endswith(REFUSED):
        raise IngestError(f"{path}: CSV/spreadsheet files are not read (no standard layout for chat logs); "
                          "export JSONL (one JSON object per line) or Parquet")
    if name.endswith(".parquet"):
        return "parquet"
    line = _first_line(path)
    if line.strip() and _incomplete(line):
        doc, _ = otel._loads(_read_text(path))
        return "otel" if otel.is_export_request(doc) else "json"
    try:
        first = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return "jsonl"
    return "otel" if otel.is_export_request(first) else "json" if isinstance(first, list) else "jsonl"


def _read_text(path: Path) -> str:
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

    Text that cannot be parsed ends the document there: it is yielded whole from that point, and the
    checker quarantines it as invalid JSON at that line (nothing after it is silently dropped)."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    i = _skip_ws(text, 0)
    while i is not None and i < len(text):
        if text[i] == "[":
            i = yield from _array_items(text, i, line_of)
        else:
            end = _value_end(text, i)
            yield line_of(i), text[i:end or len(text)]
            i = end
        i = _skip_ws(text, i) if i is not None else None


def _value_end(text: str, i: int) -> int | None:
    try:
        return json.JSONDecoder().raw_decode(text, i)[1]
    except (json.JSONDecodeError, RecursionError):
        return None


def _array_items(text: str, i: int, line_of):
    """Yield an array's items; return the index after its `]`, or None when it breaks off (rest yielded)."""
    i = _skip_ws(text, i + 1)
    while i < len(text) and text[i] != "]":
        end = _value_end(text, i)
        yield line_of(i), text[i:end or len(text)]
        if end is None:
            return None
        i = _skip_ws(text, end)
        if text.startswith(",", i):
            i = _skip_ws(text, i + 1)
        elif not text.startswith("]", i):
            # neither "," nor "]": the rest is not part of a valid array (quarantined as invalid JSON)
            yield line_of(i), text[i:] if text[i:].strip() else "(end of file: the JSON array is not closed)"
            return None
    return i + 1 if i < len(text) else None


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _record_batches(path: Path, batch_lines: int) -> Iterator["object"]:
    """A JSON document's records as `lines` tables, as line_batches gives for JSONL."""
    import pyarrow as pa
    records = list(document_records(_read_text(path)))
    for start in range(0, len(records), batch_lines):
        part = records[start:start + batch_lines]
        yield pa.table({"line": pa.array([n for n, _ in part], pa.int64()),
                        "raw": pa.array([r for _, r in part], pa.large_string())})


# ---------- storing ----------

def _connect(cfg):
    """A short connection per batch: between batches other readers and writers get the database."""
    return store.connect(timeout_s=cfg.busy_timeout_s)


def _begin(cfg, path: Path, sha: str, fmt: str) -> str:
    ingest_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]
    with _connect(cfg) as con:
        con.execute("""INSERT INTO ingests (ingest_id, source_file, file_sha256, source_format, n_read, n_stored,
                       n_duplicate, n_quarantined, n_skipped, started_at, status, pid, host)
                       VALUES (?, ?, ?, ?, 0, 0, 0, 0, 0, now(), 'running', ?, ?)""",
                    [ingest_id, str(path), sha, fmt, os.getpid(), socket.gethostname()])
    return ingest_id


def _record(con, s: FileSummary, status: str | None = None) -> None:
    c = s.counts
    con.execute("""UPDATE ingests SET n_read = ?, n_stored = ?, n_duplicate = ?, n_quarantined = ?, n_skipped = ?,
                   skipped = ?, error = ?, source_format = ?, status = coalesce(?, status),
                   finished_at = CASE WHEN ? IS NULL THEN finished_at ELSE now() END
                   WHERE ingest_id = ?""",
                [c.read, c.stored, c.duplicate, c.quarantined, c.skipped, json.dumps(dict(s.skipped)) if s.skipped
                 else None, s.error, s.format, status, status, s.ingest_id])


def _finish(cfg, s: FileSummary, status: str) -> None:
    s.status = status
    with _connect(cfg) as con:
        _record(con, s, status)


def fail_stale(con) -> int:
    """Mark `running` rows whose process is gone (killed, machine rebooted) as failed; returns how many.

    Only this host's processes can be checked; a row from before pids were recorded is stale when we
    hold the database (the ingest of that time held it for the whole file)."""
    host, stale = socket.gethostname(), []
    for ingest_id, pid, row_host in con.execute(
            "SELECT ingest_id, pid, host FROM ingests WHERE status = 'running'").fetchall():
        if pid is None or (row_host == host and pid != os.getpid() and not _alive(pid)):
            stale.append((ingest_id, pid))
    for ingest_id, pid in stale:
        con.execute("""UPDATE ingests SET status = 'failed', finished_at = now(), error = ? WHERE ingest_id = ?""",
                    [f"interrupted: process {pid or '?'} stopped before the file was finished (found by a later "
                     "ingest); its stored batches are kept, ingest the file again to resume", ingest_id])
    return len(stale)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _store_batches(cfg, summary: FileSummary, fills: Iterator[Callable]) -> None:
    """Each fill(con) builds `pre` (returns True) or `checked` (returns False); each batch commits alone."""
    for fill in fills:
        with _connect(cfg) as con:
            canonical.install_macros(con)
            with store.transaction(con):
                from_pre = fill(con)
                counts = canonical.store_batch(con, cfg, summary.path, summary.ingest_id, from_pre, from_pre)
                summary.counts.add(counts)
                _record(con, summary)


def _jsonl_fills(cfg, tables) -> Iterator[Callable]:
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


def _ingest_jsonl(cfg, path: Path, summary: FileSummary, progress) -> None:
    _store_batches(cfg, summary, _jsonl_fills(cfg, line_batches(path, cfg.batch_lines, progress)))


def _ingest_json(cfg, path: Path, summary: FileSummary, progress) -> None:
    _store_batches(cfg, summary, _jsonl_fills(cfg, _record_batches(path, cfg.batch_lines)))


OTEL_COLUMNS = ["line", "source_format", "src_id", "ts", "model", "messages", "response", "tool_calls", "tools",
                "params", "usage", "metadata", "feedback", "error", "raw"]


def _rows_fill(rows: list[dict]) -> Callable:
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


def _ingest_otel(cfg, path: Path, summary: FileSummary, progress) -> None:
    rows, skipped = otel.rows(_read_text(path))
    summary.skipped, n = skipped, sum(skipped.values())
    summary.counts.add(canonical.BatchCounts(read=n, skipped=n))
    chunks = [rows[i:i + cfg.batch_lines] for i in range(0, len(rows), cfg.batch_lines)]
    _store_batches(cfg, summary, (_rows_fill(chunk) for chunk in chunks))
    if not rows:  # only skipped spans: still record the counts
        with _connect(cfg) as con:
            _record(con, summary)


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


def _parquet_fills(path: Path, batch_lines: int) -> Iterator[Callable]:
    """Store-layout Parquet (has `response`) -> `pre`; any other Parquet -> its rows as JSON records."""
    import pyarrow.parquet as pq
    first_row = 1
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_lines):
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


def _ingest_parquet(cfg, path: Path, summary: FileSummary, progress) -> None:
    sql = jsonl_sql.checked_sql(cfg.scrub_secrets)

    def records_or_pre(fill):
        def run(con):
            from_pre = fill(con)
            if from_pre is None:
                con.execute(sql)
                return False
            return from_pre
        return run
    _store_batches(cfg, summary, (records_or_pre(f) for f in _parquet_fills(path, cfg.batch_lines)))


READERS = {"jsonl": _ingest_jsonl, "json": _ingest_json, "otel": _ingest_otel, "parquet": _ingest_parquet}


def ingest_file(path: Path, cfg=None, sha: str | None = None, progress=None) -> FileSummary:
    """Ingest one file; returns its summary (status `failed` with `error` when it cannot be read).

    Ctrl-C marks the ingest failed and raises KeyboardInterrupt (DuckDB's own interrupt included)."""
    import time

    import duckdb
    cfg = cfg or settings.load("traces")
    check_settings(cfg)
    path = Path(path).resolve()
    sha = sha or sha256_file(path)
    start = time.perf_counter()
    summary = FileSummary(str(path), "?", _begin(cfg, path, sha, "?"))
    try:
        summary.format = detect_format(path)
        READERS[summary.format](cfg, path, summary, progress)
    except IngestError as e:
        summary.error = str(e)
        _finish(cfg, summary, "failed")
    except (KeyboardInterrupt, duckdb.InterruptException):
        summary.error = "interrupted (Ctrl-C); the batches committed before it are kept"
        _finish(cfg, summary, "failed")
        raise KeyboardInterrupt from None
    except BaseException as e:
        summary.error = f"{path}: {type(e).__name__}: {e}"
        _finish(cfg, summary, "failed")
        raise
    else:
        _finish(cfg, summary, "complete")
    summary.seconds = time.perf_counter() - start
    return summary


def expand(paths: list[str | Path]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            # refused formats are listed too, so that a CSV dropped in the inbox is reported, not ignored
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.name.lower().endswith(SUFFIXES + REFUSED))
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"no such file: {p}")
    return out


def completed_hashes() -> set[str]:
    with store.connect() as con:
        fail_stale(con)
        return {r[0] for r in con.execute("SELECT file_sha256 FROM ingests WHERE status = 'complete'").fetchall()}


def ingest_paths(paths: list[str | Path], cfg=None, skip_done: bool = False, console=None) -> list[FileSummary]:
    """The Python entry point (nightly uses it): ingest files, or the inbox's new files with skip_done.

    A file that cannot be read comes back with status `failed` and its error; the others are ingested."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
    cfg = cfg or settings.load("traces")
    check_settings(cfg)
    files = expand(paths)
    done = completed_hashes()
    done = done if skip_done else set()
    summaries = []
    for path in files:
        sha = sha256_file(path)
        if sha in done:
            summaries.append(FileSummary(str(path.resolve()), "-", "-", status="skipped"))
            continue
        size = path.stat().st_size
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                      disable=size < (8 << 20)) as bar:
            task = bar.add_task(path.name, total=size)
            summaries.append(ingest_file(path, cfg, sha, lambda n: bar.update(task, completed=n)))
        done.add(sha)
    return summaries


def ingest_inbox(cfg=None, console=None) -> list[FileSummary]:
    cfg = cfg or settings.load("traces")
    inbox = settings.resolve_path(cfg.inbox)
    if not inbox.is_dir():
        return []
    return ingest_paths([inbox], cfg, skip_done=True, console=console)


def summary_table(summaries: list[FileSummary]):
    """One row per file: read = stored + duplicate (dup) + quarantined (quar) + skipped (skip)."""
    from rich.markup import escape
    from rich.table import Table
    table = Table(title="ingest (read = stored + dup + quar + skip)")
    for col in ("file", "format", "read", "stored", "dup", "quar", "skip", "traces/s", "status"):
        table.add_column(col, justify="left" if col in ("file", "format", "status") else "right",
                         overflow="fold", no_wrap=col != "file")
    for s in summaries:
        c = s.counts
        rate = f"{c.read / s.seconds:,.0f}" if s.seconds and c.read else ""
        status = s.status + ("" if c.reconciles() else " [red](does not reconcile)[/]")
        table.add_row(escape(Path(s.path).name), s.format, f"{c.read:,}", f"{c.stored:,}", f"{c.duplicate:,}",
                      f"{c.quarantined:,}", f"{c.skipped:,}", rate, status)
    return table


def skipped_note(summaries: list[FileSummary]) -> str:
    reasons = sum((s.skipped for s in summaries), Counter())
    return "\n".join(f"skipped {n:,}: {reason}" for reason, n in reasons.most_common())


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces ingest", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="files or folders (default: new files in the inbox)")
    ap.add_argument("--holdout-fraction", type=float, default=None, help="share of split groups held out, 0-1")
    ap.add_argument("--group-key", default=None)
    ap.add_argument("--no-scrub", dest="scrub_secrets", action="store_const", const=False, default=None)
    ap.add_argument("--redact-pii", action="store_const", const=True, default=None)
    ap.add_argument("--batch-lines", type=_positive_int, default=None, help="items per committed batch (>= 1)")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.markup import escape
    console = Console()
    flags = {k: v for k, v in vars(args).items() if k != "paths"}
    cfg = settings.load("traces", flags)
    summaries = ingest_paths(args.paths, cfg, console=console) if args.paths else ingest_inbox(cfg, console)
    if not summaries:
        console.print(f"nothing to ingest (inbox {settings.resolve_path(cfg.inbox)} has no new files)")
        return 0
    console.print(summary_table(summaries))
    if skipped_note(summaries):
        console.print(escape(skipped_note(summaries)))
    if any(s.counts.quarantined for s in summaries):
        console.print("quarantined lines by reason, file and line: [cyan]python -m traces stats[/]; "
                      "the lines of one file: [cyan]python -m traces quarantine FILE[/]")
    failed = [s for s in summaries if s.status == "failed"]
    for s in failed:
        Console(stderr=True).print(f"[red]error:[/] {escape(s.error or s.path)}", highlight=False)
    return 1 if failed else 0
