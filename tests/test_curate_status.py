"""curate status: counts per cluster x state x reason kind."""
from builders.examples import add

from curate import status


def test_counts_group_reasons_by_kind(capsys):
    add("a", "p", "r", status="pending_review")
    add("b", "p", "r2", status="duplicate")
    add("c", "p", "r3", status="failed_verification")
    from traces import store
    with store.connect() as con:
        con.execute("UPDATE examples SET reason = 'near_duplicate: jaccard 0.91' WHERE example_id = 'b'")
        con.execute("UPDATE examples SET reason = 'punctuation:no_comma: failed: required: ...' "
                    "WHERE example_id = 'c'")
    rows = status.counts()
    assert ("c1", "", "duplicate", "near_duplicate", 1) in rows
    assert ("c1", "", "failed_verification", "punctuation:no_comma", 1) in rows
    assert status.main([]) == 0
    out = capsys.readouterr().out
    assert "near_duplicate" in out and "pending_review: 1" in out


def test_yield_per_check_and_strategy(capsys):
    from traces import store
    with store.connect() as con:
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES "
                    "('c1', 'r', 'punctuation:no_comma', 'no commas', 3)")
    for eid, status_, reason, strategy in [
            ("a", "accepted", None, "repair"), ("b", "pending_review", None, "repair"),
            ("c", "failed_verification", "not_fluent: repeated lines", "sample"),
            ("d", "failed_verification", "punctuation:no_comma: failed", "sample"),
            ("e", "duplicate", "exact", "sample"), ("f", "pending_review", None, "constrained")]:
        add(eid, "p", "r" + eid, status=status_)
        with store.connect() as con:
            con.execute("UPDATE examples SET reason = ?, strategy = ? WHERE example_id = ?", [reason, strategy, eid])
    rows = status.yields()
    # candidates, verified (passed the checks), fluent (and the quality filter), kept (not dropped so far), accepted
    assert ("punctuation:no_comma", "repair", 2, 2, 2, 2, 1) in rows
    assert ("punctuation:no_comma", "sample", 3, 2, 1, 0, 0) in rows
    assert ("punctuation:no_comma", "constrained", 1, 1, 1, 1, 0) in rows
    assert status.main([]) == 0
    out = capsys.readouterr().out
    assert "yield per check" in out and "strategy" in out and "repair" in out
