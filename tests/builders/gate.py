"""Eval runs, results and clusters for the gate, registry and lineage tests, built directly in DuckDB."""
from __future__ import annotations

import json

from builders.trace_rows import insert_traces, trace_row
from traces import store
from train.settings import TrainSettings

# the scenario's candidate: another model ref, so its runs can be told from the baseline's (the gate checks that
# a run given by id is one of its side's model)
CANDIDATE = "candidate-model"

# what the runner stores for a greedy --model run with the default settings
GEN = {"decoding": "greedy", "max_new_tokens": TrainSettings().max_new_tokens, "chat_template": "model", "stop": "eos"}


def add_traces(con, n: int, split: str = "holdout", prefix: str = "h") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(n)]
    insert_traces([trace_row(i, f"prompt {t}", f"answer {t}", {}, split, trace_id=t, group_key=t)
                   for i, t in enumerate(ids)], con)
    return ids


def add_run(con, run_id: str, outcomes: dict[str, list[tuple[str, bool]]], suite: str = "instruction_following",
            version: str = "1", status: str = "complete", model_ref: str = "smollm2-135m-instruct",
            adapter_hash: str | None = None, split: str = "holdout", mode: str = "generate") -> str:
    """outcomes: trace_id -> [(check_id, passed), ...] (check_idx = position)."""
    con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, model_ref, adapter_hash, split,
                   gen_settings, status, n_traces, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,
                   now(), now())""",
                [run_id, suite, version, mode, model_ref, adapter_hash, split,
                 json.dumps(GEN), status, len(outcomes)])
    rows = [[run_id, t, i, c, p, f"out {t}"] for t, checks in outcomes.items() for i, (c, p) in enumerate(checks)]
    con.executemany("""INSERT INTO results (run_id, trace_id, check_idx, check_id, passed, output)
                       VALUES (?, ?, ?, ?, ?, ?)""", rows)
    return run_id


def add_cluster(con, cluster_id: str, check_id: str, traces: list[str], run_id: str, split: str = "holdout"):
    con.execute("""INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES (?, ?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""", [cluster_id, run_id, check_id, f"label-{cluster_id}", len(traces)])
    con.executemany("INSERT INTO cluster_members VALUES (?, ?, ?, ?, 0.9)",
                    [[cluster_id, t, run_id, split] for t in traces])


def scenario(candidate_fixes: int = 15, regress_other: int = 0, n_target: int = 20, n_other: int = 20,
             target_status: str = "complete", cand_version: str = "1") -> dict:
    """Holdout: n_target traces with check A (all failing in the baseline, cluster 'cA'), n_other traces with
    check B (half passing). The candidate fixes `candidate_fixes` A-traces and breaks `regress_other` B-traces."""
    with store.connect() as con:
        ta = add_traces(con, n_target, prefix="a")
        tb = add_traces(con, n_other, prefix="b")
        base = {t: [("A", False)] for t in ta} | {t: [("B", i % 2 == 0)] for i, t in enumerate(tb)}
        cand = {t: [("A", i < candidate_fixes)] for i, t in enumerate(ta)}
        passing_b = [t for i, t in enumerate(tb) if i % 2 == 0]
        broken = set(passing_b[:regress_other])
        cand |= {t: [("B", ok and t not in broken)] for t, [(_, ok)] in ((t, base[t]) for t in tb)}
        add_run(con, "base-run", base)
        add_run(con, "cand-run", cand, status=target_status, model_ref=CANDIDATE, version=cand_version)
        add_cluster(con, "cA", "A", ta, "base-run")
    return {"baseline": {"instruction_following": "base-run"}, "candidate": {"instruction_following": "cand-run"}}
