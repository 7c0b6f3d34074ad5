"""curate export: accepted examples + replay share of passing seed traffic, manifest, trainer-readable."""
import json

from test_dedup import add
from test_synth_fixtures import seed_store

from curate import export
from traces import store


def logged_run(run_id, suite, passed_by_trace, finished):
    with store.connect() as con:
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at,
                       finished_at) VALUES (?, ?, '1', 'logged', 'all', 'complete', ?::TIMESTAMP, ?::TIMESTAMP)""",
                    [run_id, suite, finished, finished])
        for tid, passed in passed_by_trace.items():
            con.execute("INSERT INTO results (run_id, trace_id, check_idx, check_id, passed) VALUES (?,?,0,'x',?)",
                        [run_id, tid, passed])


def test_export_replay_share_and_manifest(tmp_path):
    seed_store()  # t1..t4 seed, t5..t6 holdout
    # an older run said t1 failed; the latest complete run of the suite has t1..t3 passing, t4 failing
    logged_run("old", "if", {"t1": False, "t2": False}, "2026-01-01 00:00:00")
    logged_run("new", "if", {"t1": True, "t2": True, "t3": True, "t4": False, "t5": True}, "2026-01-02 00:00:00")
    for i in range(4):
        add(f"e{i}", f"prompt {i}", f"answer {i}", status="accepted")
    add("rej", "x", "y", status="rejected")
    out = tmp_path / "train" / "train.jsonl"
    m = export.export(str(out), replay_fraction=1 / 3)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    origins = [x["origin"] for x in lines]
    assert origins.count("example") == 4 and origins.count("replay") == 2  # 2 / 6 = 1/3
    replay_ids = {x["id"] for x in lines if x["origin"] == "replay"}
    assert replay_ids <= {"t1", "t2", "t3"}  # passing, seed split, latest run only (t5 is holdout)
    ex = next(x for x in lines if x["id"] == "e0")
    assert ex["messages"][-1] == {"role": "assistant", "content": "answer 0"}
    manifest = json.loads((tmp_path / "train" / "train.manifest.json").read_text())
    assert manifest["counts"]["example"] == 4 and manifest["counts"]["replay"] == 2
    assert [i["id"] for i in manifest["items"]] == [x["id"] for x in lines]
    assert all(len(i["content_hash"]) == 64 for i in manifest["items"]) and m["sha256"] == manifest["sha256"]
    # the trainer reads it as is
    from train.lora_data import read_training_set
    assert len(read_training_set(out)) == 6


def test_replay_count():
    assert export.replay_count(7, 0.3, 100) == 3
    assert export.replay_count(7, 0.3, 1) == 1
    assert export.replay_count(0, 0.3, 100) == 0
