"""curate synth against the OpenAI stub server: compose mode, verification, holdout exclusion, budgets."""
import json

from openai_stub import OpenAIStub, Reply
from builders.synth import examples, seed_store, use_stub

from curate.synth import driver as synth
from traces import store


def provenance() -> list[dict]:
    """strategy, source_id and request_hash of every example, in the order examples() lists them."""
    with store.connect(read_only=True) as con:
        rows = con.execute("""SELECT example_id, strategy, source_id, request_hash FROM examples
                              ORDER BY created_at, example_id""").fetchall()
    return [dict(zip(("example_id", "strategy", "source_id", "request_hash"), r)) for r in rows]


def answer_alternating(body):
    # seeds 0,2 answer without commas (verified), 1,3 with one (failed_verification)
    return "Here is my answer with no punctuation problems" if body["seed"] % 2 == 0 else "Yes, of course."


def test_compose_verifies_each_candidate_and_skips_holdout(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = answer_alternating
        use_stub(monkeypatch, stub, per_cluster=4, k=2, strategies='["sample"]')
        tallies = synth.synthesize()
        sent = [m["content"] for r in stub.requests for m in r["messages"]]
    rows = examples()
    assert len(rows) == 8 and stub.count == 8  # 4 prompts x k=2
    assert {r["status"] for r in rows} == {"verified", "failed_verification"}
    failed = [r for r in rows if r["status"] == "failed_verification"]
    assert all("punctuation:no_comma" in r["reason"] for r in failed)
    # holdout prompts (t5, t6: b005, b006) never seed synthesis, not even the holdout cluster member
    assert not any("bamboo" in s or "half marathon" in s for s in sent)
    assert {r["seed_trace_id"] for r in rows} <= {"t1", "t2", "t3", "t4"}
    # the failing seed prompts come first, then recombinations with fresh kwargs from the builder
    md = [json.loads(r["metadata"]) for r in rows]
    assert any(m.get("composed_from") for m in md) and all(m["instruction_id_list"] == ["punctuation:no_comma"]
                                                            for m in md)
    assert tallies["c1"].verified == 4 and tallies["c1"].counts("sample").kept == 4
    assert {r["strategy"] for r in provenance()} == {"sample"} and all(r["request_hash"] for r in rows)
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM example_checks").fetchall()[0][0] == 8
    # k samples are k requests with distinct seeds
    assert sorted({r["seed"] for r in stub.requests}) == [0, 1]


def test_failing_seed_query_excludes_holdout_even_if_member(monkeypatch):
    seed_store()
    with store.connect(read_only=True) as con:
        ids = [t["trace_id"] for t in synth.failing_seed_traces(con, "c1")]
        bases = [t["trace_id"] for t in synth.seed_traces_with_instructions(con)]
    assert ids == ["t1", "t2"] and "t5" not in bases and "t6" not in bases


def test_base_request_strips_the_instruction():
    t = {"prompt": "Tell a story about a fox. " + "In your entire response, refrain from the use of any commas.",
         "metadata": {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}}
    assert synth.base_request(t) == "Tell a story about a fox."
    assert synth.base_request({**t, "metadata": {**t["metadata"], "base_request": "B"}}) == "B"


def test_rerun_repeats_no_call_and_writes_nothing_twice(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = answer_alternating
        use_stub(monkeypatch, stub, per_cluster=2, k=2)
        synth.synthesize()  # the default strategies: repair, constrained (no dialect on a remote stub), sample
        first, rows = stub.count, examples()
        synth.synthesize()
        assert stub.count == first  # all answered from llm_calls
    assert examples() == rows  # repairs included: the same rows, none twice
    assert {r["strategy"] for r in provenance()} == {"repair", "sample"}


def test_call_budget_stops_work(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        use_stub(monkeypatch, stub, per_cluster=4, k=4, max_calls_per_cluster=5)
        synth.synthesize()
        assert stub.count == 5


def test_guided_requests_carry_bias_system_and_record_guidance(monkeypatch, tiny_model_dir):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: ("here is a fine answer without any commas in it"
                                       if body.get("logit_bias") else "Yes, sure, fine.")
        use_stub(monkeypatch, stub, per_cluster=2, k=2, strategies='["constrained", "sample"]',
                 teacher_dialect="transformers", teacher_tokenizer=str(tiny_model_dir))
        tallies = synth.synthesize()
        guided = [r for r in stub.requests if r.get("logit_bias")]
    # the transformers dialect of the constrained strategy is the logit_bias token ban
    assert tallies["c1"].verified == 0 and tallies["c1"].guided_verified == 4 and len(guided) == 4
    assert guided and all(r["messages"][0]["role"] == "system" and "comma" in r["messages"][0]["content"]
                          for r in guided)
    bias = guided[0]["logit_bias"]
    assert all(v == -100.0 for v in bias.values()) and len(bias) > 10
    rows = [r for r in examples() if r["guidance"]]
    assert len(rows) == 4 and json.loads(rows[0]["guidance"])["logit_bias_tokens"] == len(bias)
    assert {p["strategy"] for p in provenance() if p["example_id"] in {r["example_id"] for r in rows}} \
        == {"constrained"}


def test_guided_degenerate_text_is_dropped_as_not_fluent(monkeypatch, tiny_model_dir):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda body: "🙂🙂🙂🙂🙂🙂🙂 ok ok" if body.get("logit_bias") else "Yes, sure."
        use_stub(monkeypatch, stub, per_cluster=1, k=1, strategies='["constrained"]', teacher_dialect="transformers",
                 teacher_tokenizer=str(tiny_model_dir))
        synth.synthesize()
    guided = [r for r in examples() if r["guidance"]]
    assert guided and guided[0]["status"] == "failed_verification" and guided[0]["reason"].startswith("not_fluent")


def test_sampled_degenerate_text_is_dropped_as_not_fluent_too(monkeypatch):
    seed_store()  # the quality filter runs for every strategy, not only for guided text
    with OpenAIStub() as stub:
        stub.responder = lambda body: "ku ku ku ku ku ku ku ku ku"
        use_stub(monkeypatch, stub, per_cluster=1, k=1, strategies='["sample"]')
        synth.synthesize()
    rows = examples()
    assert len(rows) == 1 and rows[0]["status"] == "failed_verification" and rows[0]["reason"].startswith("not_fluent")


def test_fluency_filter():
    from evals.quality import fluency
    assert fluency("this is a plain and readable sentence about foxes.")[0]
    assert not fluency("aaaaaaaaaaaa bbbbbbbbbb")[0]
    assert not fluency("x1 ## 12 :: 44 ++ ok")[0]


def test_failing_share_mixes_failing_prompts_with_single_instruction_recombinations():
    seed_store()  # cluster c1: failing seed traces t1, t2; other seed bases t3, t4
    with store.connect(read_only=True) as con:
        cluster = synth.clusters(con, "c1")[0]
        half = synth.compose_prompts(con, cluster, 4, failing_share=0.25)
        only = synth.compose_prompts(con, cluster, 2, failing_share=1.0)
        short = synth.compose_prompts(con, cluster, 4, failing_share=0.0)  # at least one failing prompt
    assert [p.seed_trace_id for p in only] == ["t1", "t2"]
    assert half[0].seed_trace_id == "t1" and all(p.metadata.get("composed_from") for p in half[1:3])
    # two other bases exist, so the fourth prompt is the next failing one (topped up, not left out)
    assert [p.seed_trace_id for p in half] == ["t1", "t3", "t4", "t2"]
    assert len(short) == 4 and short[0].seed_trace_id == "t1"
