"""One adapter hash: a trained adapter's train run, its eval run, the gate's decision and the registry entry
join on `adapter_hash` (tiny model, real training, real gate run)."""
import json

import pytest

from evals import gate, registry
from traces import store
from traces.hashing import adapter_hash
from train.generate import greedy_settings

CHAT = [{"role": "user", "content": "Describe a river. Do not use any commas."},
        {"role": "assistant", "content": "The river runs wide and slow past the town."}]


@pytest.fixture
def trained_adapter(tmp_path, tiny_model_dir):
    from traces.settings import load_with_sources
    from train.lora import make_plan, train
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"id": f"ex{i}", "origin": "example", "messages": CHAT}) + "\n"
                            for i in range(4)))
    s, sources = load_with_sources("train", {
        "model": str(tiny_model_dir), "training_set": str(path), "adapters_dir": str(tmp_path / "ad"),
        "batch_size_train": 4, "max_length": 64, "lr": 5e-3, "val_fraction": 0.0, "max_steps": 2,
        "warmup_ratio": 0.0})
    result = train(make_plan(s, sources), progress=False)
    assert result.status == "complete", result.error
    return result


def _holdout_traffic(model_ref: str, n: int = 6):
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}],
            "generation": {**greedy_settings(), "model": model_ref}}
    rows = [[f"t{i}", json.dumps([{"role": "user", "content": f"Describe item {i}. Do not use any commas."}]),
             f"Describe item {i}. Do not use any commas.", "one, two" if i % 2 else "one two", f"b{i}",
             json.dumps(meta)] for i in range(n)]
    with store.connect() as con:
        con.executemany("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt,
                           response, group_key, split, metadata)
                           VALUES (?, 'openai_chat', 'f.jsonl', 'i1', ?, ?, ?, ?, 'holdout', ?)""", rows)


def test_train_eval_gate_and_registry_join_on_the_adapter_hash(trained_adapter, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "4")
    monkeypatch.setattr(gate, "min_discordant", lambda alpha: 0)   # 6 traces: let it decide, not refuse
    _holdout_traffic(str(tiny_model_dir))
    adapter = str(trained_adapter.adapter_dir)
    result = gate.run_gate(str(tiny_model_dir), adapter, "production", clusters=[], guards=False,
                           train_run=trained_adapter.run_id)
    registry.promote(decision_id=result["decision_id"], force=True)  # forced if REJECT: the join is the point
    with store.connect(read_only=True) as con:
        rows = con.execute("""SELECT tr.run_id, er.run_id, g.decision_id, r.entry_id
                              FROM train_runs tr
                              JOIN eval_runs er ON er.adapter_hash = tr.adapter_hash
                              JOIN gate_decisions g ON g.candidate_adapter_hash = tr.adapter_hash
                              JOIN registry r ON r.adapter_hash = tr.adapter_hash""").fetchall()
    assert len(rows) == 1, rows
    assert rows[0][0] == trained_adapter.run_id and rows[0][2] == result["decision_id"]
    assert rows[0] and adapter_hash(adapter) is not None


def test_migration_makes_old_hashes_agree(trained_adapter):
    from traces.migrations import m006_adapter_hash
    adapter = str(trained_adapter.adapter_dir)
    with store.connect() as con:
        con.execute("UPDATE train_runs SET adapter_hash = 'old-sha256-of-one-file'")
        con.execute("""INSERT INTO registry (entry_id, model_ref, adapter_path, adapter_hash, action, is_current)
                       VALUES ('gone', 'm', '/nowhere/adapter', 'kept', 'promote', false)""")
        m006_adapter_hash.apply(con)
        assert con.execute("SELECT adapter_hash FROM train_runs").fetchone()[0] == adapter_hash(adapter)
        # a folder that no longer exists cannot be re-hashed: its row keeps the value it had
        assert con.execute("SELECT adapter_hash FROM registry WHERE entry_id = 'gone'").fetchone()[0] == "kept"
