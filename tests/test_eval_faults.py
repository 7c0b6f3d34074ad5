"""Issue 25, the eval stage: killed, raising or out of disk midway, it leaves no half-complete run counted as
complete, a re-run completes, and the error names what broke and where. Driven through the nightly's own eval stage."""
import json

import pytest
from builders.faults import fail_commit, killed_in_a_child
from builders.trace_rows import LOWER, NO_COMMA, fetch, ifeval_meta, insert_traces, trace_row

from curate.loop import nightly
from evals import runner
from traces import store
from traces.settings import db_path
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)

STAGES = [("eval", nightly.stage_eval), ("report", lambda ctx: {})]


@pytest.fixture
def traffic(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))  # the nightly's lock file goes under tmp_path
    insert_traces([trace_row(i, f"Write about topic {i} without commas.", f"topic {i}, done", ifeval_meta(NO_COMMA))
                   for i in range(6)])


def ledger() -> list[tuple]:
    return fetch("SELECT stage, status, summary FROM nightly_ledger ORDER BY started_at")


def runs() -> list[tuple]:
    return fetch("""SELECT status, (SELECT count(*) FROM results r WHERE r.run_id = e.run_id) FROM eval_runs e
                    ORDER BY started_at""")


def test_ctrl_c_inside_a_check_midway_leaves_no_complete_run_and_the_next_nightly_completes(traffic, monkeypatch):
    real, calls = runner.run_check, []

    def interrupted_on_the_fourth(check_id, response, args, trace):
        calls.append(trace["trace_id"])
        if len(calls) == 4:
            raise KeyboardInterrupt  # Ctrl-C while the 4th of 6 traces is scored
        return real(check_id, response, args, trace)
    monkeypatch.setattr(runner, "run_check", interrupted_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        nightly.run(stages=STAGES)
    assert runs() == [("incomplete", 0)]  # nothing of the 3 scored traces stored, never `complete`
    assert [r[:2] for r in ledger()] == [("eval", "running")]
    monkeypatch.setattr(runner, "run_check", real)
    assert nightly.run(stages=STAGES) == 0  # resumes the same nightly: the eval stage runs again, whole
    assert runs() == [("incomplete", 0), ("complete", 6)]
    assert [r[:2] for r in ledger()] == [("eval", "done"), ("report", "done")]


def test_a_trace_whose_metadata_cannot_name_its_checks_fails_the_run_naming_suite_and_trace(traffic, capsys):
    with store.connect() as con:  # 2 instruction ids, 1 kwargs entry, in one trace of six
        con.execute("UPDATE traces SET metadata = ? WHERE trace_id = 't0003'", [json.dumps(
            {"instruction_id_list": [NO_COMMA[0], LOWER[0]], "kwargs": [{}]})])
    assert nightly.run(stages=STAGES) == 1
    assert runs() == [("failed", 0)]
    (stage, status, summary), = ledger()
    error = json.loads(summary)["error"]
    assert (stage, status) == ("eval", "failed")
    assert "suite instruction_following: trace t0003: its metadata cannot name its checks" in error
    assert "2 instruction ids but 1 kwargs entries" in error
    assert "t0003" in " ".join(capsys.readouterr().out.split())
    with store.connect() as con:
        con.execute("UPDATE traces SET metadata = ? WHERE trace_id = 't0003'", [json.dumps(ifeval_meta(NO_COMMA))])
    assert nightly.run(stages=STAGES) == 0  # the same nightly, resumed once the trace is fixed
    assert runs() == [("failed", 0), ("complete", 6)]


# ---------- a full disk and a kill while the run's results are written or scored ----------

def test_a_failed_commit_of_the_results_fails_the_run_naming_stage_and_store_and_a_rerun_completes(
        traffic, monkeypatch):
    real = fail_commit(monkeypatch, "results")
    assert nightly.run(stages=STAGES) == 1
    assert runs() == [("failed", 0)]  # no result of it stored, never `complete`
    (stage, status, summary), = ledger()
    error = json.loads(summary)["error"]
    assert (stage, status) == ("eval", "failed")
    assert "evals run run-" in error and "(suite instruction_following): storing 6 results" in error
    assert f"in the database {db_path()} failed, nothing of it was kept" in error and "No space left" in error
    monkeypatch.setattr(store, "transaction", real)  # the disk has room again
    assert nightly.run(stages=STAGES) == 0
    assert runs() == [("failed", 0), ("complete", 6)]
    assert fetch("SELECT count(*), count(DISTINCT (run_id, trace_id, check_idx)) FROM results") == [(6, 6)]


def test_a_run_killed_while_scoring_is_incomplete_and_the_next_nightly_scores_it_whole(traffic):
    killed_in_a_child("from evals import runner\n"
                      "real, calls = runner.run_check, []\n"
                      "def dies_on_the_fourth(*a):\n"
                      "    calls.append(1)\n"
                      "    if len(calls) == 4:\n"
                      "        die()\n"
                      "    return real(*a)\n"
                      "runner.run_check = dies_on_the_fourth\n"
                      "runner.run_suite('instruction_following', 'all', progress=False)\n")
    assert runs() == [("running", 0)]  # its process is gone: nothing marked it
    assert nightly.run(stages=STAGES) == 0  # finds it stale (incomplete), never reuses it, scores again
    assert runs() == [("incomplete", 0), ("complete", 6)]
    assert fetch("SELECT count(*), count(DISTINCT (run_id, trace_id, check_idx)) FROM results") == [(6, 6)]
