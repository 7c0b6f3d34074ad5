"""curate export: accepted examples + replay share of passing seed traffic, manifest, trainer-readable."""
import json

from builders.examples import add
from builders.replay import counting, tiny_student, traffic  # noqa: F401 (fixtures: tiny student, counting generate)
from builders.synth import seed_store

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
    m = export.export(str(out), replay_fraction=1 / 3, replay_self_share=0.0)  # passing traffic only
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


def test_export_mixes_self_distilled_replay_and_caches_it(tmp_path, counting):
    """replay_self_share of the replay rows are the base's own answers to instruction-free seed requests; the
    manifest names their origin `self`, the trainer reads them as replay, and a re-export generates nothing."""
    traffic(8, 2)  # t0..t7 seed, t8..t9 holdout
    logged_run("run", "if", {f"t{i}": True for i in range(10)}, "2026-01-02 00:00:00")
    for i in range(7):
        add(f"e{i}", f"prompt {i}", f"answer {i}", status="accepted")
    out = tmp_path / "train" / "train.jsonl"
    m = export.export(str(out), replay_fraction=0.3, replay_self_share=0.5)  # 7 examples -> 3 replay rows
    c = m["counts"]
    assert (c["example"], c["replay"], c["self"], c["total"]) == (7, 1, 2, 10)
    assert c["replay_available"] == 8 and c["self_available"] == 8
    assert counting.calls == 1
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    selfs = [x for x in lines if x.get("source") == "self"]
    assert len(selfs) == 2 and all(x["origin"] == "replay" and x["id"].startswith("self-") for x in selfs)
    request = selfs[0]["messages"][0]["content"]
    assert "commas" not in request and selfs[0]["messages"][1]["content"] == f"Answer: {request[::-1]}"
    manifest = json.loads((tmp_path / "train" / "train.manifest.json").read_text())
    origins = [i["origin"] for i in manifest["items"]]
    assert (origins.count("example"), origins.count("replay"), origins.count("self")) == (7, 1, 2)
    assert manifest["replay_self_share"] == 0.5 and manifest["counts"] == c
    from train.lora_data import read_training_set
    read = read_training_set(out)
    assert len(read) == 10 and sum(ex.id.startswith("self-") for ex in read) == 2
    again = export.export(str(out), replay_fraction=0.3, replay_self_share=0.5)
    assert counting.calls == 1 and again["sha256"] == m["sha256"]  # same set, read from the cache
    only_self = export.export(str(out), replay_fraction=0.3, replay_self_share=1.0)["counts"]
    assert (only_self["replay"], only_self["self"]) == (0, 3) and counting.calls == 1  # answered in the first chunk


def test_self_rows_fill_in_when_passing_traffic_runs_short(tmp_path, counting):
    traffic(6, 0)
    logged_run("run", "if", {"t0": True}, "2026-01-02 00:00:00")  # one passing trace
    for i in range(7):
        add(f"e{i}", f"prompt {i}", f"answer {i}", status="accepted")
    c = export.export(str(tmp_path / "t.jsonl"), replay_fraction=0.3, replay_self_share=0.0)["counts"]
    assert (c["replay"], c["self"]) == (1, 0) and counting.calls == 0  # share 0: the model is never asked
    c = export.export(str(tmp_path / "t.jsonl"), replay_fraction=0.3, replay_self_share=0.34)["counts"]
    assert (c["replay"], c["self"]) == (1, 2)


def test_capped_takes_every_cluster_in_turn_paired_examples_first():
    def ex(i, cluster):
        return {"id": f"e{i}", "cluster": cluster}
    examples = [ex(i, "a") for i in range(6)] + [ex(i, "b") for i in range(6, 8)] + [ex(8, "c")]
    prefs = [{"id": "p1", "example_id": "e1", "rejected_source": "production"},
             {"id": "p2", "example_id": "e1", "rejected_source": "teacher"},
             {"id": "p3", "example_id": "e7", "rejected_source": "teacher"}]
    got, kept_prefs = export.capped(examples, prefs, 4)
    ids = {x["id"] for x in got}
    assert len(got) == 4 and {"e1", "e7", "e8"} <= ids  # every cluster, and the paired ones of a and b
    assert [p["id"] for p in kept_prefs] == ["p1", "p3"]  # one pair per example, production's first
    assert export.capped(examples, prefs, 0) == (examples, prefs)
    assert export.capped(examples, prefs, 9) == (examples, prefs)
    assert export.capped(examples, prefs, 4) == (got, kept_prefs)  # stable
