"""Synthesized examples, their verification and review decisions (written by `curate`)."""


def apply(con):
    con.execute("""
        CREATE TABLE examples (
            example_id      VARCHAR PRIMARY KEY,
            cluster_id      VARCHAR,            -- the cluster it targets
            seed_trace_id   VARCHAR,            -- the seed trace whose prompt (or request) it came from
            mode            VARCHAR NOT NULL,   -- compose | full | edit
            messages        JSON NOT NULL,      -- the prompt messages
            prompt          VARCHAR NOT NULL,
            response        VARCHAR NOT NULL,
            metadata        JSON,               -- instruction ids + kwargs the checks verify against
            guidance        JSON,               -- how it was produced: null, or logit_bias/system/few-shot/prefix
            teacher_model   VARCHAR,
            request_hash    VARCHAR,            -- llm_calls row that produced it (cost lineage)
            status          VARCHAR NOT NULL,   -- see the state machine in docs/schema.md
            reason          VARCHAR,            -- why it left the happy path
            duplicate_of    VARCHAR,            -- example id or eval/holdout trace id it collides with
            embedding       FLOAT[],
            edited_from     VARCHAR,            -- original example of an edit
            reviewer        VARCHAR,
            reviewed_at     TIMESTAMP,
            created_at      TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE example_checks (
            example_id VARCHAR NOT NULL,
            check_idx  INTEGER NOT NULL,
            check_id   VARCHAR NOT NULL,
            passed     BOOLEAN NOT NULL,
            reason     VARCHAR,
            PRIMARY KEY (example_id, check_idx)
        )""")
    con.execute("""
        CREATE TABLE reviews (
            review_id   VARCHAR PRIMARY KEY,
            example_id  VARCHAR NOT NULL,
            decision    VARCHAR NOT NULL,       -- accepted | rejected | edited | skipped | undone
            reason      VARCHAR,
            prev_status VARCHAR,                -- for undo
            reviewer    VARCHAR,
            created_at  TIMESTAMP DEFAULT now()
        )""")
