"""Training runs and the exact examples each one saw (written by `train lora`)."""


def apply(con):
    con.execute("""
        CREATE TABLE train_runs (
            run_id           VARCHAR PRIMARY KEY,
            adapter_path     VARCHAR,           -- NULL until published
            adapter_hash     VARCHAR,
            base_model       VARCHAR NOT NULL,
            base_fingerprint VARCHAR NOT NULL,
            training_set     VARCHAR NOT NULL,  -- path of the exported JSONL
            training_set_hash VARCHAR,          -- sha256 of the sorted (id, content_hash) pairs it trained on
            settings         JSON,
            metrics          JSON,
            status           VARCHAR NOT NULL,  -- running | complete | failed
            error            VARCHAR,           -- why it failed (NaN loss, exception), NULL otherwise
            started_at       TIMESTAMP NOT NULL,
            finished_at      TIMESTAMP
        )""")
    con.execute("""
        CREATE TABLE train_examples (
            run_id       VARCHAR NOT NULL,
            item_id      VARCHAR NOT NULL,      -- example_id (origin=example) or trace_id (origin=replay)
            origin       VARCHAR NOT NULL,      -- example | replay
            content_hash VARCHAR NOT NULL,
            PRIMARY KEY (run_id, item_id)
        )""")
