"""A nightly for the report tests, built directly in DuckDB: timed ledger rows, two trained clusters whose examples
came from several strategies, a train run (SFT items + DPO pairs + replay), a gate decision, a sweep of the same
training set, teacher calls, and the IFEval gain file that bench/bench_evals.py writes."""
import json
from pathlib import Path
from types import SimpleNamespace

from builders.gate import add_cluster, add_run, add_traces
from traces import store

T0 = "2026-03-01 00:00:00"
# stage, status, start and finish (seconds after T0; None: still running), summary
LEDGER = [("ingest", "done", 0, 5, {"files": 1}), ("synth", "done", 5, 130, {"clusters": ["cA", "cB"]}),
          ("train", "done", 130, 3730, {"train_run": "tr1"}),
          ("gate", "done", 7200, 7230, {"decision_id": "g1", "verdict": "PROMOTE"}),  # resumed after a wait
          ("promote", "skipped", 7230, 7231, {"why": "test"}), ("report", "running", 7231, None, {})]
# example id, cluster, strategy, status, edited_from, seed trace whose own messages it answers, teacher cost
EXAMPLES = [("e1", "cA", "repair", "accepted", None, "s000", 0.02), ("e2", "cA", "repair", "accepted", None, None, None),
            ("e3", "cA", "sample", "accepted", None, None, 0.02), ("e4", "cA", "constrained", "duplicate", None, None, 0.01),
            ("e5", "cA", "constrained", "accepted", None, None, None),  # accepted after the export: not trained on
            ("e6", "cB", "revise", "accepted", None, None, 0.03), ("e8", "cB", "sample", "edited", None, None, None),
            ("e7", "cB", None, "accepted", "e8", None, None), ("e9", "cB", None, "accepted", None, None, None),
            ("e10", "cB", "repair", "accepted", None, "s002", None),  # trained on only through its DPO pair
            ("e11", "cC", "sample", "accepted", None, None, 0.5)]     # another nightly's cluster
SFT = ["e1", "e2", "e3", "e6", "e7", "e9"]
GATE = {"suites": {"instruction_following": {"n": 10, "base_pass": 2, "cand_pass": 6, "base_rate": 20.0,
                                             "cand_rate": 60.0, "delta": 40.0, "fixes": 4, "breaks": 0, "p": 0.125,
                                             "ci": [10.0, 70.0]}},
        "clusters": {"cA": {"label": "label-cA", "check_id": "A", "n": 4, "base_pass": 0, "cand_pass": 3,
                            "base_rate": 0.0, "cand_rate": 75.0, "delta": 75.0, "fixes": 3, "breaks": 0, "p": 0.25,
                            "ci": [25.0, 100.0]}}}


def ifeval_gain(home: Path, nightly_id: str = "n1", **override) -> Path:
    """The file `python bench/bench_evals.py ifeval-gain` writes (data/bench/ifeval_gain.json)."""
    path = home / "data" / "bench" / "ifeval_gain.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    gain = {"nightly_id": nightly_id, "adapter": str(home / "adapters" / "tr1"), "limit": 120, "max_gen_toks": 512,
            "base": {"prompt_level_strict_acc": 0.2, "inst_level_strict_acc": 0.3, "prompt_level_loose_acc": 0.25},
            "adapter_metrics": {"prompt_level_strict_acc": 0.3, "inst_level_strict_acc": 0.4},
            "minutes": 50.0, "parity": True, "contaminated_training_prompts": 0} | override
    path.write_text(json.dumps(gain))
    return path


def nightly(nightly_id: str = "n1") -> None:
    with store.connect() as con:
        seeds = add_traces(con, 4, split="seed", prefix="s")
        add_run(con, "seed-run", {t: [("A" if t < "s002" else "B", False)] for t in seeds}, split="seed",
                mode="logged", model_ref=None)
        add_cluster(con, "cA", "A", seeds[:2], "seed-run", split="seed")
        add_cluster(con, "cB", "B", seeds[2:], "seed-run", split="seed")
        add_cluster(con, "cC", "A", seeds[:1], "seed-run", split="seed")
        _examples(con)
        _train_run(con)
        con.execute("""INSERT INTO gate_decisions (decision_id, candidate_ref, baseline_ref, train_run_id, verdict,
                       reasons, details) VALUES ('g1', 'm', 'm', 'tr1', 'PROMOTE', '["ok"]', ?)""", [json.dumps(GATE)])
        for stage, status, start, end, summary in LEDGER:
            con.execute("""INSERT INTO nightly_ledger VALUES (?, ?, ?, ?, ?::TIMESTAMP + to_seconds(?),
                           ?::TIMESTAMP + to_seconds(?))""",
                        [nightly_id, stage, status, json.dumps(summary), T0, start, T0 if end is not None else None,
                         end])
        con.execute("""INSERT INTO nightly_ledger VALUES ('n0', 'train', 'done', '{"train_run": "old"}',
                       '2026-02-01 00:00:00', '2026-02-01 09:00:00')""")  # another nightly: not in this report
        con.execute("""INSERT INTO train_runs (run_id, base_model, base_fingerprint, training_set, status, started_at)
                       VALUES ('old', 'm', 'fp', 't.jsonl', 'complete', '2026-02-01 00:00:00')""")
        con.execute("INSERT INTO train_examples VALUES ('old', 'e11', 'example', 'h-e11')")  # cC, trained by n0


def _examples(con) -> None:
    for eid, cluster, strategy, status, edited_from, trace, cost in EXAMPLES:
        messages = json.dumps([{"role": "user", "content": f"prompt {trace}"}] if trace else [])
        con.execute("""INSERT INTO examples (example_id, cluster_id, seed_trace_id, mode, messages, prompt, response,
                       status, reason, edited_from, strategy, request_hash) VALUES (?, ?, ?, 'compose', ?, 'p',
                       'fixed answer', ?, ?, ?, ?, ?)""",
                    [eid, cluster, trace, messages, status, "exact: e3" if status == "duplicate" else None,
                     edited_from, strategy, f"req-{eid}" if cost else None])
        if cost:
            con.execute("""INSERT INTO llm_calls (request_hash, endpoint, purpose, request, cost_usd, prompt_tokens,
                           completion_tokens) VALUES (?, 'http://127.0.0.1', 'teacher', '{}', ?, 10, 5)""",
                        [f"req-{eid}", cost])


def _train_run(con) -> None:
    """tr1: SFT items, replay, and (sft+dpo) the DPO pairs of e1 (also an SFT item) and e10 (only a pair)."""
    from train.lora_data import set_hash
    con.execute("""INSERT INTO train_runs (run_id, adapter_path, base_model, base_fingerprint, training_set, status,
                   started_at) VALUES ('tr1', NULL, 'm', 'fp', 't.jsonl', 'complete', now())""")
    items = [(e, "example", f"h-{e}") for e in SFT] + [("s003", "replay", "h-s003")]
    pairs = con.execute("SELECT pair_id FROM preference_pairs WHERE chosen_example_id IN ('e1', 'e10')").fetchall()
    assert len(pairs) == 2, pairs
    con.executemany("INSERT INTO train_examples VALUES ('tr1', ?, ?, ?)",
                    items + [(p, "pair", "h-pair") for p, in pairs])
    key = set_hash([SimpleNamespace(id=i, content_hash=h) for i, _, h in items])
    for idx, config, chosen in [(0, {"lr": 0.0005}, False), (1, {"lr": 0.001, "num_epochs": 3}, True)]:
        con.execute("""INSERT INTO sweeps (sweep_id, config_idx, config, run_id, status, metrics, chosen, rule,
                       source_set_hash, created_at) VALUES ('sw1', ?, ?, ?, 'complete', '{}', ?, 'best target', ?,
                       now())""", [idx, json.dumps(config), f"sw-{idx}", chosen, key])
