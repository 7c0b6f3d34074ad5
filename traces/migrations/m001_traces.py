"""Traces, quarantined lines and the ingest log (written by `traces ingest`)."""


def apply(con):
    con.execute("""
        CREATE TABLE traces (
            trace_id      VARCHAR PRIMARY KEY,  -- source id if present, else sha256 of the normalized content
            source_format VARCHAR NOT NULL,     -- openai_chat | messages | otel | parquet
            source_file   VARCHAR NOT NULL,
            source_line   BIGINT,               -- 1-based line (JSONL) or row/span index
            ingest_id     VARCHAR NOT NULL,
            ts            TIMESTAMP,            -- when the call happened, if the log says
            model         VARCHAR,
            messages      JSON NOT NULL,        -- the request messages (system/user/assistant/tool turns)
            prompt        VARCHAR NOT NULL,     -- the last user message's text (what evals and synthesis read)
            response      VARCHAR,              -- the assistant's content (may be NULL when only tool_calls)
            tool_calls    JSON,
            tools         JSON,
            params        JSON,                 -- sampling parameters of the request
            usage         JSON,
            metadata      JSON,
            feedback      JSON,
            group_key     VARCHAR NOT NULL,     -- what decides the split: metadata[group_key] or the prompt
            split         VARCHAR NOT NULL CHECK (split IN ('seed', 'holdout'))
        )""")
    con.execute("""
        CREATE TABLE quarantine (
            ingest_id   VARCHAR NOT NULL,
            source_file VARCHAR NOT NULL,
            source_line BIGINT,
            reason      VARCHAR NOT NULL,       -- names the field and what is wrong with it
            raw         VARCHAR,                -- the line as read (truncated to 10 kB)
            created_at  TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE ingests (
            ingest_id    VARCHAR PRIMARY KEY,
            source_file  VARCHAR NOT NULL,
            file_sha256  VARCHAR NOT NULL,
            source_format VARCHAR,
            n_read       BIGINT, n_stored BIGINT, n_duplicate BIGINT, n_quarantined BIGINT,
            started_at   TIMESTAMP, finished_at TIMESTAMP,
            status       VARCHAR NOT NULL       -- running | complete | failed
        )""")
