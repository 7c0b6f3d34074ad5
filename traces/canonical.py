"""The checks, split and storage every format shares, as set-based SQL over one batch.

A format reader fills a temp table `pre` with the canonical columns (the JSONL reader, the hot
path, builds `checked` itself in fewer JSON parses: traces.jsonl_sql)
    line, source_format, src_id, ts, model, messages, response, tool_calls, tools, params,
    usage, metadata, feedback, error, raw
(`error` set when the reader already found the line bad). `store_batch` adds the common checks,
the prompt (last user message's text), the split and the trace id, then writes quarantine rows
and new traces. The caller wraps it in a transaction, so a batch lands whole or not at all.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from traces import scrub
from traces.jsonl_sql import MACROS

TEXT_COLUMNS = ["messages", "response", "tool_calls", "tools", "params", "metadata", "feedback", "raw"]
# what a `pre` reader hands over unscrubbed: every column a Parquet file may fill with anything, and the reader's
# reason for a bad row (it may quote the value at fault)
SECRET_COLUMNS = ["src_id", "model", "usage", *TEXT_COLUMNS, "error"]
# --redact-pii: every text a trace or a quarantined line keeps (ids, model names and token counts are not PII)
PII_COLUMNS = ["prompt", *TEXT_COLUMNS, "error"]
PLAIN_COLUMNS = {"prompt", "response", "error"}  # text, not JSON text: a backslash in them is no escape
# what decides the split: the metadata field named by the `group_key` setting, else the normalized prompt
GROUP_KEY = "coalesce(metadata ->> $gk_path, regexp_replace(lower(trim(prompt)), '\\s+', ' ', 'g'))"


@dataclass
class BatchCounts:
    """Per file, read = stored + duplicate + quarantined + skipped (skipped: read, but not an LLM call)."""
    read: int = 0
    stored: int = 0
    duplicate: int = 0
    quarantined: int = 0
    skipped: int = 0

    def add(self, other: "BatchCounts") -> None:
        for k in ("read", "stored", "duplicate", "quarantined", "skipped"):
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def plus(self, other: "BatchCounts") -> "BatchCounts":
        total = BatchCounts(**vars(self))
        total.add(other)
        return total

    def reconciles(self) -> bool:
        return self.read == self.stored + self.duplicate + self.quarantined + self.skipped


def normalize_prompt(prompt: str) -> str:
    """Lowercase, whitespace collapsed: the split key when metadata has no group key."""
    return re.sub(r"\s+", " ", prompt.strip().lower())


def split_for(group_key: str, holdout_fraction: float) -> str:
    """Same rule as the SQL below: first 32 bits of sha256(group key) as a fraction of 2**32."""
    h = int(hashlib.sha256(group_key.encode()).hexdigest()[:8], 16)
    return "holdout" if h / 2**32 < holdout_fraction else "seed"


def install_macros(con) -> None:
    for m in MACROS:
        con.execute(m)


def _checked_sql(cfg, scrub_columns: bool) -> str:
    """`pre` + common checks + prompt; columns scrubbed here when the reader did not."""
    scrubbed = ""
    if scrub_columns and cfg.scrub_secrets:
        scrubbed = " REPLACE (" + ", ".join(f"{scrub.secrets_sql(c)} AS {c}" for c in SECRET_COLUMNS) + ")"
    return f"""
    CREATE OR REPLACE TEMP TABLE checked AS
    WITH s AS (
        SELECT *{scrubbed} FROM pre
    ), p AS (
        SELECT *, CASE WHEN error IS NULL AND json_valid(messages) AND json_type(messages) = 'ARRAY'
                       THEN content_text(list_filter(json_extract(messages, '$[*]'),
                                                     lambda m: (m ->> 'role') = 'user')[-1] -> 'content') END AS prompt
        FROM s
    )
    SELECT * REPLACE (coalesce(error, {_common_checks()}) AS error) FROM p
    """


def _common_checks() -> str:
    return """CASE
        WHEN messages IS NULL OR NOT json_valid(messages) THEN 'field `messages` is missing or not JSON'
        WHEN json_type(messages) <> 'ARRAY' THEN 'field `messages` must be an array'
        WHEN NOT list_bool_and(list_transform(json_type(messages, '$[*]'), lambda t: t = 'OBJECT')) THEN
             'field `messages` must hold objects'
        WHEN NOT list_bool_and(list_transform(json_type(messages, '$[*].role'), lambda t: t = 'VARCHAR')) THEN
             'field `messages[].role` must be a string in every message'
        WHEN prompt IS NULL OR trim(prompt) = '' THEN 'field `messages` has no user message with text'
        WHEN tool_calls IS NOT NULL AND json_type(tool_calls) <> 'ARRAY' THEN 'field `tool_calls` must be an array'
        WHEN trim(coalesce(response, '')) = '' AND coalesce(json_array_length(tool_calls), 0) = 0 THEN
             'empty response: no content and no tool_calls'
        WHEN tools IS NOT NULL AND json_type(tools) <> 'ARRAY' THEN 'field `tools` must be an array'
        WHEN metadata IS NOT NULL AND json_type(metadata) <> 'OBJECT' THEN 'field `metadata` must be an object'
        WHEN feedback IS NOT NULL AND json_type(feedback) <> 'OBJECT' THEN 'field `feedback` must be an object'
    END"""


CONTENT_SHA = "sha256(messages || chr(0) || coalesce(response, '') || chr(0) || coalesce(tool_calls, ''))"


def _keyed_sql() -> str:
    """`checked` (good rows) -> temp table `keyed` with each row's trace id `tid` and content hash `h`.

    The id is the source id (else the content hash). A source id already stored (or earlier in this
    batch) with other content does not make the row a duplicate: it gets `<id>~<first 16 hex of its hash>`,
    so that ids reused across files (1, 2, 3 ...) keep every trace, and re-ingesting stays idempotent."""
    return f"""
    CREATE OR REPLACE TEMP TABLE keyed AS
    WITH g AS (
        SELECT *, {CONTENT_SHA} AS h, coalesce(src_id, {CONTENT_SHA}) AS base FROM checked WHERE error IS NULL
    ), k AS (
        SELECT *, min(line) OVER (PARTITION BY base, h) = min(line) OVER (PARTITION BY base) AS first_variant
        FROM g
    )
    SELECT k.*, CASE WHEN t.trace_id IS NULL AND first_variant THEN base
                     WHEN t.trace_id IS NOT NULL AND coalesce(th.content_sha256, h) = h THEN base
                     ELSE base || '~' || left(h, 16) END AS tid
    FROM k LEFT JOIN (SELECT trace_id FROM traces) t ON t.trace_id = k.base
           LEFT JOIN trace_hashes th ON th.trace_id = k.base
    """


def _redact_pii_sql() -> str:
    """`checked` with e-mails and phone numbers redacted (--redact-pii). The split key is kept aside first, as it
    was: a trace lands in the same split with or without the flag, and two users' prompts that differ only in
    the address do not become one group."""
    cols = ", ".join(f"{scrub.pii_sql(c, c in PLAIN_COLUMNS)} AS {c}" for c in PII_COLUMNS)
    return f"CREATE OR REPLACE TEMP TABLE checked AS SELECT * REPLACE ({cols}), {GROUP_KEY} AS split_key FROM checked"


def _insert_traces_sql(cfg) -> str:
    key, stored_key = ("split_key", scrub.pii_sql("gkey", plain=True)) if cfg.redact_pii else (GROUP_KEY, "gkey")
    return f"""
    INSERT OR IGNORE INTO traces (trace_id, source_format, source_file, source_line, ingest_id, ts, model,
        messages, prompt, response, tool_calls, tools, params, usage, metadata, feedback, group_key, split)
    WITH g AS (SELECT *, {key} AS gkey FROM keyed)
    SELECT tid, source_format, $file, line, $ingest, ts, model, messages, prompt, response, tool_calls, tools,
           params, usage, metadata, feedback, {stored_key},
           CASE WHEN ('0x' || substr(sha256(gkey), 1, 8))::UBIGINT / 4294967296.0 < $frac
                THEN 'holdout' ELSE 'seed' END
    FROM g
    """


HASHES_SQL = "INSERT OR IGNORE INTO trace_hashes SELECT tid, h FROM keyed"


# A line is quarantined once however often its file is re-ingested: rows of earlier ingests of the file keep it
# out. Not rows of this ingest: the records of a one-line JSON array all start on line 1, and each is its own.
QUARANTINE_SQL = """
    INSERT INTO quarantine (ingest_id, source_file, source_line, reason, raw)
    SELECT $ingest, $file, c.line, c.error, rtrim(left(c.raw, 10000), chr(10) || chr(13)) FROM checked c
    WHERE c.error IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM quarantine q WHERE q.source_file = $file AND q.source_line = c.line AND q.ingest_id <> $ingest)
"""


def store_batch(con, cfg, file: str, ingest_id: str, scrub_columns: bool, from_pre: bool = True) -> BatchCounts:
    """`pre` (or an already `checked` table) -> quarantine + traces.

    Re-storing a batch adds nothing: trace ids and quarantined (file, line) pairs are keys."""
    if from_pre:
        con.execute(_checked_sql(cfg, scrub_columns))
    key = {"gk_path": "$." + '"' + cfg.group_key.replace('"', '') + '"'}
    if cfg.redact_pii:  # the key is taken here, so the insert below needs it no more
        con.execute(_redact_pii_sql(), key)
        key = {}
    read, bad = con.execute("SELECT count(*), count(error) FROM checked").fetchone()
    con.execute(QUARANTINE_SQL, {"ingest": ingest_id, "file": file})
    con.execute(_keyed_sql())
    stored = con.execute(_insert_traces_sql(cfg), {**key, "file": file, "ingest": ingest_id,
                                                   "frac": float(cfg.holdout_fraction)}).fetchone()[0]
    con.execute(HASHES_SQL)
    return BatchCounts(read=read, stored=stored, duplicate=read - bad - stored, quarantined=bad)
