"""Reports: per-suite/per-check pass rates with Wilson intervals; compare: paired deltas + exact McNemar."""
import numpy as np
import pytest
from builders.trace_rows import LOWER, NO_COMMA, ifeval_meta, insert_traces, trace_row

from evals import clusters, reports, runner
from evals.stats import mcnemar_exact, wilson
from traces import store
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)


@pytest.fixture
def two_runs():
    # 10 traces with no_comma: A passes 3; then responses change: B passes 9 (t0..t5 fixed, t6 regressed)
    rows = [trace_row(i, f"prompt {i} about topic", "a b" if i in (6, 7, 8) else "a, b", ifeval_meta(NO_COMMA))
            for i in range(10)]
    rows.append(trace_row(10, "lower please", "all lowercase text written in plain english here", ifeval_meta(LOWER, NO_COMMA)))
    insert_traces(rows)
    run_a = runner.run_suite("instruction_following", "all", progress=False)
    with store.connect() as con:
        con.execute("UPDATE traces SET response = 'a b' WHERE trace_id IN ('t0000','t0001','t0002','t0003','t0004',"
                    "'t0005','t0009')")
        con.execute("UPDATE traces SET response = 'a, b' WHERE trace_id = 't0006'")
    # the same traces again: named by id, since a whole-split logged run scores only new traces (issue 24 item 1)
    run_b = runner.run_suite("instruction_following", "all", trace_ids=[r["trace_id"] for r in rows], progress=False)
    return run_a, run_b


def test_summary_and_per_check(two_runs):
    run_a, _ = two_runs
    with store.connect() as con:
        res = reports.results(con, run_a)
    s = reports.summary(res)
    assert (s["traces"], s["trace_pass"], s["checks"], s["check_pass"]) == (11, 4, 12, 5)
    assert s["trace_ci"] == wilson(4, 11)
    per = reports.per_check(res).sort("check_id")
    assert per["check_id"].to_list() == ["change_case:english_lowercase", "punctuation:no_comma"]
    assert per["passed"].to_list() == [1, 4] and per["n"].to_list() == [1, 11]
    lo, hi = wilson(4, 11)
    assert per["lo"][1] == pytest.approx(lo) and per["hi"][1] == pytest.approx(hi)


def test_report_cli(two_runs, capsys):
    _, run_b = two_runs
    assert reports.main(["--run", run_b]) == 0
    out = capsys.readouterr().out
    assert "95% CI" in out and "punctuation:no_comma" in out and "traces (all checks)" in out
    assert reports.main([]) == 0  # newest complete run per suite


def test_compare_paired_deltas_and_mcnemar(two_runs):
    run_a, run_b = two_runs
    comp = reports.compare_runs(run_a, run_b)
    check = comp["checks"]["punctuation:no_comma"]
    # discordant pairs: A-only = t6 (1); B-only = t0..t5, t9 (7)
    assert (check["n"], check["a_only"], check["b_only"]) == (11, 1, 7)
    assert check["p"] == pytest.approx(mcnemar_exact(1, 7)) == pytest.approx(18 / 256)
    assert check["delta"] == pytest.approx(6 / 11)
    assert comp["suite"]["n"] == 11 and comp["suite"]["b_only"] == 7


def test_compare_per_cluster(two_runs, monkeypatch):
    run_a, run_b = two_runs
    monkeypatch.setattr(clusters, "embed_texts", lambda texts: np.eye(len(texts), 384))
    clusters.build_clusters(run_a)
    comp = reports.compare_runs(run_a, run_b)
    assert comp["clusters"]
    total = sum(c["n"] for c in comp["clusters"].values())
    assert total == 7  # A's seed failures, all in the no_comma clusters
    assert all(c["label"].startswith("punctuation:no_comma") for c in comp["clusters"].values())


def test_compare_refuses_different_versions(two_runs, capsys):
    run_a, run_b = two_runs
    with store.connect() as con:
        con.execute("UPDATE eval_runs SET suite_version = '2' WHERE run_id = ?", [run_b])
    assert reports.compare_main([run_a, run_b]) == 2
    assert "not comparable" in capsys.readouterr().err


def test_compare_cli(two_runs, capsys):
    run_a, run_b = two_runs
    assert reports.compare_main([run_a, run_b]) == 0
    out = capsys.readouterr().out
    assert "McNemar p" in out and "+54.5" in out
