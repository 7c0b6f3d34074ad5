"""python -m traces ingest [PATH ...] [--holdout-fraction F] [--group-key K] [--no-scrub] [--redact-pii]

Load LLM call logs into the `traces` table. With no PATH, ingests the files in the inbox folder
(`[tool.mend.traces] inbox`) whose sha256 is not yet in `ingests` with status `complete` (one whose path, size
and mtime match such a row is skipped without being read).
Folders are walked for *.jsonl, *.ndjson, *.json, *.parquet (and .gz of the JSON ones); Hive `key=value` folders
below the one named (`traffic/day=2026-12-01/part-0.parquet`) add their values to each record's metadata. PATH and
the inbox may be `s3://bucket/prefix/` (an object, or every object under it; traces.locations) or an http(s) URL of
one file (traces.http_input): they are streamed (Parquet over http is downloaded to a temporary file first), and the
inbox's are skipped by URL, size and last-modified time (and ETag, over http) once ingested completely.

Formats (decided per file from its first JSON value, not its name): OpenAI Chat Completions logs and
`{"messages": [...]}` records, one per line (JSONL), or as one pretty-printed object or a JSON array
(traces.jsonl_sql); OTel spans as OTLP JSON: GenAI semantic conventions, openllmetry, OpenInference
(traces.otel); Arize Phoenix's span JSON (its REST API's answer, or spans one per line; traces.phoenix);
simonw/llm's `llm logs --json` (traces.llm_logs); Langfuse observations, GENERATIONs (traces.langfuse); Parquet
with the store's columns, or any Parquet whose rows are such records (the Hugging Face chat layout: `messages` as
a list of structs). CSV is refused (no standard layout for chat logs).

Every item read is stored, a duplicate of a stored trace (same id and same content), quarantined with
its file, line and the field at fault, or skipped with a reason (spans that are not LLM calls): per
file, read = stored + duplicate + quarantined + skipped. Items are inserted in batches of `batch_lines`,
each in one transaction that is committed, and the database is released between batches, so other
commands wait one batch, not one file; Ctrl-C leaves no half batch (exit 130), and running the command
again resumes (ids are keys). The counts follow what was committed: a batch whose COMMIT fails (a full
disk) is not counted. A file that cannot be read (no permission, a truncated .gz, a CSV), or whose ingest
breaks in any other way, is marked `failed` with a reason that names it, and the others are still ingested
(exit 1); a file read whole whose every item was quarantined stored nothing (exit 3). Within a file, a bad item is quarantined alone: a malformed span, a JSON array item or document
that does not parse (reading resumes after it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import socket
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from traces import canonical, jsonl_sql, locations, otel_stream, readers, scrub, settings, store
from traces.hashing import sha256_file
from traces.readers import IngestError
from traces.store import pid_alive
from traces.terminal import safe


@dataclass
class FileSummary:
    path: str
    format: str
    ingest_id: str
    counts: canonical.BatchCounts = field(default_factory=canonical.BatchCounts)
    skipped: Counter = field(default_factory=Counter)  # reason -> items read that are not LLM calls
    seconds: float = 0.0
    status: str = "running"  # running | complete | skipped (already ingested) | failed
    error: str | None = None  # why it failed
    sha256: str = ""  # the file's identity in `ingests`, with its stat when it was hashed (size, mtime_ns)
    size: int | None = None
    mtime_ns: int | None = None
    partitions: dict = field(default_factory=dict)  # Hive `key=value` folders above the file: into each metadata
    started: float = field(default_factory=time.perf_counter)


def check_settings(cfg) -> None:
    """Values that would hang the reader or make the split meaningless are refused before any work."""
    if not isinstance(cfg.batch_lines, int) or cfg.batch_lines < 1:
        raise settings.SettingsError(f"batch_lines must be a whole number >= 1, got {cfg.batch_lines!r} "
                                     "(flag --batch-lines, MEND_TRACES_BATCH_LINES or [tool.mend.traces])")
    if not 0.0 <= float(cfg.holdout_fraction) <= 1.0:
        raise settings.SettingsError(f"holdout_fraction must be between 0 and 1, got {cfg.holdout_fraction!r} "
                                     "(flag --holdout-fraction, MEND_TRACES_HOLDOUT_FRACTION or [tool.mend.traces])")


# ---------- storing ----------

def _connect(cfg):
    """A short connection per batch: between batches other readers and writers get the database."""
    return store.connect(timeout_s=cfg.busy_timeout_s)


def _new_ingest_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _record(con, s: FileSummary, status: str = "running", batch: canonical.BatchCounts | None = None) -> None:
    """Write the file's `ingests` row with its counts (plus `batch`, which commits with this row or not at all).

    The row is inserted by the file's first write (its first batch, or its end) and updated by the later ones: a
    `running` row written on a connection of its own cost a store open per file (issue 25 finding 10)."""
    c = s.counts.plus(batch) if batch else s.counts
    con.execute("""INSERT INTO ingests (ingest_id, source_file, file_sha256, file_size, file_mtime_ns, pid, host,
                   started_at, source_format, n_read, n_stored, n_duplicate, n_quarantined, n_skipped, skipped,
                   error, status, finished_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, now() - to_microseconds(?), ?, ?, ?, ?, ?, ?, ?, ?, ?,
                           CASE WHEN ? = 'running' THEN NULL ELSE now() END)
                   ON CONFLICT (ingest_id) DO UPDATE SET source_format = excluded.source_format,
                   n_read = excluded.n_read, n_stored = excluded.n_stored, n_duplicate = excluded.n_duplicate,
                   n_quarantined = excluded.n_quarantined, n_skipped = excluded.n_skipped,
                   skipped = excluded.skipped, error = excluded.error, status = excluded.status,
                   finished_at = excluded.finished_at""",
                [s.ingest_id, s.path, s.sha256, s.size, s.mtime_ns, os.getpid(), socket.gethostname(),
                 int((time.perf_counter() - s.started) * 1e6),  # started when the file's work began
                 s.format, c.read, c.stored, c.duplicate, c.quarantined, c.skipped,
                 json.dumps(dict(s.skipped)) if s.skipped else None, s.error, status, status])


def _finish(cfg, s: FileSummary, status: str) -> None:
    s.status = status
    s.error = scrub.scrub_text(s.error, cfg.scrub_secrets, cfg.redact_pii, plain=True)  # a crash may quote the value at fault
    with _connect(cfg) as con:
        _record(con, s, status)


def fail_stale(con) -> int:
    """Mark `running` rows whose process is gone (killed, machine rebooted) as failed; returns how many.

    Only this host's processes can be checked; a row from before pids were recorded is stale when we
    hold the database (the ingest of that time held it for the whole file)."""
    host, stale = socket.gethostname(), []
    for ingest_id, pid, row_host in con.execute(
            "SELECT ingest_id, pid, host FROM ingests WHERE status = 'running'").fetchall():
        if pid is None or (row_host == host and pid != os.getpid() and not pid_alive(pid)):
            stale.append((ingest_id, pid))
    for ingest_id, pid in stale:
        con.execute("""UPDATE ingests SET status = 'failed', finished_at = now(), error = ? WHERE ingest_id = ?""",
                    [f"interrupted: process {pid or '?'} stopped before the file was finished (found by a later "
                     "ingest); its stored batches are kept, ingest the file again to resume", ingest_id])
    return len(stale)


def _store_batches(cfg, summary: FileSummary, fills: Iterator[Callable]) -> None:
    """Each fill(con) builds `pre` (returns True) or `checked` (returns False); each batch commits alone, and the
    last one commits with the file's `complete` (a one-batch file: one store open in all)."""
    for fill, last in _flag_last(fills):
        status = "complete" if last else "running"
        with _connect(cfg) as con:
            canonical.install_macros(con)
            with store.transaction(con):
                from_pre = fill(con)
                if summary.partitions:
                    _add_partitions(con, "pre" if from_pre else "checked", summary.partitions)
                counts = canonical.store_batch(con, cfg, summary.path, summary.ingest_id, from_pre, from_pre)
                _record(con, summary, status, batch=counts)
            summary.counts.add(counts)  # only once committed: a failed COMMIT (a full disk) stored nothing
            summary.status = status


def _add_partitions(con, table: str, values: dict) -> None:
    """Hive partition values (`day=2026-12-01/` above the file) join each record's metadata, so that suites and
    stats can select by them; a field of the record's own metadata wins."""
    con.execute(f"""UPDATE {table} SET metadata = CASE WHEN metadata IS NULL THEN $p
                    WHEN json_valid(metadata) AND json_type(metadata) = 'OBJECT'
                    THEN json_merge_patch($p, metadata)::VARCHAR ELSE metadata END""", {"p": json.dumps(values)})


_END = object()


def _flag_last(items: Iterator) -> Iterator[tuple]:
    """(item, is_last): the next item is read (with the database closed) before this one is handed out. When reading
    it fails (a truncated .gz, Ctrl-C), this one is still handed out, not as the last, and the error raised after."""
    items = iter(items)
    item = next(items, _END)
    while item is not _END:
        try:
            after = next(items, _END)
        except BaseException as e:
            yield item, False
            raise e
        yield item, after is _END
        item = after


def _ingest_jsonl(cfg, path: Path, summary: FileSummary, progress) -> None:
    tables = readers.line_batches(path, cfg.batch_lines, progress)
    _store_batches(cfg, summary, readers.jsonl_fills(cfg, tables))


def _ingest_json(cfg, path: Path, summary: FileSummary, progress) -> None:
    tables = readers.record_batches(path, cfg.batch_lines)
    _store_batches(cfg, summary, readers.jsonl_fills(cfg, tables))


def _ingest_otel(cfg, path: Path, summary: FileSummary, progress) -> None:
    skipped = Counter()
    _store_spans(cfg, summary, otel_stream.rows(path, skipped), skipped)


def _records_ingester(module) -> Callable:
    """A record format (Phoenix spans, llm logs, Langfuse observations): its rows, its skipped items counted."""
    def run(cfg, path: Path, summary: FileSummary, progress) -> None:
        _store_spans(cfg, summary, *module.rows(readers.paged_records(readers.read_text(path))))
    return run


def _store_spans(cfg, summary: FileSummary, rows: Iterator[dict], skipped: Counter) -> None:
    """Canonical span rows in batches, read as they are stored; the spans that are not LLM calls (counted in
    `skipped` by the reader as it goes) counted as read and skipped before each batch and at the end."""
    summary.skipped = skipped

    def count_skipped():
        n = sum(skipped.values()) - summary.counts.skipped
        summary.counts.add(canonical.BatchCounts(read=n, skipped=n))

    def fills():
        it = iter(rows)
        while chunk := list(itertools.islice(it, cfg.batch_lines)):  # itertools.batched: Python 3.12
            count_skipped()
            yield readers.rows_fill(chunk)
        count_skipped()  # read ahead by _flag_last: before the last batch commits
    _store_batches(cfg, summary, fills())
    count_skipped()  # only skipped spans: no batch, _finish counts


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
    _store_batches(cfg, summary, (records_or_pre(f) for f in readers.parquet_fills(path, cfg.batch_lines)))


# per format: its reader (traces.readers) feeding the batch store above
INGESTERS = {"jsonl": _ingest_jsonl, "json": _ingest_json, "otel": _ingest_otel, "parquet": _ingest_parquet,
             **{name: _records_ingester(module) for name, module in readers.RECORD_FORMATS.items()}}


def ingest_file(path: Path, cfg=None, sha: str | None = None, progress=None, stat=None,
                partitions: dict | None = None) -> FileSummary:
    """Ingest one file (or an object in object storage: traces.locations); returns its summary (status `failed`
    with `error` when it cannot be read). `sha` and `stat` (os.stat_result): the file's, when the caller has them
    (stat taken before hashing); `partitions`: the Hive values of its folders, added to each record's metadata.

    Ctrl-C marks the ingest failed and raises KeyboardInterrupt (DuckDB's own interrupt included)."""
    import duckdb
    cfg = cfg or settings.load("traces")
    check_settings(cfg)
    path = path if locations.is_remote(path) else Path(path).resolve()
    try:
        stat = stat or path.stat()  # before hashing: a file changed meanwhile does not match next time
        sha = sha or _identity(path)
    except OSError as e:
        return _unopenable(cfg, path, e)
    summary = FileSummary(str(path), "?", _new_ingest_id(), sha256=sha, size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                          partitions=partitions or {})
    try:
        summary.format = readers.detect_format(path)
        INGESTERS[summary.format](cfg, path, summary, progress)
    except IngestError as e:
        summary.error = str(e)
        _finish(cfg, summary, "failed")
    except (KeyboardInterrupt, duckdb.InterruptException):
        summary.error = "interrupted (Ctrl-C); the batches committed before it are kept"
        _finish(cfg, summary, "failed")
        raise KeyboardInterrupt from None
    except Exception as e:  # noqa: BLE001 - one file's fault must not stop the files after it
        summary.error = f"{path}: {type(e).__name__}: {e}"
        _finish(cfg, summary, "failed")
    else:
        if summary.status != "complete":  # no batch, or no last one (only skipped spans, an empty file)
            _finish(cfg, summary, "complete")
    summary.seconds = time.perf_counter() - summary.started
    return summary


def _unopenable(cfg, path: Path, e: OSError) -> FileSummary:
    """A file that cannot even be opened (no permission, gone since it was listed): a failed row naming it."""
    summary = FileSummary(str(path), "?", _new_ingest_id(),
                          error=f"{path}: cannot read the file: {e.strerror or type(e).__name__}")
    _finish(cfg, summary, "failed")
    return summary


def _identity(path) -> str:
    """A local file's sha256; a remote file's URL, size, mtime (and ETag) (hashing would read it twice: locations)."""
    return path.identity if locations.is_remote(path) else sha256_file(path)


def completed_files() -> list[tuple]:
    """(sha256, path, size, mtime_ns) of every file ingested completely, its stat as when it was hashed."""
    with store.connect() as con:
        fail_stale(con)
        return con.execute("""SELECT file_sha256, source_file, file_size, file_mtime_ns FROM ingests
                              WHERE status = 'complete'""").fetchall()


def _note_stat(path: Path, sha: str, st) -> None:
    """A file hashed again only to find its bytes ingested (touched, or ingested before m013): its ingest row
    takes the new stat, so the next run skips it unread."""
    with store.connect() as con:
        con.execute("""UPDATE ingests SET file_size = ?, file_mtime_ns = ?
                       WHERE status = 'complete' AND file_sha256 = ? AND source_file = ?""",
                    [st.st_size, st.st_mtime_ns, sha, str(path)])


def ingest_paths(paths: list[str | Path], cfg=None, skip_done: bool = False, console=None) -> list[FileSummary]:
    """The Python entry point (nightly uses it): ingest files, or the inbox's new files with skip_done.

    A file that cannot be read comes back with status `failed` and its error; the others are ingested."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn, TransferSpeedColumn
    cfg = cfg or settings.load("traces")
    check_settings(cfg)
    files = locations.expand(paths, cfg)
    rows = completed_files()
    rows = rows if skip_done else []
    done, at_path = {r[0] for r in rows}, {r[:2] for r in rows}
    unchanged = {r[1:] for r in rows}  # (path, size, mtime_ns); a NULL stat (before m013) matches no file
    summaries = []
    for path, partitions in files:
        try:
            # size and mtime as when it was ingested: skipped unread (rsync's quick check; the bytes are read again
            # once either changes, and the content hash stays the file's identity)
            st, local = path.stat(), not locations.is_remote(path)  # a remote identity is its stat: no quick check
            if local and (str(path), st.st_size, st.st_mtime_ns) in unchanged:
                summaries.append(FileSummary(str(path), "-", "-", status="skipped"))
                continue
            sha, size = _identity(path), st.st_size
        except OSError as e:
            summaries.append(_unopenable(cfg, path, e))
            continue
        if sha in done:
            summaries.append(FileSummary(str(path), "-", "-", status="skipped"))
            if local and (sha, str(path)) in at_path:
                _note_stat(path, sha, st)
            continue
        with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=True,
                      disable=(size or 0) < (8 << 20)) as bar:  # an http body may come with no size
            task = bar.add_task(safe(path.name), total=size)
            summaries.append(ingest_file(path, cfg, sha, lambda n: bar.update(task, completed=n), st, partitions))
        if summaries[-1].status == "complete":  # a copy of a failed file (a .csv refused by its name) is still read
            done.add(sha)
    return summaries


def ingest_inbox(cfg=None, console=None) -> list[FileSummary]:
    cfg = cfg or settings.load("traces")
    if locations.is_url(cfg.inbox):  # s3://bucket/prefix: its new objects (skipped by URL, size and mtime)
        return ingest_paths([cfg.inbox], cfg, skip_done=True, console=console)
    inbox = settings.resolve_path(cfg.inbox)
    if not inbox.is_dir():
        return []
    return ingest_paths([inbox], cfg, skip_done=True, console=console)


def summary_table(summaries: list[FileSummary]):
    """One row per file: read = stored + duplicate (dup) + quarantined (quar) + skipped (skip)."""
    from rich.table import Table
    table = Table(title="ingest (read = stored + dup + quar + skip)")
    for col in ("file", "format", "read", "stored", "dup", "quar", "skip", "traces/s", "status"):
        table.add_column(col, justify="left" if col in ("file", "format", "status") else "right",
                         overflow="fold", no_wrap=col != "file")
    for s in summaries:
        c = s.counts
        rate = f"{c.read / s.seconds:,.0f}" if s.seconds and c.read else ""
        status = s.status + ("" if c.reconciles() else " [red](does not reconcile)[/]")
        table.add_row(safe(Path(s.path).name), s.format, f"{c.read:,}", f"{c.stored:,}", f"{c.duplicate:,}",
                      f"{c.quarantined:,}", f"{c.skipped:,}", rate, status)
    return table


def skipped_note(summaries: list[FileSummary]) -> str:
    reasons = sum((s.skipped for s in summaries), Counter())
    return "\n".join(f"skipped {n:,}: {reason}" for reason, n in reasons.most_common())


EXIT_CODES = """exit codes:
  0    every file was ingested (stored traces, or held only duplicates, non-LLM spans or no items at all)
  1    a file could not be read or its ingest broke: it is marked failed and named on stderr, the other files
       are still ingested (also any crash, with its traceback)
  2    a fixable error stopped it (one line on stderr): a path that does not exist, a bad flag or setting,
       a database that cannot be opened or stays busy; the batches committed before it are kept
  3    a file was read but stored nothing: its items were quarantined (or skipped as not LLM calls), none
       stored or duplicate (named on stderr; the lines: `python -m traces quarantine FILE`); a failed file: 1
  130  Ctrl-C: the batches committed before it are kept; run again to resume"""


def stored_nothing(s: FileSummary) -> bool:
    """Read, yet not one trace kept: every item was quarantined (a wrong format, a broken exporter), which a
    script must not take for success. Duplicates (a re-run) and non-LLM spans are not failures."""
    c = s.counts
    return s.status == "complete" and c.quarantined > 0 and c.stored + c.duplicate == 0


def problem(s: FileSummary) -> str | None:
    """A file that failed or stored nothing, in one line that names it (stderr here, the nightly's summary)."""
    if s.status == "failed":
        return s.error if s.path in (s.error or "") else f"{s.path}: {s.error}"
    if stored_nothing(s):
        skipped = f", skipped: {s.counts.skipped:,}" if s.counts.skipped else ""
        return (f"{s.path}: stored nothing (quarantined: {s.counts.quarantined:,}{skipped}); "
                "the lines: `python -m traces quarantine FILE`")
    return None


def _positive_int(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m traces ingest", description=__doc__, epilog=EXIT_CODES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="files or folders (default: new files in the inbox)")
    ap.add_argument("--holdout-fraction", type=float, default=None, help="share of split groups held out, 0-1")
    ap.add_argument("--group-key", default=None)
    ap.add_argument("--no-scrub", dest="scrub_secrets", action="store_const", const=False, default=None)
    ap.add_argument("--redact-pii", action="store_const", const=True, default=None)
    ap.add_argument("--batch-lines", type=_positive_int, default=None, help="items per committed batch (>= 1)")
    args = ap.parse_args(argv)
    from rich.console import Console
    console = Console()
    flags = {k: v for k, v in vars(args).items() if k != "paths"}
    cfg = settings.load("traces", flags)
    summaries = ingest_paths(args.paths, cfg, console=console) if args.paths else ingest_inbox(cfg, console)
    if not summaries:
        inbox = cfg.inbox if locations.is_url(cfg.inbox) else settings.resolve_path(cfg.inbox)
        console.print(f"nothing to ingest (inbox {inbox} has no new files)")
        return 0
    console.print(summary_table(summaries))
    if skipped_note(summaries):
        console.print(safe(skipped_note(summaries), newlines=True))
    if any(s.counts.quarantined for s in summaries):
        console.print("quarantined lines by reason, file and line: [cyan]python -m traces stats[/]; "
                      "the lines of one file: [cyan]python -m traces quarantine FILE[/]")
    return _exit_code(summaries)


def _exit_code(summaries: list[FileSummary]) -> int:
    """EXIT_CODES: each failed file and each file that stored nothing named on stderr."""
    from rich.console import Console
    err = Console(stderr=True)
    for s in summaries:
        if problem(s):
            err.print(f"[red]error:[/] {safe(problem(s))}", highlight=False)
    return 1 if any(s.status == "failed" for s in summaries) else 3 if any(map(stored_nothing, summaries)) else 0
