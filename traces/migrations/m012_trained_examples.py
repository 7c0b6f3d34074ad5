"""`trained_examples`: the examples a train run trained on, whatever the method.

A DPO run records each preference pair in `train_examples` (`origin = 'pair'`, `item_id = pair_id`), so a join of
`train_examples.item_id` to `examples.example_id` saw no example of a DPO run: the gate found no target cluster and
judged the whole suites instead, and the `lineage` view stopped at the examples. This view resolves a pair to its
chosen example (through `preference_pairs`); `lineage` is rebuilt on it.
"""


def apply(con):
    con.execute("""
        CREATE VIEW trained_examples AS
        SELECT run_id, item_id AS example_id, origin FROM train_examples WHERE origin <> 'pair'
        UNION
        SELECT te.run_id, p.chosen_example_id AS example_id, te.origin
        FROM train_examples te JOIN preference_pairs p ON p.pair_id = te.item_id
        WHERE te.origin = 'pair'
        """)
    con.execute("DROP VIEW lineage")
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
        LEFT JOIN trained_examples te ON te.example_id = e.example_id
        LEFT JOIN train_runs tr ON tr.run_id = te.run_id
        LEFT JOIN gate_decisions g ON g.train_run_id = tr.run_id
        LEFT JOIN registry reg ON reg.decision_id = g.decision_id
        """)
