"""Bookkeeping of eval runs shared by the runner, the reports, clustering and the gate: a run whose process died
is marked `incomplete`, never mistaken for complete; a complete run with the same key is found to be reused."""
from __future__ import annotations

import json

from traces import store
from traces.store import pid_alive


def refresh_stale(con) -> list[str]:
    """Mark 'running' runs whose process is gone as 'incomplete'; returns their ids."""
    stale = [r for r, pid in con.execute("SELECT run_id, pid FROM eval_runs WHERE status = 'running'").fetchall()
             if not pid_alive(pid)]
    for run_id in stale:
        con.execute("UPDATE eval_runs SET status = 'incomplete', finished_at = now() WHERE run_id = ?", [run_id])
    return stale


# ---------------------------------------------------------------- finding a run to reuse

def _same_gen(stored, wanted: dict, exact: bool = True) -> bool:
    """exact: the stored settings are the wanted ones; else every wanted key is present with the same value
    (a trace's metadata.generation may carry more, e.g. the model or a seed)."""
    stored = json.loads(stored) if isinstance(stored, str) else (stored or {})
    if exact:
        return stored == wanted
    return all(k in stored and stored[k] == v for k, v in wanted.items())


def find_run(con, suite: str, version: str, model_ref: str, a_hash: str | None, gen: dict,
             base_ref: str, wanted: list[str] | None = None) -> tuple[str | None, str | None]:
    """(complete run id, None) to reuse, or (None, why-not) — why-not names an incomplete run if one exists.
    The key is (suite, version, model, adapter hash, greedy settings) on the holdout; with `wanted` trace ids, a
    run is reused only if it scored all of them."""
    rows = con.execute("""SELECT run_id, status, gen_settings FROM eval_runs
                          WHERE suite = ? AND suite_version = ? AND mode = 'generate' AND model_ref = ?
                            AND adapter_hash IS NOT DISTINCT FROM ? AND split IN ('holdout', 'all')
                          ORDER BY started_at DESC""", [suite, version, model_ref, a_hash]).fetchall()
    for run_id, status, gs in rows:
        if status == "complete" and _same_gen(gs, gen) and _covers(con, run_id, wanted):
            return run_id, None
    if a_hash is None and model_ref == base_ref:
        run_id = _logged_run(con, suite, version, model_ref, gen)
        if run_id and _covers(con, run_id, wanted):
            return run_id, None
    stale = [r[0] for r in rows if r[1] != "complete"]
    return None, (f"incomplete run {stale[0]}" if stale else "no run yet")



def given_run_mismatch(con, run_id: str, suite: str, model_ref: str, a_hash: str | None, gen: dict,
                       base_ref: str) -> str | None:
    """Why a run named by id (`evals gate --candidate-run`) is not one of (model, adapter hash) on the suite's
    holdout with the gate's greedy settings, or None when it is. The gate must never score one model's answers
    under another's name: a run of the baseline passed as the candidate's would promote the baseline."""
    row = con.execute("""SELECT suite, mode, model_ref, adapter_hash, split, gen_settings FROM eval_runs
                         WHERE run_id = ?""", [run_id]).fetchone()
    if row is None:
        return "it does not exist"
    r_suite, mode, r_model, r_hash, split, gs = row
    if r_suite != suite:
        return f"it is a run of suite {r_suite}"
    if split not in ("holdout", "all"):
        return f"it scored the {split} split, not the holdout"
    if mode == "logged":
        if a_hash is None and model_ref == base_ref and _logged_matches(con, run_id, model_ref, gen):
            return None
        return "it scored logged answers, which stand only for the base model they say generated them greedily"
    if (r_model, r_hash) != (model_ref, a_hash):
        return f"it generated with {r_model} + adapter {r_hash or 'none'}"
    if not _same_gen(gs, gen):
        return f"its generation settings ({answered(gs)}) are not the gate's greedy ones ({answered(gen)})"
    return None


def answered(gen) -> str:
    """Who gave a run's answers and at what budget, as its generation settings say (evals.student.answer_settings)."""
    gen = json.loads(gen) if isinstance(gen, str) else (gen or {})
    who = f"served by {gen['server']}" if gen.get("server") else "in-process"
    return f"{gen.get('decoding', '?')}, {who}, max_new_tokens {gen.get('max_new_tokens', '?')}"


def _covers(con, run_id: str, wanted: list[str] | None) -> bool:
    if not wanted:
        return True
    n = con.execute("""SELECT count(DISTINCT trace_id) FROM run_results WHERE run_id = ?
                       AND list_contains(?, trace_id)""", [run_id, wanted]).fetchone()[0]
    return n == len(set(wanted))


def _logged_run(con, suite: str, version: str, model_ref: str, gen: dict) -> str | None:
    for (run_id,) in con.execute("""SELECT run_id FROM eval_runs WHERE suite = ? AND suite_version = ?
                                    AND mode = 'logged' AND status = 'complete' AND split IN ('holdout', 'all')
                                    ORDER BY started_at DESC""", [suite, version]).fetchall():
        if _logged_matches(con, run_id, model_ref, gen):
            return run_id
    return None


def _logged_matches(con, run_id: str, model_ref: str, gen: dict) -> bool:
    """Logged responses stand for the base model only if every scored holdout trace says (metadata.generation)
    it was generated by that model with the same greedy settings; `model` may also be the trace's model field."""
    rows = con.execute("""SELECT DISTINCT t.trace_id, t.model, json_extract(t.metadata, '$.generation')
                          FROM run_results r JOIN traces t USING (trace_id)
                          WHERE r.run_id = ? AND t.split = 'holdout'""", [run_id]).fetchall()
    if not rows:
        return False
    for _, model, g in rows:
        g = json.loads(g) if isinstance(g, str) else (g or {})
        if not g or (g.get("model") or model) != model_ref:
            return False
        if not _same_gen(g, gen, exact=False):
            return False
    return True


# ---------------------------------------------------------------- the holdout a run covers

def holdout_selection(suite: str, clusters: list[str], limit: int) -> list[str] | None:
    """At most `limit` holdout trace ids of the suite: members of the target clusters first (so the target
    test keeps its power), then a fixed pseudo-random order (hash of the trace id). None = all of them."""
    if limit <= 0:
        return None
    from evals.suites import load as load_suite, selection_sql
    sql, params = selection_sql(load_suite(suite), "holdout")
    with store.connect(read_only=True) as con:
        rows = con.execute(f"""SELECT s.trace_id FROM ({sql}) s ORDER BY
                                 s.trace_id IN (SELECT trace_id FROM cluster_members
                                                WHERE list_contains(?, cluster_id)) DESC,
                                 hash(s.trace_id) LIMIT {int(limit)}""", [*params, clusters]).fetchall()
    return [r[0] for r in rows]


def holdout_results(con, run_id: str) -> dict[tuple[str, int], tuple[str, bool]]:
    """(trace_id, check_idx) -> (check_id, passed), holdout traces only (a logged run may cover 'all')."""
    rows = con.execute("""SELECT r.trace_id, r.check_idx, r.check_id, r.passed FROM run_results r
                          JOIN traces t USING (trace_id) WHERE r.run_id = ? AND t.split = 'holdout'""",
                       [run_id]).fetchall()
    return {(t, i): (c, bool(p)) for t, i, c, p in rows}
