"""Preference pairs for DPO (read by `curate export`): a view over the candidates synthesis already stores.

A view, not a table: every part of a pair is already a row that keeps its state — the verified candidate
(`examples`, any status but failed_verification), the failing teacher samples of the same prompt (`examples` rows
in failed_verification with a failed `example_checks` row), the production trace whose own prompt the candidate
answers (`traces` + its `cluster_members` row: it failed the cluster's check). A view follows a review decision,
an edit or a late filter with nothing to keep in sync. docs/schema.md describes the columns.
"""


def apply(con):
    con.execute("""
        CREATE VIEW preference_pairs AS
        WITH chosen AS (
            SELECT * FROM examples WHERE status <> 'failed_verification' AND length(trim(response)) > 0
        ),
        production AS (                     -- the failing production response to the candidate's own prompt
            SELECT e.example_id, 'production' AS rejected_source, t.trace_id AS rejected_trace_id,
                   NULL::VARCHAR AS rejected_example_id, t.response AS rejected,
                   'failed ' || c.check_id AS rejected_reason
            FROM chosen e
            JOIN traces t ON t.trace_id = e.seed_trace_id AND t.split = 'seed'
                         AND json(t.messages) = json(e.messages)   -- composed prompts answer another prompt
            JOIN clusters c ON c.cluster_id = e.cluster_id
            WHERE length(trim(coalesce(t.response, ''))) > 0
              AND EXISTS (SELECT 1 FROM cluster_members m WHERE m.cluster_id = e.cluster_id
                          AND m.trace_id = t.trace_id AND m.split = 'seed')
        ),
        teacher AS (                        -- teacher samples of the same prompt that failed a check
            SELECT e.example_id, 'teacher' AS rejected_source, NULL::VARCHAR AS rejected_trace_id,
                   f.example_id AS rejected_example_id, f.response AS rejected, f.reason AS rejected_reason
            FROM chosen e
            JOIN examples f ON f.cluster_id = e.cluster_id AND json(f.messages) = json(e.messages)
                           AND f.status = 'failed_verification' AND f.mode IN ('compose', 'full')
            WHERE length(trim(f.response)) > 0
              AND EXISTS (SELECT 1 FROM example_checks k WHERE k.example_id = f.example_id AND NOT k.passed)
        ),
        rejected AS (SELECT * FROM production UNION ALL SELECT * FROM teacher)
        SELECT 'pair-' || substr(sha256(e.example_id || ':' || r.rejected_source || ':'
                                        || coalesce(r.rejected_example_id, r.rejected_trace_id)), 1, 20) AS pair_id,
               e.cluster_id, e.example_id AS chosen_example_id, e.status AS chosen_status,
               e.seed_trace_id, e.messages, e.prompt, e.response AS chosen,
               r.rejected, r.rejected_source, r.rejected_trace_id, r.rejected_example_id, r.rejected_reason
        FROM chosen e JOIN rejected r USING (example_id)
        WHERE r.rejected <> e.response
        """)
