"""The nightly cycle's machinery: ledger, resume after a failure or a kill, the run lock, the demo profile.

The stages here are stubs (tests/builders/nightly_stubs.py); the real stages are the other packages' functions.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.loop import nightly
from curate.synth.driver import choose_clusters
from traces import store

STUBS = Path(__file__).parent / "builders" / "nightly_stubs.py"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))     # the lock file and reports go under tmp_path
    monkeypatch.setenv("STUB_LOG", str(tmp_path / "stub.log"))
    return tmp_path


def _stages():
    from builders import nightly_stubs
    return nightly_stubs.STAGES


def _ledger():
    with store.connect(read_only=True) as con:
        return con.execute("SELECT nightly_id, stage, status FROM nightly_ledger ORDER BY started_at").fetchall()


def _runs(home):
    return (home / "stub.log").read_text().split()


def test_ledger_records_every_stage_with_duration(home):
    assert nightly.run(stages=_stages()) == 0
    rows = _ledger()
    assert [r[1] for r in rows] == ["ingest", "eval", "train", "gate", "report"]
    assert {r[2] for r in rows} == {"done"}
    summary = nightly.ledger(rows[0][0])["train"]["summary"]
    assert summary["runs"] == 1 and summary["seconds"] >= 0


def test_failed_stage_is_resumed_without_repeating_done_stages(home, monkeypatch):
    monkeypatch.setenv("STUB_FAIL", "train")
    assert nightly.run(stages=_stages()) == 1
    first = _ledger()
    assert [r[2] for r in first] == ["done", "done", "failed"]
    assert nightly.run(stages=_stages()) == 0
    assert {r[0] for r in _ledger()} == {first[0][0]}        # same nightly, resumed
    assert _runs(home) == ["ingest", "eval", "train", "train", "gate", "report"]
    assert nightly.run(stages=_stages()) == 0                # a finished nightly: the next call starts a new one
    assert len({r[0] for r in _ledger()}) == 2


def test_a_resumed_nightly_says_which_settings_changed_since_it_started(home, monkeypatch, capsys):
    monkeypatch.setenv("STUB_FAIL", "train")
    assert nightly.run(stages=_stages()) == 1
    assert "other settings" not in capsys.readouterr().out
    monkeypatch.setenv("MEND_CURATE_PER_CLUSTER", "7")
    monkeypatch.setenv("MEND_TRAIN_LR", "0.5")
    assert nightly.run(stages=_stages()) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "it started under other settings (curate.per_cluster, train.lr)" in out and "--new" in out


def test_resume_after_kill_in_the_middle_of_a_stage(home, monkeypatch):
    monkeypatch.setenv("STUB_HANG", "train")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(STUBS.parent.parent.parent), str(STUBS.parent.parent)])}
    proc = subprocess.Popen([sys.executable, str(STUBS)], env=env, cwd=home,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while "train" not in (_runs(home) if (home / "stub.log").exists() else []):
        assert proc.poll() is None
        if time.monotonic() > deadline:  # a hang guard, not a speed target
            pytest.fail("the stub nightly never reached the train stage within 120 s")
        time.sleep(0.1)
    # while it hangs, a second nightly is refused and names the holder
    with pytest.raises(nightly.NightlyLocked, match=f"pid {proc.pid}"):
        nightly.run(stages=_stages())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert [r[2] for r in _ledger()] == ["done", "done", "running"]
    assert nightly.run(stages=_stages()) == 0              # the lock died with the process; resume
    assert _runs(home) == ["ingest", "eval", "train", "train", "gate", "report"]
    assert [r[2] for r in _ledger()] == ["done"] * 5


def test_lock_error_names_the_holder(home):
    held = nightly.lock()
    try:
        with pytest.raises(nightly.NightlyLocked, match=f"pid {os.getpid()}"):
            nightly.run(stages=_stages())
        assert nightly.main(["--stop-after", "ingest"]) == 2
    finally:
        held.release()


def test_stop_after_and_new(home):
    assert nightly.run(stages=_stages(), stop_after="eval") == 0
    assert _runs(home) == ["ingest", "eval"]
    # resuming the unfinished nightly with an earlier stop: nothing more runs (no teacher money spent)
    assert nightly.run(stages=_stages(), stop_after="ingest") == 0
    assert _runs(home) == ["ingest", "eval"]
    assert nightly.run(stages=_stages(), stop_after="train") == 0     # resume goes on to the new stop
    assert _runs(home) == ["ingest", "eval", "train"]
    assert nightly.run(stages=_stages(), new=True, stop_after="ingest") == 0
    assert _runs(home) == ["ingest", "eval", "train", "ingest"]
    assert len({r[0] for r in _ledger()}) == 2


def test_profile_sets_known_keys_and_skips_unknown(home, monkeypatch):
    profile = home / "p.toml"
    profile.write_text('[curate]\nk = 2\nnot_a_key = 1\n[evals]\ngate_alpha = 0.1\n')
    monkeypatch.setenv("MEND_EVALS_GATE_ALPHA", "0.2")       # the user's own value wins
    monkeypatch.delenv("MEND_CURATE_K", raising=False)
    applied = nightly.apply_profile(profile)  # curate.loop.profile, as the nightly uses it
    assert applied == {"MEND_CURATE_K": "2"} and os.environ["MEND_EVALS_GATE_ALPHA"] == "0.2"
    from traces.settings import load
    assert load("curate").k == 2


def test_demo_profile_only_names_existing_settings():
    import tomllib

    from traces.settings import settings_class
    data = tomllib.loads((Path(__file__).parent.parent / nightly.DEMO_CONFIG).read_text())
    for stage, table in data.items():
        assert set(table) <= set(settings_class(stage).__dataclass_fields__), stage


def test_sampled_review_policy_waits_for_a_person(home, monkeypatch):
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_REVIEW", "sample")
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    stages = [("accept", nightly.stage_accept), ("report", lambda ctx: {})]
    assert nightly.run(stages=stages) == 3
    assert _ledger()[0][1:] == ("accept", "waiting")


def test_the_verified_policy_says_what_waits_for_review(home, capsys):
    from builders.examples import add
    add("ok", "No commas please.", "Fine", status="pending_review", checks=["punctuation:no_comma", "fluent"])
    add("links", "How do I reset it?", "The Teller is a benevolent organization.", status="pending_review",
        checks=["regex"])
    assert nightly.run(stages=[("accept", nightly.stage_accept)]) == 0
    summary = nightly.ledger(_ledger()[0][0])["accept"]["summary"]
    assert summary["accepted"] == 1 and summary["waiting"] == 1
    assert summary["attention"].startswith("1 example(s) wait for review (1 because only narrow checks verified them")
    assert "narrow checks: regex" in summary["attention"] and "wait for review" in capsys.readouterr().out


def _cluster(con, cid, check, size):
    con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES (?, 'r', ?, ?, ?)",
                [cid, check, check, size])


def _examples(con, cid, verified, failed):
    for i, status in enumerate(["verified"] * verified + ["failed_verification"] * failed):
        con.execute("""INSERT INTO examples (example_id, cluster_id, mode, messages, prompt, response, status)
                       VALUES (?, ?, 'compose', '[]', 'p', 'r', ?)""", [f"{cid}-{i}", cid, status])


def test_synth_chooses_fixable_clusters_first_then_by_size(home):
    with store.connect() as con:
        _cluster(con, "big", "language:response_language", 50)  # largest, never verified, nothing forces it
        _cluster(con, "comma", "punctuation:no_comma", 40)      # a token ban can force it
        _cluster(con, "ends", "startend:end_checker", 30)       # past candidates verified 3 of 10
        _cluster(con, "small", "change_case:english_lowercase", 5)
        _examples(con, "big", 0, 16)
        _examples(con, "ends", 3, 7)
        assert choose_clusters(con, 3, "size") == ["big", "comma", "ends"]
        assert choose_clusters(con, 3, "fixable") == ["comma", "ends", "small"]
        assert choose_clusters(con, 10, "fixable") == ["comma", "ends", "small", "big"]
        assert choose_clusters(con, 0, "size") == ["big", "comma", "ends", "small"]


def test_a_cluster_only_layout_repairs_fix_is_not_fixable_while_they_are_not_trained_on(home, monkeypatch):
    monkeypatch.setenv("MEND_CURATE_STRATEGIES", '["repair", "self"]')
    with store.connect() as con:
        _cluster(con, "paras", "length_constraints:number_paragraphs", 50)  # a layout repair fixes it
        _cluster(con, "comma", "punctuation:no_comma", 40)
        _cluster(con, "big", "language:response_language", 45)
        monkeypatch.setenv("MEND_CURATE_LAYOUT_TARGETS", "false")
        assert choose_clusters(con, 2, "fixable") == ["comma", "paras"]  # then by size: paras 50 > big 45
        monkeypatch.setenv("MEND_CURATE_LAYOUT_TARGETS", "true")
        assert choose_clusters(con, 2, "fixable") == ["paras", "comma"]


def test_a_suite_that_matches_no_trace_fails_the_nightly_loudly(home, capsys):
    from builders.trace_rows import insert_traces, trace_row
    insert_traces([trace_row(i, f"What is {i} plus {i}?", str(2 * i)) for i in range(3)])  # no instructions
    assert nightly.run(stages=[("eval", nightly.stage_eval), ("report", lambda ctx: {})]) == 1
    assert _ledger()[0][1:] == ("eval", "failed")
    assert "matched none of the 3 traces" in capsys.readouterr().out


def test_every_suite_skipped_fails_the_eval_stage_with_a_hint(home, monkeypatch, capsys):
    """Only the judge suite and no judge endpoint: nothing is scored, and that is a failure, not a green nightly."""
    from builders.trace_rows import insert_traces, trace_row
    insert_traces([trace_row(i, f"What is {i} plus {i}?", str(2 * i)) for i in range(3)])
    monkeypatch.setenv("MEND_EVALS_SUITES", "judge")
    assert nightly.run(stages=[("eval", nightly.stage_eval), ("report", lambda ctx: {})]) == 1
    assert _ledger()[0][1:] == ("eval", "failed")
    out = " ".join(capsys.readouterr().out.split())
    assert "every suite was skipped, so nothing was scored" in out and "judge_base_url" in out
    assert "Your own logs, your own checks, your own teacher" in out
    monkeypatch.setenv("MEND_EVALS_SUITES", "[]")
    assert nightly.run(stages=[("eval", nightly.stage_eval), ("report", lambda ctx: {})], new=True) == 1
    assert "suites is empty" in " ".join(capsys.readouterr().out.split())


def _promote_summary(gate_stage) -> dict:
    stages = [("train", nightly.stage_train), ("gate", gate_stage), ("promote", nightly.stage_promote)]
    assert nightly.run(stages=stages, new=True) == 0
    nightly_id = _ledger()[-1][0]
    return nightly.ledger(nightly_id)["promote"]


def test_promote_says_why_it_did_not_promote(home, monkeypatch):
    # nothing trained: train and gate are skipped, and promote says so instead of "gate said None"
    row = _promote_summary(nightly.stage_gate)
    assert row["status"] == "skipped" and row["summary"]["why"] == "gate not run: no new adapter to gate"
    row = _promote_summary(lambda ctx: {"verdict": "REJECT", "decision_id": "gd-1"})
    assert row["summary"]["why"] == "gate said REJECT"
    # a PROMOTE left to CI is not "gate said PROMOTE" as if that were a reason not to promote
    monkeypatch.setenv("MEND_CURATE_NIGHTLY_PROMOTE", "false")
    why = _promote_summary(lambda ctx: {"verdict": "PROMOTE", "decision_id": "gd-2"})["summary"]["why"]
    assert "nightly_promote is false" in why and "registry promote --decision gd-2" in why


def test_an_inbox_file_that_fails_is_named_and_the_night_goes_on(home, monkeypatch, capsys):
    from builders.ingest_files import chat
    from builders.nightly_stubs import make
    inbox = home / "inbox"
    inbox.mkdir()
    (inbox / "a_export.csv").write_text("prompt,response\nhi,hello\n")
    (inbox / "b_calls.jsonl").write_text(json.dumps(chat(1, "hello?")) + "\n")
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    stages = [("ingest", nightly.stage_ingest), ("eval", make("eval")), ("report", nightly.stage_report)]
    code = nightly.run(stages=stages)
    assert code == 4 == nightly.FAILED_FILES
    assert [r[1:] for r in _ledger()] == [("ingest", "done"), ("eval", "done"), ("report", "done")]  # went on
    summary = nightly.ledger(_ledger()[0][0])["ingest"]["summary"]
    assert summary["stored"] == 1 and len(summary["failed_files"]) == 1 and "a_export.csv" in summary["failed_files"][0]
    out = capsys.readouterr().out.replace("\n", "")
    assert "1 inbox file(s) failed to ingest" in out and "a_export.csv" in out and "exit 4" in out
    md = next((home / "reports").rglob("report.md")).read_text()
    failed = md.split("## Inbox files that failed to ingest or stored nothing\n", 1)[1].split("\n## ", 1)[0]
    assert "went on without them (exit code 4)" in failed and "a_export.csv: CSV/spreadsheet files are not read" in failed


def test_an_inbox_file_that_stored_nothing_is_named_and_the_nightly_exits_4(home, monkeypatch, capsys):
    """A file read whole whose every line was quarantined (a wrong format, a broken exporter) is `complete` in
    `ingests`, yet `traces ingest` exits 3 for it: the nightly must not take it for ingested either."""
    from builders.ingest_files import chat
    from builders.nightly_stubs import make
    inbox = home / "inbox"
    inbox.mkdir()
    (inbox / "a_wrong_shape.jsonl").write_text("".join(json.dumps({"messages": f"not a list {i}"}) + "\n"
                                                       for i in range(3)))
    (inbox / "b_calls.jsonl").write_text(json.dumps(chat(1, "hello?")) + "\n")
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    stages = [("ingest", nightly.stage_ingest), ("eval", make("eval")), ("report", nightly.stage_report)]
    assert nightly.run(stages=stages) == nightly.FAILED_FILES
    summary = nightly.ledger(_ledger()[0][0])["ingest"]["summary"]
    assert (summary["stored"], summary["quarantined"]) == (1, 3)
    assert summary["failed_files"] == [f"{inbox.resolve() / 'a_wrong_shape.jsonl'}: stored nothing (quarantined: 3); "
                                       "the lines: `python -m traces quarantine FILE`"]
    out = capsys.readouterr().out.replace("\n", "")
    assert "a_wrong_shape.jsonl" in out and "stored nothing" in out and "exit 4" in out
    md = next((home / "reports").rglob("report.md")).read_text()
    listed = md.split("## Inbox files that failed to ingest or stored nothing\n", 1)[1].split("\n## ", 1)[0]
    assert "a_wrong_shape.jsonl: stored nothing (quarantined: 3)" in listed and "b_calls" not in listed
