"""The nightly's `holdout` stage: before synthesis and training, can the gate decide for the clusters chosen?

The gate's target test is an exact McNemar test on the holdout traces of the clusters trained on (evals.gate). Its
smallest p-value comes when every holdout failure is fixed and nothing breaks: 2 * 0.5^f for f failures
(evals.stats). The eval stage's run already holds those failures, so a nightly whose gate could never reach
`gate_alpha` is told so before it spends synthesis and training on it, by the gate's own rule
(evals.gate.power_shortfall). Every holdout failure of a chosen cluster's check counts: an upper bound on what the
gate pairs (it assigns each failure to the nearest cluster of that check), so only a night that cannot decide stops.
"""
from __future__ import annotations

from curate.synth.driver import choose_clusters
from evals.gate import power_groups, power_shortfall
from evals.stats import mcnemar_exact, min_discordant
from traces import store
from traces.settings import load
from traces.terminal import safe


def holdout_failures(con, run_id: str, cluster_ids: list[str]) -> tuple[dict[str, int], int]:
    """({cluster label: holdout failures of its check}, failures of all their checks, each counted once) in run_id:
    the paired items the gate's target test would have if the baseline failed as the logged traffic did."""
    fails = """SELECT DISTINCT r.trace_id, r.check_idx, r.check_id FROM run_results r JOIN traces t USING (trace_id)
               WHERE r.run_id = ? AND NOT r.passed AND t.split = 'holdout'
                 AND r.check_id IN (SELECT check_id FROM clusters WHERE list_contains(?, cluster_id))"""
    per = dict(con.execute(f"""SELECT c.label, count(f.trace_id) FROM clusters c LEFT JOIN ({fails}) f
                               USING (check_id) WHERE list_contains(?, c.cluster_id) GROUP BY c.cluster_id, c.label
                               ORDER BY c.label""", [run_id, cluster_ids, cluster_ids]).fetchall())
    pooled = con.execute(f"SELECT count(*) FROM ({fails})", [run_id, cluster_ids]).fetchone()[0]
    return per, pooled


def undecidable(run_id: str, cluster_ids: list[str], s) -> tuple[str | None, dict]:
    """(why the gate cannot decide with these clusters and the fix, or None; the figures) for evals settings s."""
    with store.connect(read_only=True) as con:
        per, pooled = holdout_failures(con, run_id, cluster_ids)
        n_holdout = con.execute("SELECT count(*) FROM traces WHERE split = 'holdout'").fetchone()[0]
    figures = {"holdout_traces": n_holdout, "holdout_failures": pooled, "per_cluster": per,
               "best_p": round(mcnemar_exact(pooled, 0), 4), "need": min_discordant(s.gate_alpha)}
    why = power_shortfall(power_groups(per, pooled, s), s)
    if why is None:
        return None, figures
    fraction = load("traces").holdout_fraction
    return (f"the gate cannot decide for the {len(cluster_ids)} cluster(s) chosen: even with every holdout failure "
            f"fixed and none broken ({why}). Fix: more traces (the holdout has {n_holdout}), or a larger "
            f"`[tool.mend.traces] holdout_fraction` (now {fraction}; the split is made at ingest), or "
            "`--train-anyway`"), figures


def stage_holdout(ctx) -> dict:
    """Stops the nightly before synthesis (exit 5) when the gate could not decide, unless told to train anyway."""
    run = ctx.done.get("clusters", {}).get("run")
    if not run:
        return {"skipped": True, "why": "no clustered eval run"}
    s = load("curate")
    with store.connect(read_only=True) as con:  # the clusters synthesis will choose (curate.synth.driver)
        chosen = choose_clusters(con, s.max_clusters, s.cluster_order)
    if not chosen:
        return {"skipped": True, "why": "no clusters to synthesize for"}
    why, figures = undecidable(run, chosen, load("evals"))
    if why is None:
        return figures
    if ctx.train_anyway or s.nightly_train_anyway:
        ctx.console.print(f"[yellow]{safe(why)}[/]; training anyway (--train-anyway)", highlight=False)
        return {**figures, "attention": f"{why}; trained anyway"}
    return {**figures, "stop": why}
