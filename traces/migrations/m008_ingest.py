"""Ingest hardening: skipped items are counted (read = stored + duplicate + quarantined + skipped), a failed
file says why, and a `running` row names the process that owns it so a dead one can be told apart."""


def apply(con):
    for ddl in ("n_skipped BIGINT DEFAULT 0",  # items read that are not LLM calls (HTTP spans, tool executions)
                "skipped JSON",                # {"reason": count} of those
                "error VARCHAR",               # why the file failed, naming the file and line
                "pid BIGINT",                  # the process that ingests it: a `running` row whose process
                "host VARCHAR"):               # is gone on this host is stale and becomes `failed`
        con.execute("ALTER TABLE ingests ADD COLUMN " + ddl)
