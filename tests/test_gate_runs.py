"""The gate with real eval runs: logged traffic stands for the base model, the candidate (tiny model + a LoRA
adapter) is regenerated through the runner, and a second gate reuses both runs."""
import json

import pytest

from evals import gate
from traces import store
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    return tmp_path / "adapter"


def _traffic(con, model_ref: str, gen: dict, n: int = 8):
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}], "generation": {**gen, "model": model_ref}}
    rows = [[f"t{i}", json.dumps([{"role": "user", "content": f"Describe item {i}. Do not use any commas."}]),
             f"Describe item {i}. Do not use any commas.", "one, two" if i % 2 else "one two", f"b{i}",
             "holdout", json.dumps(meta)] for i in range(n)]
    con.executemany("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt, response,
                       group_key, split, metadata) VALUES (?, 'openai_chat', 'f.jsonl', 'i1', ?, ?, ?, ?, ?, ?)""",
                    rows)


def test_gate_reuses_logged_baseline_and_regenerates_the_candidate(tiny_model_dir, adapter_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "8")
    from evals.runner import run_suite
    from train.generate import greedy_settings
    with store.connect() as con:
        _traffic(con, str(tiny_model_dir), greedy_settings())
    logged = run_suite("instruction_following", "all", progress=False)
    monkeypatch.setattr(gate, "min_discordant", lambda alpha: 0)   # 8 traces: let it decide, not refuse
    first = gate.run_gate(str(tiny_model_dir), str(adapter_dir), "production", clusters=[], guards=False)
    assert first["baseline"].runs == {"instruction_following": logged}
    cand_run = first["candidate"].runs["instruction_following"]
    with store.connect(read_only=True) as con:
        mode, adapter_hash, status = con.execute(
            "SELECT mode, adapter_hash, status FROM eval_runs WHERE run_id = ?", [cand_run]).fetchone()
        n_runs = con.execute("SELECT count(*) FROM eval_runs").fetchone()[0]
    assert (mode, status) == ("generate", "complete") and adapter_hash == first["candidate"].adapter_hash
    assert first["comparison"].suites["instruction_following"]["n"] == 8
    assert first["comparison"].suites["instruction_following"]["base_pass"] == 4
    second = gate.run_gate(str(tiny_model_dir), str(adapter_dir), "production", clusters=[], guards=False)
    assert second["candidate"].runs == first["candidate"].runs
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM eval_runs").fetchone()[0] == n_runs   # nothing re-run


def test_gate_max_traces_evaluates_target_traces_first(tiny_model_dir, adapter_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "4")
    monkeypatch.setenv("MEND_EVALS_GATE_MAX_TRACES", "3")
    from evals.runner import run_suite
    from train.generate import greedy_settings
    with store.connect() as con:
        _traffic(con, str(tiny_model_dir), greedy_settings())
    logged = run_suite("instruction_following", "all", progress=False)
    with store.connect() as con:   # a cluster whose holdout members are t1 and t3 (the logged failures)
        con.execute("""INSERT INTO clusters (cluster_id, run_id, check_id, label, size)
                       VALUES ('c1', ?, 'punctuation:no_comma', 'commas', 2)""", [logged])
        con.executemany("INSERT INTO cluster_members VALUES ('c1', ?, ?, 'holdout', 0.9)",
                        [["t1", logged], ["t3", logged]])
    monkeypatch.setattr(gate, "min_discordant", lambda alpha: 0)
    monkeypatch.setattr(gate, "assign_clusters", lambda runs: None)
    result = gate.run_gate(str(tiny_model_dir), str(adapter_dir), "production", clusters=["c1"], guards=False)
    assert result["baseline"].runs == {"instruction_following": logged}     # the logged run covers them
    with store.connect(read_only=True) as con:
        scored = {r[0] for r in con.execute("SELECT trace_id FROM results WHERE run_id = ?",
                                            [result["candidate"].runs["instruction_following"]]).fetchall()}
    assert len(scored) == 3 and {"t1", "t3"} <= scored
    assert result["comparison"].suites["instruction_following"]["n"] == 3
