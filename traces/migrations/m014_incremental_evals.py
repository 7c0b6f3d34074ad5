"""Incremental evals (issue 24 item 1): a suite version scores each trace once, and its runs chain.

- `traces.seq`: the order traces arrived in (a sequence; rows from before m014 are numbered in storage order). A
  run records the highest seq it selected (`eval_runs.upto_seq`); the next logged run of the same suite version,
  split and suite file scores only the traces above it and names that run as its `parent_run_id`. A sequence
  rather than ingest timestamps: a trace written outside an ingest (tests, tools) still gets one, and the filter
  `seq > ?` skips whole row groups by their min/max.
- `eval_run_chain`: every run with each run its results stand on (itself, its parent, the parent's parent...).
- `results.output` is NULL where the run scored the trace's own response (logged mode): a reference, not a copy.
  `run_results` is the results of a run's whole chain, keyed by that run, with `output` joined back from the
  trace; readers of a run's results read it. Existing logged results are moved to the reference form here.
- Runs from before m014 have no `upto_seq`: none is a parent, so the first logged run after the upgrade scores
  every trace once more, and the chain starts there.
"""


def apply(con):
    con.execute("CREATE SEQUENCE trace_seq")
    con.execute("ALTER TABLE traces ADD COLUMN seq BIGINT DEFAULT nextval('trace_seq')")
    con.execute("ALTER TABLE eval_runs ADD COLUMN parent_run_id VARCHAR")
    con.execute("ALTER TABLE eval_runs ADD COLUMN upto_seq BIGINT")
    con.execute("""UPDATE results SET output = NULL FROM eval_runs e, traces t
                   WHERE e.run_id = results.run_id AND e.mode = 'logged' AND t.trace_id = results.trace_id
                     AND results.output = coalesce(t.response, '')""")
    con.execute("""CREATE VIEW eval_run_chain AS
        WITH RECURSIVE chain(run_id, member_run_id) AS (
            SELECT run_id, run_id FROM eval_runs
            UNION ALL
            SELECT c.run_id, e.parent_run_id FROM chain c JOIN eval_runs e ON e.run_id = c.member_run_id
            WHERE e.parent_run_id IS NOT NULL)
        SELECT run_id, member_run_id FROM chain""")
    con.execute("""CREATE VIEW run_results AS
        SELECT c.run_id, r.run_id AS scored_in, r.trace_id, r.check_idx, r.check_id, r.check_args, r.passed,
               r.passed_loose, r.score, r.reason, coalesce(r.output, t.response, '') AS output, r.details
        FROM eval_run_chain c JOIN results r ON r.run_id = c.member_run_id
        LEFT JOIN traces t ON t.trace_id = r.trace_id""")
