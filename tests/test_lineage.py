"""The `lineage` view on a small constructed run, and the nightly report built from the same rows."""
import json

from builders.gate import add_cluster, add_run, add_traces

from curate.loop import report
from traces import store


def build(tmp_path):
    """2 failing seed traces -> cluster c1 -> 3 examples (2 trained) -> train run tr1 -> gate g1 -> registry."""
    adapter = tmp_path / "adapters" / "tr1"
    adapter.mkdir(parents=True)
    (adapter / "metrics.json").write_text(json.dumps(
        {"steps": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], "evals": [{"step": 2, "eval_loss": 1.7}],
         "n_examples": 2, "last_step": 2, "final_loss": 1.5}))
    with store.connect() as con:
        seeds = add_traces(con, 3, split="seed", prefix="s")
        add_run(con, "seed-run", {"s000": [("A", False)], "s001": [("A", False)], "s002": [("A", True)]},
                split="seed", mode="logged", model_ref=None)
        add_cluster(con, "c1", "A", seeds[:2], "seed-run", split="seed")
        for i, status in enumerate(["accepted", "accepted", "duplicate"]):
            con.execute("""INSERT INTO examples (example_id, cluster_id, seed_trace_id, mode, messages, prompt,
                           response, status, reason, request_hash) VALUES (?, 'c1', 's000', 'compose', '[]', 'p',
                           'r', ?, ?, ?)""", [f"e{i}", status, "near_duplicate: e0" if i == 2 else None, f"req{i}"])
            con.execute("""INSERT INTO llm_calls (request_hash, endpoint, purpose, request, cost_usd, prompt_tokens,
                           completion_tokens) VALUES (?, 'http://127.0.0.1', 'teacher', '{}', 0.01, 10, 5)""",
                        [f"req{i}"])
        con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set,
                       status, started_at) VALUES ('tr1', ?, 'm', 'fp', 't.jsonl', 'complete', now())""",
                    [str(adapter)])
        con.executemany("INSERT INTO train_examples VALUES ('tr1', ?, 'example', 'h')", [["e0"], ["e1"]])
        details = {"suites": {"instruction_following": {"n": 10, "base_pass": 2, "cand_pass": 6, "base_rate": 20.0,
                                                        "cand_rate": 60.0, "delta": 40.0, "fixes": 4, "breaks": 0,
                                                        "p": 0.125, "ci": [10.0, 70.0]}},
                   "clusters": {"c1": {"label": "no commas", "check_id": "A", "n": 4, "base_pass": 0,
                                       "cand_pass": 3, "base_rate": 0.0, "cand_rate": 75.0, "delta": 75.0,
                                       "fixes": 3, "breaks": 0, "p": 0.25, "ci": [25.0, 100.0]}},
                   "guards": {"drift": {"ok": True, "summary": "NLL 1.0 -> 1.1"}}}
        con.execute("""INSERT INTO gate_decisions (decision_id, candidate_ref, candidate_adapter, baseline_ref,
                       train_run_id, verdict, reasons, details) VALUES ('g1', 'm', ?, 'm', 'tr1', 'PROMOTE', ?, ?)""",
                    [str(adapter), json.dumps(["ok: everything"]), json.dumps(details)])
        con.execute("""INSERT INTO registry (entry_id, model_ref, adapter_path, decision_id, action, is_current)
                       VALUES ('reg1', 'm', ?, 'g1', 'promote', true)""", [str(adapter)])
        for stage, summary in [("train", {"train_run": "tr1", "seconds": 3}),
                               ("gate", {"decision_id": "g1", "verdict": "PROMOTE", "seconds": 2})]:
            con.execute("""INSERT INTO nightly_ledger VALUES ('n1', ?, 'done', ?, now(), now())""",
                        [stage, json.dumps(summary)])
    return adapter


def test_lineage_view_links_traces_to_the_registry(tmp_path):
    build(tmp_path)
    with store.connect(read_only=True) as con:
        rows = con.execute("""SELECT DISTINCT trace_id, cluster_id, example_id, train_run_id, verdict, registry_entry
                              FROM lineage WHERE train_run_id IS NOT NULL ORDER BY 1, 3""").fetchall()
        untrained = con.execute("""SELECT DISTINCT example_id, example_status FROM lineage
                                   WHERE train_run_id IS NULL""").fetchall()
    assert rows == [(t, "c1", e, "tr1", "PROMOTE", "reg1") for t in ("s000", "s001") for e in ("e0", "e1")]
    assert untrained == [("e2", "duplicate")]       # the dropped example stays visible, with no train run


def test_report_writes_markdown_and_plots(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    build(tmp_path)
    path = report.write_report("n1")
    text = path.read_text()
    assert path == tmp_path / "reports" / "n1" / "report.md"
    for name in ["clusters.png", "examples.png", "loss.png"]:
        assert (path.parent / name).stat().st_size > 1000
        assert f"({name})" in text
    assert "**Gate verdict: PROMOTE**" in text and "cluster no commas" in text
    assert "2 failing traces -> 1 clusters -> 2 examples" in text
    # every candidate of the trained cluster was paid for (3 calls at $0.01, the duplicate too); 4 fixed
    assert "Teacher: 3 calls" in text and "cost per fixed failure: $0.0075" in text
    assert "| duplicate | near_duplicate | 1 |" in text
    assert "Train run `tr1` (sft): 2 examples, steps 2, final loss 1.5000, best eval loss ?" in text


def test_a_dpo_run_is_traced_through_its_pairs_to_their_chosen_examples(tmp_path):
    """A DPO run records pairs, not examples, in train_examples: the gate's target clusters and the lineage view
    must still reach the cluster through each pair's chosen example (before m012 they found nothing)."""
    from evals.gate import target_clusters
    build(tmp_path)
    with store.connect() as con:
        # e0 answers the failing seed trace's own prompt, so production's answer is its rejected side
        con.execute("""UPDATE examples SET messages = (SELECT messages FROM traces WHERE trace_id = 's000')
                       WHERE example_id = 'e0'""")
        pair = con.execute("SELECT pair_id FROM preference_pairs WHERE chosen_example_id = 'e0'").fetchone()[0]
        con.execute("DELETE FROM train_examples WHERE run_id = 'tr1'")
        con.execute("INSERT INTO train_examples VALUES ('tr1', ?, 'pair', 'h')", [pair])
    with store.connect(read_only=True) as con:
        assert target_clusters(con, None, "tr1") == (["c1"], "tr1")
        examples = con.execute("""SELECT DISTINCT example_id FROM lineage WHERE train_run_id = 'tr1'""").fetchall()
    assert examples == [("e0",)]
