"""Ingest hardening: skipped items are counted (read = stored + duplicate + quarantined + skipped), a failed
file says why, a `running` row names the process that owns it so a dead one can be told apart, and each
trace keeps its content hash (a reused source id with other content is a new trace, not a duplicate)."""


def apply(con):
    for ddl in ("n_skipped BIGINT DEFAULT 0",  # items read that are not LLM calls (HTTP spans, tool executions)
                "skipped JSON",                # {"reason": count} of those
                "error VARCHAR",               # why the file failed, naming the file and line
                "pid BIGINT",                  # the process that ingests it: a `running` row whose process
                "host VARCHAR"):               # is gone on this host is stale and becomes `failed`
        con.execute("ALTER TABLE ingests ADD COLUMN " + ddl)
    # sha256(messages NUL response NUL tool_calls) as stored: what "same content" means (traces.canonical).
    # A table of its own, so that the traces table (which other stages read with SELECT *) keeps its shape.
    con.execute("""CREATE TABLE trace_hashes (trace_id VARCHAR PRIMARY KEY, content_sha256 VARCHAR NOT NULL)""")
    con.execute("""INSERT INTO trace_hashes SELECT trace_id, sha256(messages::VARCHAR || chr(0) || coalesce(response, '')
                   || chr(0) || coalesce(tool_calls::VARCHAR, '')) FROM traces""")
