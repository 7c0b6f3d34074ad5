"""The runner: logged mode, generate mode on the tiny model, run status bookkeeping, selection, bulk results."""
import json
import os
import subprocess
import sys

import pytest
from builders.trace_rows import (
    LOWER,
    NO_COMMA,
    fetch,
    ifeval_meta,
    insert_traces,
    trace_row,
)

from evals import runner, suites
from evals.runs import find_run, refresh_stale
from traces import store
from train.generate import greedy_settings
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)

BASE = "base-model"  # the base model the logged responses say they came from (metadata.generation)


@pytest.fixture
def traffic():
    rows = [
        trace_row(0, "Write about cats without commas.", "cats are nice and soft", ifeval_meta(NO_COMMA)),
        trace_row(1, "Write about dogs without commas.", "dogs, they bark", ifeval_meta(NO_COMMA)),
        trace_row(2, "Write lowercase about birds, no commas.", "birds fly high", ifeval_meta(LOWER, NO_COMMA),
                  split="holdout"),
        trace_row(3, "Say hi.", "Hi!", None),  # no instructions: not selected by instruction_following
    ]
    insert_traces(rows)
    return rows


def test_logged_run_writes_run_and_results(traffic):
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    (status, n, mode, version, pid), = fetch("SELECT status, n_traces, mode, suite_version, pid FROM eval_runs")
    assert (status, n, mode, version, pid) == ("complete", 3, "logged", "1", os.getpid())
    rows = fetch("SELECT trace_id, check_idx, check_id, passed, passed_loose, output, reason FROM run_results "
                 "WHERE run_id = ? ORDER BY trace_id, check_idx", [run_id])
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("t0000", 0, "punctuation:no_comma", True), ("t0001", 0, "punctuation:no_comma", False),
        ("t0002", 0, "change_case:english_lowercase", True), ("t0002", 1, "punctuation:no_comma", True)]
    assert rows[1][5] == "dogs, they bark" and "1 comma" in rows[1][6]  # joined back from the trace
    assert fetch("SELECT count(*) FROM results WHERE output IS NOT NULL") == [(0,)]  # a reference, not a copy


def test_split_limit_and_trace_ids(traffic):
    run_id = runner.run_suite("instruction_following", "holdout", progress=False)
    assert fetch("SELECT DISTINCT trace_id FROM results WHERE run_id = ?", [run_id]) == [("t0002",)]
    run_id = runner.run_suite("instruction_following", "all", limit=1, progress=False)
    assert fetch("SELECT DISTINCT trace_id FROM results WHERE run_id = ?", [run_id]) == [("t0000",)]
    run_id = runner.run_suite("instruction_following", "all", trace_ids=["t0001"], progress=False)
    assert fetch("SELECT DISTINCT trace_id FROM results WHERE run_id = ?", [run_id]) == [("t0001",)]


def logged_by_base_model():
    """The holdout trace says the base model wrote it greedily: its logged run then stands for that model."""
    meta = {**ifeval_meta(LOWER, NO_COMMA), "generation": {"model": BASE, **greedy_settings()}}
    with store.connect() as con:
        con.execute("UPDATE traces SET metadata = ? WHERE split = 'holdout'", [json.dumps(meta)])


def reusable(version: str, model_ref: str = BASE) -> str | None:
    """The run the gate would reuse for this key (evals.runs.find_run), or None."""
    with store.connect() as con:
        return find_run(con, "instruction_following", version, model_ref, None, greedy_settings(), BASE)[0]


def test_find_run(traffic):
    logged_by_base_model()
    runner.run_suite("instruction_following", "seed", progress=False)
    assert reusable("1") is None                      # a seed run never stands for the holdout
    run_id = runner.run_suite("instruction_following", "all", progress=False)
    assert reusable("1") == run_id
    assert reusable("2") is None


def test_killed_run_is_incomplete_never_complete(traffic):
    # a child process starts a run and dies (SIGKILL) before finishing: its row stays 'running' with a dead pid
    code = ("import os, evals.runner as r\n"
            "r._regenerate = None\n"
            "def die(*a, **k): os.kill(os.getpid(), 9)\n"
            "r.score = die\n"
            "r.run_suite('instruction_following', 'all', progress=False)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True)
    assert proc.returncode == -9
    assert fetch("SELECT status FROM eval_runs") == [("running",)]
    assert fetch("SELECT count(*) FROM results") == [(0,)]
    # readers detect the dead pid and mark the run incomplete; it is never offered for reuse
    logged_by_base_model()
    with store.connect() as con:
        refresh_stale(con)
    assert reusable("1") is None
    assert fetch("SELECT status FROM eval_runs") == [("incomplete",)]


def test_keyboard_interrupt_marks_incomplete(traffic, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(runner, "score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite("instruction_following", "all", progress=False)
    assert fetch("SELECT status, finished_at IS NOT NULL FROM eval_runs") == [("incomplete", True)]


def test_a_crashing_check_is_a_failed_result_not_a_dead_run(traffic):
    from evals.checks import REGISTRY, register

    @register("boom")
    def boom(response, args, trace):
        raise RuntimeError("bad user check")
    try:
        suite = suites.parse("name: s\nversion: '1'\nselect: {where: 'metadata IS NOT NULL'}\nchecks: [{check: boom}]")
        run_id = runner.run_suite(suite, "all", progress=False)
    finally:
        REGISTRY.pop("boom")
    reasons = fetch("SELECT DISTINCT passed, reason FROM results WHERE run_id = ?", [run_id])
    assert reasons == [(False, "boom: check raised RuntimeError: bad user check")]


def test_generate_mode_on_tiny_model(traffic, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "4")
    run_id = runner.run_suite("instruction_following", "all", model=str(tiny_model_dir), progress=False)
    (mode, model_ref, gen, status), = fetch("SELECT mode, model_ref, gen_settings, status FROM eval_runs")
    assert (mode, model_ref, status) == ("generate", str(tiny_model_dir), "complete")
    assert json.loads(gen)["max_new_tokens"] == 4
    outputs = fetch("SELECT DISTINCT trace_id, output FROM results WHERE run_id = ? ORDER BY trace_id", [run_id])
    assert len(outputs) == 3
    assert outputs[1][1] != "dogs, they bark"  # regenerated, not the logged response
    assert reusable("1", str(tiny_model_dir)) == run_id


def test_cli_run_prints_report(traffic, capsys):
    from evals.cli import main
    assert main(["run", "--suite", "instruction_following", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "punctuation:no_comma" in out and "95% CI" in out


def test_cli_unknown_suite_is_a_clear_error(capsys):
    from evals.cli import main
    assert main(["run", "--suite", "nope", "--quiet"]) == 2
    assert "unknown suite 'nope'" in capsys.readouterr().err


def test_generate_mode_resumes_from_the_generation_cache(traffic, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "3")
    first = runner.run_suite("instruction_following", "all", model=str(tiny_model_dir), progress=False)
    calls = []
    import train.generate
    real = train.generate.generate
    monkeypatch.setattr(train.generate, "generate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = runner.run_suite("instruction_following", "all", model=str(tiny_model_dir), progress=False)
    assert calls == []  # every answer came from the cache
    out = "SELECT trace_id, check_idx, output FROM results WHERE run_id = ? ORDER BY 1, 2"
    assert fetch(out, [first]) == fetch(out, [again])
