"""Issue 24 item 1: a suite version scores each trace once. A logged run of a whole split scores only the traces new
since the suite version's last complete run and chains to it; readers (reports, clusters, the gate, the nightly)
see the whole chain through `run_results`; a new suite version, a killed run or a subset run never breaks it."""
import duckdb
import pytest
from builders.faults import fail_commit
from builders.suites import INSTRUCTIONS_ONLY, instructions_only  # noqa: F401  (autouse: the suite the counts are about)
from builders.trace_rows import LOWER, NO_COMMA, fetch, ifeval_meta, insert_traces, trace_row

from curate.loop import nightly
from evals import runner, suites
from evals.clusters import build_clusters, hashed_embed
from evals.runs import holdout_results
from traces import store
from traces.migrations import MIGRATIONS, migrate

SUITE = "instruction_following"


def traffic(start: int, n: int) -> None:
    """n traces from trace number `start`: odd ones fail no_comma, every third is holdout."""
    insert_traces([trace_row(i, f"Write about topic {i} without commas.", f"topic {i}{',' if i % 2 else ''} done",
                             ifeval_meta(NO_COMMA), split="holdout" if i % 3 == 0 else "seed")
                   for i in range(start, start + n)])


@pytest.fixture
def scored(monkeypatch):
    """The trace ids run_check is called on, in order."""
    real, calls = runner.run_check, []

    def counting(check_id, response, args, trace):
        calls.append(trace["trace_id"])
        return real(check_id, response, args, trace)
    monkeypatch.setattr(runner, "run_check", counting)
    return calls


def chain_of(run_id: str) -> list[tuple]:
    return fetch("""SELECT e.run_id, e.parent_run_id, e.n_traces FROM eval_run_chain c
                    JOIN eval_runs e ON e.run_id = c.member_run_id WHERE c.run_id = ? ORDER BY e.upto_seq""",
                 [run_id])


def test_a_second_run_scores_only_new_traces_and_readers_see_the_whole_chain(scored):
    traffic(0, 6)
    first = runner.run_suite(SUITE, "all", progress=False)
    traffic(6, 4)
    scored.clear()
    second = runner.run_suite(SUITE, "all", progress=False)
    assert sorted(scored) == ["t0006", "t0007", "t0008", "t0009"]  # each trace scored once
    assert chain_of(second) == [(first, None, 6), (second, first, 4)]
    assert fetch("SELECT count(*) FROM results WHERE run_id = ?", [second]) == [(4,)]
    # the chain's head stands for every trace: reports, the gate's holdout and clusters read all 10
    assert fetch("SELECT count(DISTINCT trace_id) FROM run_results WHERE run_id = ?", [second]) == [(10,)]
    with store.connect() as con:
        assert sorted(t for t, _ in holdout_results(con, second)) == ["t0000", "t0003", "t0006", "t0009"]
    clusters = build_clusters(second, embed=hashed_embed)
    assert sorted(t for c in clusters for t in c["members"]) == ["t0001", "t0005", "t0007"]  # t0003/t0009: holdout
    assert nightly._scored(second) == 10
    scored.clear()
    assert runner.run_suite(SUITE, "all", progress=False) == second  # nothing new: the chain's head is the run
    assert scored == [] and fetch("SELECT count(*) FROM eval_runs") == [(2,)]


def test_a_new_suite_version_or_an_edited_suite_file_scores_everything_again(scored):
    traffic(0, 4)
    runner.run_suite(SUITE, "all", progress=False)
    v2 = suites.parse(INSTRUCTIONS_ONLY.replace('version: "1"', 'version: "2"'))
    scored.clear()
    run_v2 = runner.run_suite(v2, "all", progress=False)
    assert sorted(scored) == ["t0000", "t0001", "t0002", "t0003"]
    assert chain_of(run_v2) == [(run_v2, None, 4)]
    edited = suites.parse(INSTRUCTIONS_ONLY.replace('version: "1"', 'version: "2"') + "# edited\n")
    scored.clear()
    runner.run_suite(edited, "all", progress=False)  # same version, other checks possible: not chained
    assert len(scored) == 4


def test_subset_runs_are_never_parents_and_other_splits_chain_apart(scored):
    traffic(0, 6)
    runner.run_suite(SUITE, "all", limit=2, progress=False)
    runner.run_suite(SUITE, "all", trace_ids=["t0005"], progress=False)
    seed = runner.run_suite(SUITE, "seed", progress=False)
    scored.clear()
    whole = runner.run_suite(SUITE, "all", progress=False)
    assert len(scored) == 6 and chain_of(whole) == [(whole, None, 6)]
    traffic(6, 3)
    scored.clear()
    again = runner.run_suite(SUITE, "seed", progress=False)
    assert sorted(scored) == ["t0007", "t0008"] and chain_of(again)[0][0] == seed


def test_a_run_killed_midway_is_no_parent_and_the_next_run_continues_the_last_complete_one(scored, monkeypatch):
    traffic(0, 4)
    first = runner.run_suite(SUITE, "all", progress=False)
    traffic(4, 4)
    real = runner.run_check

    def interrupted(check_id, response, args, trace):
        if trace["trace_id"] == "t0006":
            raise KeyboardInterrupt
        return real(check_id, response, args, trace)
    monkeypatch.setattr(runner, "run_check", interrupted)
    with pytest.raises(KeyboardInterrupt):
        runner.run_suite(SUITE, "all", progress=False)
    assert fetch("SELECT status, (SELECT count(*) FROM results r WHERE r.run_id = e.run_id) FROM eval_runs e "
                 "ORDER BY started_at") == [("complete", 4), ("incomplete", 0)]
    monkeypatch.setattr(runner, "run_check", real)
    third = runner.run_suite(SUITE, "all", progress=False)
    assert chain_of(third) == [(first, None, 4), (third, first, 4)]
    assert fetch("SELECT count(DISTINCT trace_id) FROM run_results WHERE run_id = ?", [third]) == [(8,)]


def test_a_failed_commit_keeps_the_chain_and_stores_nothing_of_the_run(monkeypatch):
    traffic(0, 4)
    first = runner.run_suite(SUITE, "all", progress=False)
    traffic(4, 2)
    real = fail_commit(monkeypatch, "results")
    with pytest.raises(store.StoreWriteError):
        runner.run_suite(SUITE, "all", progress=False)
    monkeypatch.setattr(store, "transaction", real)
    assert fetch("SELECT status FROM eval_runs ORDER BY started_at") == [("complete",), ("failed",)]
    assert fetch("SELECT count(*) FROM results") == [(4,)]  # the first run's results all kept
    second = runner.run_suite(SUITE, "all", progress=False)
    assert chain_of(second) == [(first, None, 4), (second, first, 2)]


def test_runs_stream_in_record_batches(scored, monkeypatch):
    monkeypatch.setattr(runner, "BATCH", 3)
    batches = []
    real = runner.score
    monkeypatch.setattr(runner, "score", lambda suite, traces, *a, **k: batches.append(len(traces))
                        or real(suite, traces, *a, **k))
    traffic(0, 8)
    run_id = runner.run_suite(SUITE, "all", progress=False)
    assert batches == [3, 3, 2]
    assert fetch("SELECT count(*) FROM results WHERE run_id = ?", [run_id]) == [(8,)]


def test_the_nightly_eval_stage_scores_only_what_was_ingested_since_the_last_nightly(tmp_path, monkeypatch, scored):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    stages = [("eval", nightly.stage_eval), ("report", lambda ctx: {})]
    traffic(0, 5)
    assert nightly.run(stages=stages) == 0
    traffic(5, 3)
    scored.clear()
    assert nightly.run(stages=stages, new=True) == 0
    assert sorted(scored) == ["t0005", "t0006", "t0007"]
    scored.clear()
    assert nightly.run(stages=stages, new=True) == 0  # nothing new: the last run stands, no empty run
    assert scored == [] and fetch("SELECT count(*) FROM eval_runs") == [(2,)]


def test_the_migration_moves_logged_outputs_to_references(tmp_path):
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    migrate(con, upto="m013_scale")
    insert_traces([trace_row(0, "p", "logged answer", ifeval_meta(LOWER))], con)
    for run_id, mode, output in (("r-logged", "logged", "logged answer"), ("r-gen", "generate", "regenerated")):
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at)
                       VALUES (?, 's', '1', ?, 'all', 'complete', now())""", [run_id, mode])
        con.execute("""INSERT INTO results (run_id, trace_id, check_idx, check_id, passed, output)
                       VALUES (?, 't0000', 0, 'c', true, ?)""", [run_id, output])
    assert migrate(con) == [name for name, _ in MIGRATIONS if name > "m013_scale"]
    assert con.execute("SELECT run_id, output FROM results ORDER BY run_id").fetchall() == [
        ("r-gen", "regenerated"), ("r-logged", None)]
    assert con.execute("SELECT run_id, output FROM run_results ORDER BY run_id").fetchall() == [
        ("r-gen", "regenerated"), ("r-logged", "logged answer")]
    assert con.execute("SELECT seq FROM traces").fetchall() == [(1,)]
