"""curate synth verifies a candidate by its cluster's own check, also when the check is a suite's YAML `checks:` list
(regex, json_schema against the request's own schema, judge) and lives in no trace's metadata.

Each test builds a real project (suite files, traces), scores it with `evals run` (logged), clusters the failures
and synthesizes against the OpenAI stub, as the nightly does.
"""
import json

import pytest
from builders.synth import examples, use_stub
from builders.trace_rows import insert_traces, trace_row
from openai_stub import OpenAIStub

from curate.synth import driver as synth
from evals import checks_judge
from evals.clusters import build_clusters, hashed_embed
from evals.runner import run_suite
from traces import store

NO_LINKS = """name: no_links
version: "1"
select:
  where: "response IS NOT NULL"
checks:
  - check: regex
    args: {pattern: "https?://", negate: true}
"""
QUESTIONS = ["How do I reset my password?", "Where can I download my invoices?", "How do I change my e-mail address?",
             "How can I cancel my subscription?", "Where do I find the API documentation?", "How do I add a user?"]
SCHEMA = {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}}


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder: pyproject.toml naming the suites, suites/no_links.yaml."""
    root = tmp_path / "support-bot"
    (root / "suites").mkdir(parents=True)
    (root / "suites" / "no_links.yaml").write_text(NO_LINKS)
    (root / "pyproject.toml").write_text('[tool.mend.evals]\nsuites = ["no_links"]\nsuites_dir = "suites"\n')
    monkeypatch.setenv("MEND_HOME", str(root))
    checks_judge._CLIENTS.clear()
    return root


def support_traces(response=lambda i: f"See https://acme.example/help/{i} for the steps.", params=None):
    return [trace_row(i, q, response(i), split="seed", params=params) for i, q in enumerate(QUESTIONS)]


def score_and_cluster(suite: str) -> str:
    run_id = run_suite(suite, "all", progress=False)
    made = build_clusters(run_id, embed=hashed_embed)
    assert made, "the fixture's traces must fail the suite"
    return run_id


def example_checks() -> dict[str, list[tuple]]:
    with store.connect(read_only=True) as con:
        rows = con.execute("SELECT example_id, check_id, passed, reason FROM example_checks "
                           "ORDER BY example_id, check_idx").fetchall()
    out: dict[str, list[tuple]] = {}
    for eid, *rest in rows:
        out.setdefault(eid, []).append(tuple(rest))
    return out


def link_on_odd_seeds(body):
    question = body["messages"][-1]["content"]
    if body.get("seed", 0) % 2:
        return f"You can read about it at https://acme.example/docs before you ask: {question}"
    return f"Open Settings, choose the Account page and follow the steps there to answer: {question}"


def test_a_yaml_suites_regex_check_verifies_the_candidates(project, monkeypatch):
    insert_traces(support_traces())
    score_and_cluster("no_links")
    with OpenAIStub() as stub:
        stub.responder = link_on_odd_seeds
        use_stub(monkeypatch, stub, per_cluster=4, k=2)    # default strategies: repair, constrained, sample
        synth.synthesize()
    rows, checks = examples(), example_checks()
    assert rows and not [r for r in rows if (r["reason"] or "").startswith("no checks")]
    spec = [{"check": "regex", "args": {"pattern": "https?://", "negate": True}}]
    assert all(json.loads(r["metadata"])["checks"] == spec for r in rows)   # the example carries its check
    linked = [r for r in rows if "https://" in r["response"]]
    clean = [r for r in rows if "https://" not in r["response"]]
    assert linked and clean
    assert all(r["status"] == "failed_verification" and r["reason"].startswith("regex: must not match")
               for r in linked)
    assert all(r["status"] == "verified" for r in clean)
    assert all([c[:2] for c in checks[r["example_id"]]] == [("regex", r in clean)] for r in rows)


def test_a_check_that_reads_the_request_gets_the_failing_traces_request(project, monkeypatch):
    """format's json_schema has no schema of its own: it validates against the request's response_format."""
    params = {"response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": SCHEMA}}}
    insert_traces(support_traces(lambda i: '{"order": %d}' % i, params))      # valid JSON, not the schema
    monkeypatch.setenv("MEND_EVALS_SUITES", "format")
    score_and_cluster("format")
    with OpenAIStub() as stub:
        stub.responder = lambda body: '{"order_id": "A-17"}' if body["seed"] == 0 else '{"order": 17}'
        use_stub(monkeypatch, stub, per_cluster=2, k=2, strategies='["sample"]')
        synth.synthesize()
    checks = example_checks()
    by_answer = {r["response"]: checks[r["example_id"]] for r in examples()}
    assert by_answer['{"order_id": "A-17"}'][0][:2] == ("json_schema", True)
    failed = by_answer['{"order": 17}'][0]
    assert failed[:2] == ("json_schema", False) and "'order_id' is a required property" in failed[2]


def judge_or_teacher(body):
    if body["messages"][0]["content"].startswith("You are a strict, fair grader"):
        return '{"score": 2, "reason": "it pastes a link instead of saying where to click"}'
    return "Open Settings and choose Security; the reset button is at the bottom of that page."


def test_a_judge_check_without_a_judge_endpoint_says_it_could_not_verify(project, monkeypatch):
    insert_traces(support_traces())
    with OpenAIStub() as stub:
        stub.responder = judge_or_teacher
        monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", stub.base_url)
        monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "stub-model")
        score_and_cluster("judge")                                  # the packaged judge suite, graded by the stub
        monkeypatch.delenv("MEND_EVALS_JUDGE_BASE_URL")             # synthesis runs where no judge is configured
        use_stub(monkeypatch, stub, per_cluster=2, k=1, strategies='["sample"]')
        synth.synthesize()
        rows = examples()
        assert rows and all(r["status"] == "failed_verification" for r in rows)
        assert all(r["reason"].startswith("judge: not run, so not verified: no judge endpoint configured")
                   for r in rows)
        # with a judge, the same candidate is verified by it, with the suite's own rubric
        monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", stub.base_url)
        checks_judge._CLIENTS.clear()
        stub.responder = lambda body: '{"score": 9, "reason": "says where to click"}'
        from curate.synth.candidates import verify
        ok, _, results = verify(rows[0]["prompt"], rows[0]["response"], json.loads(rows[0]["metadata"]))
        assert ok and results[0][1].score == 0.9
        assert "The answer addresses the user's request directly" in stub.requests[-1]["messages"][1]["content"]


def test_ifeval_prompts_are_unchanged(project, monkeypatch):
    """An instruction the metadata names is its own check: no `checks` entry is added for it."""
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    insert_traces([trace_row(i, f"{q} Do not use any commas.", "Sure, here it is.", md, split="seed")
                   for i, q in enumerate(QUESTIONS)])
    score_and_cluster("instruction_following")
    with store.connect(read_only=True) as con:
        cluster = synth.clusters(con)[0]
        prompts = synth.compose_prompts(con, cluster, 3)
    assert [p.metadata for p in prompts] == [md] * 3
    spec = [{"check": "regex", "args": {"pattern": "x"}}]
    assert synth.with_checks({**md, "checks": spec}, spec) == {**md, "checks": spec}
    assert synth.with_checks(md, [{"check": "punctuation:no_comma", "args": {}}]) == md


def test_full_mode_carries_the_check_with_the_suites_args(project, monkeypatch):
    """Full mode writes new requests: they carry the cluster's check with the arguments the suite ran it with."""
    insert_traces(support_traces())
    score_and_cluster("no_links")
    pairs = [{"request": "How do I export my contacts?", "response": "Open Settings, then Export, and press Start."},
             {"request": "Where is the status page?", "response": "It is at https://status.acme.example today."}]
    with OpenAIStub() as stub:
        stub.responder = lambda body: json.dumps({"examples": pairs})
        use_stub(monkeypatch, stub, mode="full", max_calls_per_cluster=1)
        synth.synthesize()
    rows = {r["response"]: r for r in examples()}
    assert json.loads(rows[pairs[0]["response"]]["metadata"])["checks"][0]["args"] == {"pattern": "https?://",
                                                                                      "negate": True}
    assert rows[pairs[0]["response"]]["status"] == "verified"
    assert rows[pairs[1]["response"]]["reason"].startswith("regex: must not match")
