"""Eval runs, per-check results, the LLM call cache, failure clusters (written by `evals`)."""


def apply(con):
    con.execute("""
        CREATE TABLE eval_runs (
            run_id        VARCHAR PRIMARY KEY,
            suite         VARCHAR NOT NULL,
            suite_version VARCHAR NOT NULL,
            mode          VARCHAR NOT NULL CHECK (mode IN ('logged', 'generate')),
            model_ref     VARCHAR,              -- NULL in logged mode (the traces' own model answered)
            adapter_path  VARCHAR,
            adapter_hash  VARCHAR,
            split         VARCHAR NOT NULL,     -- seed | holdout | all
            gen_settings  JSON,                 -- generation settings in generate mode
            settings      JSON,                 -- the resolved evals settings
            status        VARCHAR NOT NULL CHECK (status IN ('running', 'complete', 'incomplete', 'failed')),
            n_traces      BIGINT,
            started_at    TIMESTAMP NOT NULL,
            finished_at   TIMESTAMP,
            pid           INTEGER               -- a 'running' run whose pid is gone was killed: incomplete
        )""")
    con.execute("""
        CREATE TABLE results (
            run_id     VARCHAR NOT NULL,
            trace_id   VARCHAR NOT NULL,
            check_idx  INTEGER NOT NULL,        -- position of the check for this trace (a trace may have several)
            check_id   VARCHAR NOT NULL,        -- registry name, e.g. 'punctuation:no_comma' (IFEval id), 'valid_json'
            check_args JSON,
            passed     BOOLEAN NOT NULL,        -- strict
            passed_loose BOOLEAN,               -- IFEval's loose variant where it exists
            score      DOUBLE,
            reason     VARCHAR,
            output     VARCHAR,                 -- the text that was scored
            details    JSON,                    -- extra facts from the check (judge model, endpoint, request hash)
            PRIMARY KEY (run_id, trace_id, check_idx)
        )""")
    con.execute("""
        CREATE TABLE llm_calls (
            request_hash      VARCHAR PRIMARY KEY,  -- sha256 of the full request (model, messages, sampling, seed)
            endpoint          VARCHAR NOT NULL,     -- base URL (never the key)
            model             VARCHAR,
            purpose           VARCHAR,              -- teacher | judge
            request           JSON NOT NULL,
            response          JSON,
            prompt_tokens     BIGINT,
            completion_tokens BIGINT,
            latency_s         DOUBLE,
            cost_usd          DOUBLE,
            created_at        TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE clusters (
            cluster_id  VARCHAR PRIMARY KEY,    -- stable: hash of the check id and the sorted member trace ids' anchor
            run_id      VARCHAR NOT NULL,       -- the seed eval run it was built from
            check_id    VARCHAR NOT NULL,
            label       VARCHAR NOT NULL,
            terms       JSON,
            size        INTEGER NOT NULL,
            centroid    FLOAT[],                -- mean MiniLM embedding of the member prompts (normalized)
            representatives JSON,               -- a few trace ids
            created_at  TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE cluster_members (
            cluster_id VARCHAR NOT NULL,
            trace_id   VARCHAR NOT NULL,
            run_id     VARCHAR NOT NULL,        -- the run whose failure put it here (seed build or holdout assignment)
            split      VARCHAR NOT NULL,
            similarity DOUBLE,                  -- cosine to the centroid
            PRIMARY KEY (cluster_id, trace_id, run_id)
        )""")
