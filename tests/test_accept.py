"""curate accept --verified: pending_review -> accepted by `policy:verified`, with a reviews row each."""
from builders.examples import add

from curate import accept
from traces import store


def test_accept_verified_only_takes_pending_review():
    add("p1", "a", "b", status="pending_review")
    add("p2", "c", "d", status="pending_review")
    add("d1", "e", "f", status="duplicate")
    add("v1", "g", "h", status="verified")  # not filtered yet: never accepted unfiltered
    assert accept.accept_verified() == 2
    with store.connect(read_only=True) as con:
        rows = dict(con.execute("SELECT example_id, status || '/' || coalesce(reviewer, '') FROM examples").fetchall())
        n_reviews = con.execute("SELECT count(*) FROM reviews WHERE reviewer = 'policy:verified'").fetchall()[0][0]
    assert rows == {"p1": "accepted/policy:verified", "p2": "accepted/policy:verified", "d1": "duplicate/",
                    "v1": "verified/"}
    assert n_reviews == 2
    assert accept.accept_verified() == 0


def test_accept_cli_by_cluster(capsys):
    add("p1", "a", "b", status="pending_review")
    assert accept.main(["--verified", "--cluster", "other"]) == 0
    assert "accepted 0" in capsys.readouterr().out
    assert accept.main(["--verified"]) == 0
    assert "accepted 1" in capsys.readouterr().out
