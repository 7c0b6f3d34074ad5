"""Preference pairs: the `preference_pairs` view over synthesis candidates (chosen = a verified candidate, rejected =
the failing production response to the same prompt or a failing teacher sample of it), its lineage, and the
`pairs.jsonl` that `curate export` writes beside the SFT set under the same manifest."""
import json

from builders.synth import candidate, prompts, seed_store

from curate import export
from traces import store


def build_store():
    seed_store()  # t1, t2 failing seed members of c1 ("Sure, here it is."); t3, t4 seed; t5, t6 holdout
    with store.connect() as con:  # production logs compact JSON; synthesis re-serializes it with spaces
        con.execute("UPDATE traces SET messages = json(messages)")
    own, composed = prompts()
    rows = {
        "good": candidate(own, "Dear landlord when will the dishwasher be repaired", "h1", "accepted"),
        "bad": candidate(own, "Dear landlord, when will it be fixed?", "h2"),
        "other": candidate(own, "Hello there friend", "h3", "pending_review"),
        "cgood": candidate(composed, "The small fox found a lantern and slept well", "h4", "accepted"),
        "cbad": candidate(composed, "The fox, being small, was afraid.", "h5"),
    }
    return rows


def view():
    with store.connect(read_only=True) as con:
        cols = ["pair_id", "cluster_id", "chosen_example_id", "chosen_status", "seed_trace_id", "chosen", "rejected",
                "rejected_source", "rejected_trace_id", "rejected_example_id", "rejected_reason"]
        rows = con.execute(f"SELECT {', '.join(cols)} FROM preference_pairs ORDER BY pair_id").fetchall()
    return [dict(zip(cols, r)) for r in rows]


def test_view_pairs_each_verified_candidate_with_the_failing_responses_to_its_prompt():
    rows = build_store()
    assert rows["good"]["status"] == "verified" and rows["bad"]["status"] == "failed_verification"
    pairs = view()
    got = {(p["chosen_example_id"], p["rejected_source"], p["rejected_trace_id"] or p["rejected_example_id"])
           for p in pairs}
    good, other, cgood = rows["good"]["example_id"], rows["other"]["example_id"], rows["cgood"]["example_id"]
    assert got == {
        (good, "production", "t1"), (good, "teacher", rows["bad"]["example_id"]),
        (other, "production", "t1"), (other, "teacher", rows["bad"]["example_id"]),
        # composed from t2's base: t2's logged response answered another prompt, so only the teacher sample
        (cgood, "teacher", rows["cbad"]["example_id"]),
    }
    prod = next(p for p in pairs if p["chosen_example_id"] == good and p["rejected_source"] == "production")
    assert prod["rejected"] == "Sure, here it is." and prod["seed_trace_id"] == "t1" and prod["cluster_id"] == "c1"
    assert prod["rejected_reason"] == "failed punctuation:no_comma" and prod["chosen_status"] == "accepted"
    teach = next(p for p in pairs if p["chosen_example_id"] == good and p["rejected_source"] == "teacher")
    assert teach["rejected_reason"].startswith("punctuation:no_comma") and teach["rejected_trace_id"] is None
    assert len({p["pair_id"] for p in pairs}) == len(pairs) and all(p["pair_id"].startswith("pair-") for p in pairs)


def test_no_pair_without_a_failing_response_of_the_same_prompt_and_cluster():
    rows = build_store()
    with store.connect() as con:
        # a candidate dropped by the fluency filter passed the checks: it is not a failing response
        con.execute("UPDATE examples SET reason = 'not_fluent: emoji run' WHERE example_id = ?",
                    [rows["bad"]["example_id"]])
        con.execute("UPDATE example_checks SET passed = true WHERE example_id = ?", [rows["bad"]["example_id"]])
        # the same prompt's failing sample in another cluster belongs to that cluster's candidates
        con.execute("UPDATE examples SET cluster_id = 'c2' WHERE example_id = ?", [rows["cbad"]["example_id"]])
        # a trace that is not a member of the cluster did not fail its check
        con.execute("DELETE FROM cluster_members WHERE trace_id = 't1'")
    assert view() == []


def test_export_writes_trl_preference_pairs_beside_the_sft_set_under_one_manifest(tmp_path):
    rows = build_store()
    out = tmp_path / "train" / "train.jsonl"
    manifest = export.export(str(out), replay_fraction=0.0)
    lines = [json.loads(x) for x in (tmp_path / "train" / "pairs.jsonl").read_text().splitlines()]
    # only accepted candidates give exported pairs (the pending_review one waits for its review)
    assert {p["example_id"] for p in lines} == {rows["good"]["example_id"], rows["cgood"]["example_id"]}
    assert len(lines) == 3 and manifest["counts"]["pairs"] == 3
    first = next(p for p in lines if p["rejected_source"] == "production")
    assert first["prompt"] == json.loads(rows["good"]["messages"]) and first["prompt"][-1]["role"] == "user"
    assert first["chosen"] == [{"role": "assistant", "content": rows["good"]["response"]}]
    assert first["rejected"] == [{"role": "assistant", "content": "Sure, here it is."}]
    assert first["rejected_id"] == "t1" and first["cluster_id"] == "c1"
    disk = json.loads((tmp_path / "train" / "train.manifest.json").read_text())
    assert disk["pairs"]["path"] == "pairs.jsonl" and disk["pairs"]["count"] == 3
    assert [i["id"] for i in disk["pairs"]["items"]] == [p["id"] for p in lines]
    # the trainer reads both files of the export, and they agree on every content hash
    from trl.data_utils import is_conversational
    from train.dpo import pair_hash, read_pairs
    from train.lora_data import read_training_set
    pairs = read_pairs(tmp_path / "train" / "pairs.jsonl", tmp_path / "train" / "train.manifest.json")
    assert [p.content_hash for p in pairs] == [pair_hash(p["prompt"], p["chosen"], p["rejected"]) for p in lines]
    assert all(is_conversational({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) for p in pairs)
    assert len(read_training_set(out)) == 2


def test_export_always_writes_the_pairs_file(tmp_path):
    seed_store()
    out = tmp_path / "sets" / "mine.jsonl"
    export.export(str(out), replay_fraction=0.0)
    assert (tmp_path / "sets" / "mine.pairs.jsonl").read_text() == ""  # no stale pairs beside a new SFT set
    assert json.loads((tmp_path / "sets" / "mine.manifest.json").read_text())["pairs"]["items"] == []


def test_pairs_file_errors_name_file_line_and_field(tmp_path):
    import pytest
    from train.dpo import read_pairs
    from train.lora_data import TrainingSetError
    ok = {"id": "p1", "prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "assistant", "content": "a"}],
          "rejected": [{"role": "assistant", "content": "b"}]}
    cases = [("{oops", "pairs.jsonl:2: not valid JSON"),
             (json.dumps(ok | {"id": "p2", "prompt": [{"role": "assistant", "content": "q"}]}), "must end with a user"),
             (json.dumps(ok | {"id": "p2", "chosen": [{"role": "user", "content": "a"}]}), r"chosen\[0\].role"),
             (json.dumps(ok | {"id": "p2", "rejected": []}), "field 'rejected'"),
             (json.dumps(ok), "duplicate id")]
    path = tmp_path / "pairs.jsonl"
    for line, message in cases:
        path.write_text(json.dumps(ok) + "\n" + line + "\n")
        with pytest.raises(TrainingSetError, match=message):
            read_pairs(path)
    path.write_text(json.dumps(ok) + "\n")
    manifest = tmp_path / "train.manifest.json"
    manifest.write_text(json.dumps({"items": [], "pairs": {"items": [{"id": "p9"}]}}))
    with pytest.raises(TrainingSetError, match=r"only in manifest: \['p9'\]"):
        read_pairs(path, manifest)
    manifest.write_text(json.dumps({"items": []}))
    with pytest.raises(TrainingSetError, match="lists no preference pairs"):
        read_pairs(path, manifest)


def test_exported_pairs_train_a_dpo_run_whose_rows_lead_back_to_examples_and_traces(tmp_path, tiny_model_dir):
    """The export is what the trainer reads: a DPO run on it records each pair, and SQL walks from the run back
    to the chosen example, its cluster and the production trace it was preferred over."""
    import torch
    from builders.lora import settings
    from train.lora import make_plan, train
    rows = build_store()
    out = tmp_path / "train" / "train.jsonl"
    export.export(str(out), replay_fraction=0.0)
    torch.set_num_threads(1)
    s, sources = settings(tmp_path, tiny_model_dir, out, method="dpo", max_steps=2)
    result = train(make_plan(s, sources), progress=False)
    assert result.status == "complete", result.error
    with store.connect(read_only=True) as con:
        walked = con.execute("""
            SELECT p.chosen_example_id, p.cluster_id, p.rejected_source, p.rejected_trace_id
            FROM train_examples te JOIN preference_pairs p ON p.pair_id = te.item_id
            WHERE te.run_id = ? AND te.origin = 'pair' ORDER BY 1, 3""", [result.run_id]).fetchall()
    good, cgood = rows["good"]["example_id"], rows["cgood"]["example_id"]
    assert sorted(walked) == sorted([(good, "c1", "production", "t1"), (good, "c1", "teacher", None),
                                     (cgood, "c1", "teacher", None)])


def test_near_identical_pairs_and_layout_repairs_are_left_out_of_the_exported_pairs():
    from curate.synth.repair_layout import LAYOUTS
    assert export.LAYOUT_CHECKS == set(LAYOUTS)  # export names them (it sits below synth): the same list
    rows = build_store()
    with store.connect(read_only=True) as con:
        every = export.pairs(con, max_similarity=1.0)
        strict = export.pairs(con, max_similarity=0.5)
    # "Dear landlord when will the dishwasher be repaired" vs "Dear landlord, when will it be fixed?": 4 of 9+7 words
    assert export.similarity("a b c d", "a b c d") == 1.0 and export.similarity("a b", "c d") == 0.0
    sims = {p["id"]: export.similarity(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in every}
    assert {p["id"] for p in strict} == {i for i, s in sims.items() if s <= 0.5} != set(sims)
    with store.connect() as con:  # the same pairs, made by repairing a layout check: never pairs
        con.execute("UPDATE examples SET strategy = 'repair'")
        con.execute("UPDATE clusters SET check_id = 'detectable_format:multiple_sections'")
    with store.connect(read_only=True) as con:
        assert export.pairs(con, max_similarity=1.0) == []
    assert rows


def test_layout_repairs_leave_the_sft_set_only_when_layout_targets_is_off():
    build_store()
    with store.connect() as con:
        con.execute("UPDATE examples SET status = 'accepted'")
        n = con.execute("SELECT count(*) FROM examples").fetchone()[0]
        con.execute("UPDATE clusters SET check_id = 'detectable_format:multiple_sections'")
        con.execute("UPDATE examples SET strategy = 'repair'")
        con.execute("UPDATE examples SET strategy = 'self' WHERE example_id = (SELECT min(example_id) FROM examples)")
    ids = lambda items: {x["id"] for x in items if x["origin"] == "example"}  # noqa: E731
    every = ids(export.build(0.0)[0])
    assert len(every) == n > 1
    kept = ids(export.build(0.0, layout_targets=False)[0])
    assert len(kept) == 1 and kept < every  # the student's own sample stays: only repairs that regroup leave
    with store.connect() as con:
        con.execute("UPDATE clusters SET check_id = 'punctuation:no_comma'")
    assert ids(export.build(0.0, layout_targets=False)[0]) == every  # a surface repair is never dropped


def test_only_checks_keeps_the_examples_of_those_clusters_and_the_replay():
    build_store()
    with store.connect() as con:
        con.execute("UPDATE examples SET status = 'accepted'")
    ids = lambda items: {x["id"] for x in items if x["origin"] == "example"}  # noqa: E731
    every = ids(export.build(0.0)[0])
    assert every and ids(export.build(0.0, only_checks=frozenset({"punctuation:no_comma"}))[0]) == every
    assert ids(export.build(0.0, only_checks=frozenset({"startend:end_checker"}))[0]) == set()
    assert ids(export.build(0.0, only_checks=None)[0]) == every
