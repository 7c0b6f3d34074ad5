"""Hyperparameter sweeps (`make sweep`) and the self-distilled replay they measure.

`sweeps`: one row per (sweep, grid config): the config tried, the train run it made (`train_runs.run_id`), what it
scored on the validation split carved from the training data (never the gate's holdout), and whether the sweep's
stated rule chose it (exactly one chosen row per finished sweep). `source_set_hash` is the set hash
(train.lora_data.set_hash) of the exported training set the sweep was carved from, so a train run on that set
finds its sweep.

`self_replay`: the base student's greedy answers to instruction-free seed requests (curate/replay.py), a cache keyed
by sha256(model fingerprint, request messages, generation settings): a re-export or another sweep config reads the
answer from here instead of generating it again.
"""


def apply(con):
    con.execute("""
        CREATE TABLE sweeps (
            sweep_id        VARCHAR NOT NULL,   -- sweep-<12 hex of sha256(source set, grid, validation settings)>
            config_idx      INTEGER NOT NULL,   -- position in the grid
            config          JSON NOT NULL,      -- what this candidate changed, e.g. {"lr": 0.001, "method": "sft"}
            run_id          VARCHAR,            -- train_runs.run_id of the candidate (NULL: failed before training)
            status          VARCHAR NOT NULL,   -- complete | failed
            metrics         JSON,               -- target_pass, anchor_nll, base_* values, n_val, n_anchors, rise, ...
            chosen          BOOLEAN NOT NULL DEFAULT false,  -- the one config the rule picked
            rule            VARCHAR,            -- the selection rule, in words, with its tolerance
            source_set_hash VARCHAR NOT NULL,   -- train.lora_data.set_hash of the exported training set swept on
            training_set    VARCHAR,            -- path of that exported training set
            error           VARCHAR,
            created_at      TIMESTAMP NOT NULL,
            PRIMARY KEY (sweep_id, config_idx)
        )""")
    con.execute("""
        CREATE TABLE self_replay (
            cache_key         VARCHAR PRIMARY KEY,  -- sha256 of (model_fingerprint, messages, gen_settings)
            model_ref         VARCHAR NOT NULL,
            model_fingerprint VARCHAR NOT NULL,     -- train.models.fingerprint of the base that answered
            gen_settings      JSON NOT NULL,        -- train.generate.greedy_settings()
            trace_id          VARCHAR,              -- the seed trace whose base request this is
            messages          JSON NOT NULL,        -- the instruction-free request
            response          VARCHAR NOT NULL,
            finish_reason     VARCHAR,              -- stop | length (cut at max_new_tokens: trimmed to whole sentences)
            completion_tokens INTEGER,
            created_at        TIMESTAMP NOT NULL
        )""")
