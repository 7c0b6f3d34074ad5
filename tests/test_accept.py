"""curate accept --verified: pending_review -> accepted by `policy:verified`, with a reviews row each, for what a
check vouches for (an IFEval instruction, equals, the judge); what only narrow checks verified waits for review."""
import pytest
from builders.examples import add

from curate import accept
from traces import store

COMMA = "punctuation:no_comma"  # an IFEval instruction: the request states it, so its check vouches


def _status():
    with store.connect(read_only=True) as con:
        return dict(con.execute("SELECT example_id, status || '/' || coalesce(reviewer, '') FROM examples").fetchall())


def test_accept_verified_only_takes_pending_review():
    add("p1", "a", "b", status="pending_review", checks=[COMMA])
    add("p2", "c", "d", status="pending_review", checks=[COMMA, "fluent"])  # the packaged suite's checks: as before
    add("d1", "e", "f", status="duplicate", checks=[COMMA])
    add("v1", "g", "h", status="verified", checks=[COMMA])  # not filtered yet: never accepted unfiltered
    assert accept.accept_verified().accepted == 2
    with store.connect(read_only=True) as con:
        n_reviews = con.execute("SELECT count(*) FROM reviews WHERE reviewer = 'policy:verified'").fetchall()[0][0]
    assert _status() == {"p1": "accepted/policy:verified", "p2": "accepted/policy:verified", "d1": "duplicate/",
                         "v1": "verified/"}
    assert n_reviews == 2
    assert accept.accept_verified().accepted == 0


def test_only_narrow_checks_wait_for_review_without_a_judge():
    add("links", "How do I reset it?", "Open Settings.", status="pending_review", checks=["regex"])
    add("fluent", "Tell me a story.", "Once upon a time.", status="pending_review", checks=["fluent"])
    add("nothing", "Hi", "Hello", status="pending_review")  # no check at all verified it
    add("both", "No commas please.", "Fine", status="pending_review", checks=["regex", COMMA])
    add("fixed", "Say ok.", "ok", status="pending_review", checks=["equals"])
    result = accept.accept_verified()
    assert result.accepted == 2 and result.waiting == {accept.NO_JUDGE: 3}
    assert result.narrow == ["fluent", "regex"]
    assert "3 example(s) wait for review" in result.why_waiting() and "python -m curate review" in result.why_waiting()
    assert _status() == {"links": "pending_review/", "fluent": "pending_review/", "nothing": "pending_review/",
                         "both": "accepted/policy:verified", "fixed": "accepted/policy:verified"}


def test_the_judge_vouches_for_what_only_narrow_checks_verified(monkeypatch):
    from openai_stub import OpenAIStub

    from evals import checks_judge
    add("good", "How do I reset my password?", "Open Settings, then Security.", status="pending_review",
        checks=["regex", "fluent"])
    add("bad", "Where are my invoices?", "The Teller is a benevolent organization.", status="pending_review",
        checks=["regex"])
    with OpenAIStub(models=("judge-1",)) as stub:
        stub.responder = lambda body: ('{"score": 9, "reason": "direct"}' if "Settings" in
                                       body["messages"][1]["content"] else '{"score": 2, "reason": "off topic"}')
        monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", stub.base_url)
        monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "judge-1")
        checks_judge._CLIENTS.clear()
        result = accept.accept_verified()
        assert "Rubric:" in stub.requests[0]["messages"][1]["content"]  # the judge suite's rubric
    checks_judge._CLIENTS.clear()
    assert result.accepted == 1 and result.waiting == {accept.JUDGE_FAILED: 1}
    assert _status() == {"good": "accepted/policy:verified", "bad": "pending_review/"}
    with store.connect(read_only=True) as con:
        judged = con.execute("SELECT check_idx, check_id, passed FROM example_checks WHERE example_id = 'good' "
                             "ORDER BY check_idx").fetchall()
        why = con.execute("SELECT reason FROM reviews WHERE example_id = 'good'").fetchone()[0]
    assert judged == [(0, "regex", True), (1, "fluent", True), (2, "judge", True)]
    assert why == "passed verification, every filter and the judge"


def test_a_team_check_can_declare_that_it_vouches():
    from evals.checks import REGISTRY, VOUCHING, CheckResult, register, vouches
    assert vouches(COMMA) and vouches("equals") and vouches("judge")
    assert not any(vouches(c) for c in ("regex", "fluent", "not_contains", "json_schema", "tool_calls", "nope"))
    register("exact_answer", vouches=True)(lambda r, a, t: CheckResult(True, 1.0, "ok"))
    try:
        add("own", "q", "a", status="pending_review", checks=["exact_answer"])
        assert accept.accept_verified().accepted == 1
    finally:
        VOUCHING.discard("exact_answer")
        REGISTRY.pop("exact_answer")


@pytest.mark.parametrize("cluster, accepted", [("other", 0), (None, 1)])
def test_accept_cli_by_cluster(capsys, cluster, accepted):
    add("p1", "a", "b", status="pending_review", checks=[COMMA])
    add("p2", "c", "d", status="pending_review", checks=["regex"])
    assert accept.main(["--verified", *(["--cluster", cluster] if cluster else [])]) == 0
    out = capsys.readouterr().out
    assert f"accepted {accepted}" in out
    assert ("1 example(s) wait for review" in out) == (cluster is None)
