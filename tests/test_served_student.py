"""The served student (evals/student.py) against the loopback OpenAI stub: what a request asks for (the adapter's
served name, greedy, the token budget), the eval run it makes (the same rows as in-process, its settings saying who
answered, so the gate never mixes the two), the cache keyed by the adapter's weights, and the callers (runner, gate,
validation, claims) answering through it without loading a model. The real server: test_served_student_real.py."""
import json

import pytest
from builders.trace_rows import NO_COMMA, fetch, ifeval_meta, insert_traces, trace_row
from openai_stub import OpenAIStub, Reply

from evals import gate, runner
from evals.client import EndpointError
from evals.runs import find_run, given_run_mismatch
from evals.student import Student, StudentError, answer_settings
from traces import store
from train.generate import Generation, greedy_settings
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)


@pytest.fixture
def stub(monkeypatch):
    with OpenAIStub() as s:
        monkeypatch.setenv("MEND_EVALS_STUDENT_URL", s.base_url)
        monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "0")
        monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "7")
        yield s


@pytest.fixture
def no_model(monkeypatch):
    """A served student never loads the model in this process."""
    import train.models
    monkeypatch.setattr(train.models, "load", lambda *a, **k: pytest.fail("loaded the model in-process"))


def fake_adapter(tmp_path, name="run-1", weights=b"w1"):
    folder = tmp_path / "adapters" / weights.decode() / name
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(weights)
    return folder


def user(text):
    return [{"role": "user", "content": text}]


def test_requests_name_the_adapter_and_are_greedy_at_the_token_budget(stub, no_model, tmp_path):
    answers = {"a": Reply(content="one two", usage={"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}),
               "b": Reply(content="x y", finish_reason="length",
                          usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16})}
    stub.responder = lambda body: answers[body["messages"][-1]["content"]]
    convs = [user("a"), [{"role": "system", "content": "terse"}, *user("b")]]
    gens = Student("base-model", fake_adapter(tmp_path)).generate(convs)
    assert gens == [Generation("one two", 11, 3, "stop"), Generation("x y", 9, 7, "length")]
    sent = sorted(stub.requests, key=lambda r: r["messages"][-1]["content"])
    assert [r["messages"] for r in sent] == convs  # as they are: the server applies the chat template
    assert {(r["model"], r["temperature"], r["max_tokens"]) for r in sent} == {("run-1", 0.0, 7)}


def test_served_names_base_adapter_and_mapped_adapter(stub, no_model, tmp_path, monkeypatch):
    mapped = fake_adapter(tmp_path, "run-2")
    monkeypatch.setenv("MEND_EVALS_STUDENT_ADAPTERS", json.dumps({str(mapped): "candidate"}))
    Student("base-model").generate([user("a")])
    Student("base-model", fake_adapter(tmp_path, "run-1", b"w2")).generate([user("b")])
    Student("base-model", mapped).generate([user("c")])
    monkeypatch.setenv("MEND_EVALS_STUDENT_MODEL", "served-base")
    Student("base-model").generate([user("d")])
    assert [r["model"] for r in stub.requests] == ["base-model", "run-1", "candidate", "served-base"]


def test_answer_settings_say_who_answered_without_the_password(monkeypatch):
    assert answer_settings() == greedy_settings()  # in-process: what runs have always recorded
    monkeypatch.setenv("MEND_EVALS_STUDENT_URL", "http://u:hunter2@127.0.0.1:8000/v1/")
    served = answer_settings()
    assert served == {**greedy_settings(), "chat_template": "server", "server": served["server"]}
    assert "hunter2" not in served["server"] and served["server"].endswith("127.0.0.1:8000/v1")


def test_answers_are_cached_per_adapter_weights_not_per_name(stub, no_model, tmp_path):
    first, retrained = fake_adapter(tmp_path, "run-1", b"w1"), fake_adapter(tmp_path, "run-1", b"w2")
    Student("base-model", first).generate([user("a")])
    Student("base-model", first).generate([user("a")])
    assert stub.count == 1  # the same weights: answered from llm_calls
    Student("base-model", retrained).generate([user("a")])
    assert stub.count == 2  # new weights under the same served name: asked again


def test_a_model_not_served_or_a_server_not_there_is_a_clear_error(stub, no_model, tmp_path, monkeypatch):
    stub.push(Reply(status=404))
    with pytest.raises(StudentError, match=r"1 of 1 requests .*model 'run-1'.*--lora-modules run-1=ADAPTER_FOLDER"):
        Student("base-model", fake_adapter(tmp_path)).generate([user("a")])
    from curate.synth.teacher import free_port
    monkeypatch.setenv("MEND_EVALS_STUDENT_URL", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    with pytest.raises(EndpointError, match=r"cannot reach the student endpoint .*student_url"):
        Student("base-model").generate([user("a")])


def traffic(n=6):
    insert_traces([trace_row(i, f"Describe item {i} without commas.", "logged, answer", ifeval_meta(NO_COMMA),
                             split="holdout") for i in range(n)])


def test_a_served_eval_run_has_the_same_rows_and_says_who_answered(stub, no_model, tmp_path):
    traffic()
    stub.responder = lambda body: "yes, a comma" if "item 1" in body["messages"][-1]["content"] else "no comma"
    adapter = fake_adapter(tmp_path)
    run_id = runner.run_suite("instruction_following", "holdout", model="base-model", adapter=str(adapter),
                              progress=False)
    (mode, status, gen), = fetch("SELECT mode, status, gen_settings FROM eval_runs WHERE run_id = ?", [run_id])
    assert (mode, status, json.loads(gen)) == ("generate", "complete", answer_settings())
    rows = fetch("SELECT trace_id, check_id, passed, output FROM results WHERE run_id = ? ORDER BY 1", [run_id])
    assert rows[:2] == [("t0000", "punctuation:no_comma", True, "no comma"),
                        ("t0001", "punctuation:no_comma", False, "yes, a comma")] and len(rows) == 6
    a_hash = fetch("SELECT adapter_hash FROM eval_runs")[0][0]
    with store.connect(read_only=True) as con:
        assert find_run(con, "instruction_following", "1", "base-model", a_hash, answer_settings(), "x")[0] == run_id
        assert find_run(con, "instruction_following", "1", "base-model", a_hash, greedy_settings(), "x")[0] is None
        why = given_run_mismatch(con, run_id, "instruction_following", "base-model", a_hash, greedy_settings(), "x")
    assert "served by http://127.0.0.1" in why and "in-process" in why


def test_the_gate_reuses_a_served_run_only_while_the_student_is_served(stub, no_model, tmp_path, monkeypatch):
    traffic()
    adapter = fake_adapter(tmp_path)
    side = gate.resolve_side("base-model", str(adapter))
    gate.ensure_runs(side, ["instruction_following"], allow_run=True)
    served_run = side.runs["instruction_following"]
    again = gate.resolve_side("base-model", str(adapter))
    gate.ensure_runs(again, ["instruction_following"], allow_run=True)
    assert again.runs == {"instruction_following": served_run} and stub.count == 6
    monkeypatch.delenv("MEND_EVALS_STUDENT_URL")  # in-process now: the served run must not stand for it
    monkeypatch.setattr(gate, "run_missing", lambda suite, side, subset: "in-process-run")
    local = gate.resolve_side("base-model", str(adapter))
    gate.ensure_runs(local, ["instruction_following"], allow_run=True)
    assert local.runs == {"instruction_following": "in-process-run"}


def test_validation_and_claims_answer_through_the_served_student(stub, no_model):
    from curate.loop import claims, validation
    stub.responder = lambda body: "fine, with commas" if "b" in body["messages"][-1]["content"] else "fine"
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    prompts = [{"id": p, "messages": user(p), "prompt": p, "metadata": meta, "targets": ["punctuation:no_comma"]}
               for p in ("a", "b")]
    val = validation.Validation(frozenset(), prompts, [], [])
    assert claims.item_outcomes("base-model", None, val, {"punctuation:no_comma"}) == {
        ("a", "punctuation:no_comma"): True, ("b", "punctuation:no_comma"): False}
    scored = validation.score("base-model", None, val)
    assert (scored["target_pass"], scored["outcomes"], scored["n_anchors"]) == (0.5, [True, False], 0)
    assert {r["model"] for r in stub.requests} == {"base-model"} and stub.count == 2  # the second time: cached
