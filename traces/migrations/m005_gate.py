"""Gate decisions, the production registry, the nightly ledger, and the lineage view."""


def apply(con):
    con.execute("""
        CREATE TABLE gate_decisions (
            decision_id       VARCHAR PRIMARY KEY,
            candidate_ref     VARCHAR NOT NULL,
            candidate_adapter VARCHAR,
            candidate_adapter_hash VARCHAR,
            baseline_ref      VARCHAR NOT NULL,
            baseline_adapter  VARCHAR,
            train_run_id      VARCHAR,
            verdict           VARCHAR NOT NULL, -- PROMOTE | REJECT | ERROR
            reasons           JSON,
            details           JSON,             -- per suite / per cluster statistics, guards
            eval_run_ids      JSON,
            created_at        TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE registry (
            entry_id     VARCHAR PRIMARY KEY,
            model_ref    VARCHAR NOT NULL,
            adapter_path VARCHAR,               -- NULL: the base model itself
            adapter_hash VARCHAR,
            decision_id  VARCHAR,               -- the gate decision it rests on
            action       VARCHAR NOT NULL,      -- promote | rollback
            forced       BOOLEAN NOT NULL DEFAULT false,
            is_current   BOOLEAN NOT NULL,
            created_at   TIMESTAMP DEFAULT now()
        )""")
    con.execute("""
        CREATE TABLE nightly_ledger (
            nightly_id  VARCHAR NOT NULL,
            stage       VARCHAR NOT NULL,
            status      VARCHAR NOT NULL,       -- running | done | skipped | failed
            summary     JSON,
            started_at  TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            PRIMARY KEY (nightly_id, stage)
        )""")
    con.execute("""
        CREATE VIEW lineage AS
        SELECT t.trace_id, r.run_id AS eval_run_id, r.check_id, cm.cluster_id,
               e.example_id, e.status AS example_status, e.request_hash,
               tr.run_id AS train_run_id, tr.adapter_path,
               g.decision_id, g.verdict, reg.entry_id AS registry_entry, reg.is_current
        FROM traces t
        JOIN results r ON r.trace_id = t.trace_id AND NOT r.passed
        JOIN cluster_members cm ON cm.trace_id = t.trace_id AND cm.run_id = r.run_id
        LEFT JOIN examples e ON e.cluster_id = cm.cluster_id
        LEFT JOIN train_examples te ON te.item_id = e.example_id
        LEFT JOIN train_runs tr ON tr.run_id = te.run_id
        LEFT JOIN gate_decisions g ON g.train_run_id = tr.run_id
        LEFT JOIN registry reg ON reg.decision_id = g.decision_id
        """)
