"""Every schema change of every stage, as one ordered list (simonw/llm style).

Each migration is a function that takes a connection; its name is recorded in `_migrations`
once applied, so a database is upgraded by running the ones it lacks, in order. Never edit
a migration that has shipped: append a new one. The contract they build is docs/schema.md.
"""
from __future__ import annotations

from traces.migrations import m001_traces, m002_evals, m003_curate, m004_train, m005_gate
from traces.migrations import m006_adapter_hash, m007_pairs
from traces.migrations import m008_ingest, m009_base_request, m010_strategy
from traces.migrations import m011_sweeps, m012_trained_examples, m013_scale
from traces.migrations import m014_incremental_evals

MIGRATIONS = [
    ("m001_traces", m001_traces.apply),
    ("m002_evals", m002_evals.apply),
    ("m003_curate", m003_curate.apply),
    ("m004_train", m004_train.apply),
    ("m005_gate", m005_gate.apply),
    ("m006_adapter_hash", m006_adapter_hash.apply),
    ("m007_pairs", m007_pairs.apply),
    ("m008_ingest", m008_ingest.apply),
    ("m009_base_request", m009_base_request.apply),
    ("m010_strategy", m010_strategy.apply),
    ("m011_sweeps", m011_sweeps.apply),
    ("m012_trained_examples", m012_trained_examples.apply),
    ("m013_scale", m013_scale.apply),
    ("m014_incremental_evals", m014_incremental_evals.apply),
]


def applied(con) -> list[str]:
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY name").fetchall()]


def pending(con) -> list[str]:
    """The migrations this store lacks, in order; reads only (a read-only connection will do)."""
    has = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = '_migrations'").fetchone()[0]
    done = {r[0] for r in con.execute("SELECT name FROM _migrations").fetchall()} if has else set()
    return [name for name, _ in MIGRATIONS if name not in done]


def migrate(con, upto: str | None = None) -> list[str]:
    """Apply the pending migrations (up to and including `upto`); returns their names."""
    done = set(applied(con))
    ran = []
    for name, fn in MIGRATIONS:
        if name not in done:
            con.execute("BEGIN TRANSACTION")
            try:
                fn(con)
                con.execute("INSERT INTO _migrations VALUES (?, now())", [name])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            ran.append(name)
        if name == upto:
            break
    return ran


def latest() -> str:
    return MIGRATIONS[-1][0]
