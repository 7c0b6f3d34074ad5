"""curate status: counts per cluster x state x reason kind."""
from test_dedup import add

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
