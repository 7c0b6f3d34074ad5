"""evals.client against a real local HTTP server (tests/openai_stub.py): retries, timeouts, cache, safety."""
import os

import pytest

from openai_stub import OpenAIStub, Reply

from evals.client import Client, EndpointError, RemoteNotAllowed, request_hash


@pytest.fixture
def stub():
    with OpenAIStub() as s:
        yield s


def req(text="hi", **kw):
    return {"messages": [{"role": "user", "content": text}], "temperature": 0.0, "seed": 0, **kw}


def make(stub, **kw):
    kw.setdefault("max_retries", 2)
    kw.setdefault("timeout_s", 5)
    return Client(stub.base_url, "stub-model", **kw)


def test_429_with_retry_after_then_success(stub):
    stub.push(Reply(status=429, headers={"Retry-After": "0.05"}), "done")
    call = make(stub).complete_many([req()])[0]
    assert call.error is None and call.text == "done"
    assert stub.count == 2  # the openai client's own retry, honouring Retry-After


def test_500_exhausts_retries_and_reports(stub):
    stub.push(*[Reply(status=500, headers={"Retry-After": "0.01"})] * 3)
    call = make(stub, max_retries=2).complete_many([req()])[0]
    assert call.text is None and "500" in call.error
    assert stub.count == 3  # 1 try + 2 retries, no extra retry layer
    with __import__("traces.store", fromlist=["connect"]).connect() as con:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchone()[0] == 0  # failures are not cached


def test_timeout(stub):
    stub.push(Reply(content="late", delay_s=1.0))
    call = make(stub, max_retries=0, timeout_s=0.2).complete_many([req()])[0]
    assert call.error and "Timeout" in call.error


def test_cache_resume_repeats_no_completed_call(stub):
    requests = [req(f"q{i}") for i in range(6)]
    first = make(stub).complete_many(requests[:4])  # a run "killed" after 4 calls
    assert stub.count == 4 and not any(c.cached for c in first)
    again = make(stub).complete_many(requests)  # resumed: only the 2 missing calls go out
    assert stub.count == 6
    assert [c.cached for c in again] == [True] * 4 + [False] * 2
    assert again[0].text == "echo: q0" and again[5].text == "echo: q5"


def test_hash_covers_sampling_params():
    base = request_hash("http://127.0.0.1:1/v1", "m", req())
    assert base != request_hash("http://127.0.0.1:1/v1", "m", req(seed=1))
    assert base != request_hash("http://127.0.0.1:1/v1", "m", req(logit_bias={"1": -100}))
    assert base != request_hash("http://127.0.0.1:2/v1", "m", req())
    assert base == request_hash("http://127.0.0.1:1/v1/", "m", req())


def test_tokens_latency_cost_recorded(stub):
    stub.push(Reply(content="a b", usage={"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}))
    call = make(stub, prices={"stub-model": [2.0, 8.0]}).complete_many([req()])[0]
    assert call.prompt_tokens == 1000 and call.completion_tokens == 500
    assert call.cost_usd == pytest.approx((1000 * 2 + 500 * 8) / 1e6)
    assert call.latency_s is not None and call.latency_s >= 0


def test_remote_endpoint_refused_without_opt_in():
    with pytest.raises(RemoteNotAllowed, match="allow_remote"):
        Client("https://api.example.com/v1", "gpt")
    Client("https://api.example.com/v1", "gpt", allow_remote=True)  # explicit opt-in accepted


def test_every_endpoint_error_names_the_setting_to_change(monkeypatch):
    """A user meets these first in their own folder: each names the setting that fixes it, per client."""
    with pytest.raises(RemoteNotAllowed, match=r"\[tool.mend.curate\] teacher_allow_remote"):
        Client("https://api.example.com/v1", "gpt", purpose="teacher")
    with pytest.raises(RemoteNotAllowed, match=r"\[tool.mend.evals\] allow_remote"):
        Client("https://api.example.com/v1", "gpt", purpose="judge")
    with pytest.raises(EndpointError, match=r"\[tool.mend.evals\] judge_base_url"):
        Client("", "m", purpose="judge")
    with pytest.raises(EndpointError, match=r"teacher_url.*built-in teacher"):
        Client("http://127.0.0.1:9/v1", "m", purpose="teacher").check_endpoint(timeout_s=1)
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EndpointError, match=r"NO_SUCH_KEY_VAR.*teacher_api_key_env"):
        Client("https://api.example.com/v1", "m", purpose="teacher", api_key_env="NO_SUCH_KEY_VAR",
               allow_remote=True)._api_key()


def test_key_sent_but_never_stored(stub, monkeypatch):
    secret = "sk-test-SECRET-0123456789abcdef"
    monkeypatch.setenv("MY_KEY", secret)
    make(stub, api_key_env="MY_KEY").complete_many([req("x")])
    assert stub.headers[0]["authorization"] == f"Bearer {secret}"
    db = open(os.environ["MEND_DB"], "rb").read()
    assert secret.encode() not in db


def test_check_endpoint_errors(stub):
    make(stub).check_endpoint()  # reachable
    stub.models_status = 401
    with pytest.raises(EndpointError, match="rejected the API key"):
        make(stub).check_endpoint()
    with pytest.raises(EndpointError, match="cannot reach"):
        Client("http://127.0.0.1:9/v1", "m").check_endpoint(timeout_s=1)


def test_malformed_body_is_an_error_not_a_crash(stub):
    stub.push(Reply(body="{not json", status=200))
    call = make(stub, max_retries=0).complete_many([req()])[0]
    assert call.error
