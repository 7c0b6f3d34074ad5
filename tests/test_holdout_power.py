"""The nightly's holdout stage (curate.loop.holdout): when the gate's exact McNemar test could not reach gate_alpha
for the clusters chosen even with every holdout failure fixed, the nightly stops before synthesis (exit 5), names
the fix, and goes on only when told to. The committed sample traffic's default nightly is not stopped."""
import pytest
from builders import sample_traffic
from builders.suites import instructions_only  # noqa: F401  (autouse: IFEval instructions only, no fluent)
from builders.trace_rows import NO_COMMA, ifeval_meta, insert_traces, trace_row

from curate.loop import nightly
from curate.loop.holdout import stage_holdout
from evals import clusters, runner
from traces import store


def _clustered(holdout_failures: int) -> str:
    """One no-comma cluster (10 seed failures), `holdout_failures` holdout failures of it and a passing holdout
    trace; returns the logged eval run, clustered."""
    rows = [trace_row(i, f"Write note {i} without commas.", "well, no", ifeval_meta(NO_COMMA)) for i in range(10)]
    rows += [trace_row(100 + i, f"Write memo {i} without commas.", "so, no", ifeval_meta(NO_COMMA), split="holdout")
             for i in range(holdout_failures)]
    rows.append(trace_row(200, "Write a line without commas.", "fine", ifeval_meta(NO_COMMA), split="holdout"))
    insert_traces(rows)
    run = runner.run_suite("instruction_following", "all", progress=False)
    clusters.build_clusters(run, embed=clusters.hashed_embed)
    return run


def _night(run: str, calls: list, **ctx) -> tuple[int, nightly.Context]:
    stub = lambda name: (lambda c: calls.append(name) or {})  # noqa: E731
    stages = [("clusters", lambda c: {"run": run}), ("holdout", stage_holdout), ("synth", stub("synth")),
              ("train", stub("train")), ("report", stub("report"))]
    context = nightly.Context(ctx.pop("nightly_id", "nightly-test"), **ctx)
    return nightly.run_stages(stages, context), context


def _ledger() -> dict:
    return {stage: (row["status"], row["summary"]) for stage, row in nightly.ledger("nightly-test").items()}


def test_a_holdout_too_small_stops_the_nightly_before_synthesis():
    run, calls = _clustered(5), []  # 2 * 0.5^5 = 0.0625: never below alpha 0.05, whatever the adapter does
    code, _ = _night(run, calls)
    assert code == nightly.STOPPED == 5 and calls == ["report"]
    ledger = _ledger()
    status, summary = ledger["holdout"]
    assert status == "done" and summary["holdout_failures"] == 5 and summary["need"] == 6
    stop = summary["stop"]
    assert "holdout too small" in stop and "more traces" in stop and "holdout_fraction" in stop
    assert "--train-anyway" in stop
    for stage in ("synth", "train"):
        assert ledger[stage][0] == "skipped" and ledger[stage][1]["why"].startswith("stopped at holdout: ")
    assert _night(run, calls)[0] == 5 and calls == ["report"]  # called again: nothing resumes past the stop


@pytest.mark.parametrize("how", ["flag", "setting"])
def test_told_to_train_anyway_it_goes_on_and_says_so(how, monkeypatch):
    if how == "setting":
        monkeypatch.setenv("MEND_CURATE_NIGHTLY_TRAIN_ANYWAY", "true")
    run, calls = _clustered(1), []
    code, ctx = _night(run, calls, train_anyway=how == "flag")
    assert code == 0 and calls == ["synth", "train", "report"] and ctx.stopped is None
    summary = _ledger()["holdout"][1]
    assert "stop" not in summary and "holdout too small" in summary["attention"]


def test_enough_holdout_failures_go_on_by_the_gates_own_rule(monkeypatch):
    run, calls = _clustered(6), []  # 2 * 0.5^6 = 0.031 < 0.05
    assert _night(run, calls)[0] == 0 and calls == ["synth", "train", "report"]
    assert _ledger()["holdout"][1]["best_p"] == 0.0312
    monkeypatch.setenv("MEND_EVALS_GATE_ALPHA", "0.01")  # the gate would need 8: the same run now stops
    assert _night(run, calls, nightly_id="nightly-test-2")[0] == 5


@pytest.mark.parametrize("policy", ["pooled", "all"])
def test_the_committed_sample_traffics_default_nightly_is_not_stopped(policy, monkeypatch):
    from traces.ingest import ingest_file
    monkeypatch.delenv("MEND_EVALS_SUITES_DIR")  # the packaged suite, fluent included, as the default nightly
    monkeypatch.setenv("MEND_EVALS_GATE_TARGET_POLICY", policy)
    ingest_file(sample_traffic.PATH)
    run = runner.run_suite("instruction_following", "all", progress=False)
    clusters.build_clusters(run, embed=clusters.hashed_embed)
    ctx = nightly.Context("nightly-sample", done={"clusters": {"run": run}})
    summary = stage_holdout(ctx)
    assert "stop" not in summary and "attention" not in summary
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM traces WHERE split = 'holdout'").fetchone()[0] == \
            summary["holdout_traces"] > 200
    assert min(summary["per_cluster"].values()) >= summary["need"] and len(summary["per_cluster"]) == 6
