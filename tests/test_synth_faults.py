"""Issue 25, synthesis: a teacher that starts rate limiting or timing out midway stops synthesis with an error that
names its endpoint and the setting to change; the candidates already written stay, and a re-run repeats no answered
call (the llm_calls cache)."""
import itertools
import json

import pytest
from builders.synth import examples, seed_store, use_stub
from openai_stub import OpenAIStub, Reply

from curate.synth import driver as synth
from curate.synth.teacher import TeacherError

OK = "Here is a calm answer without any commas"
BATCH = 16  # curate.synth.candidates.CHUNK: requests per client batch


def key(body: dict) -> str:
    return json.dumps([body["messages"], body.get("seed")], sort_keys=True)


@pytest.mark.parametrize("failure, setting", [
    (Reply(status=429, headers={"Retry-After": "0.01"}), "teacher_concurrency (now 8)"),
    (Reply(content=OK, delay_s=1.0), "teacher_timeout_s (now 0.2 s)"),
], ids=["429", "timeout"])
def test_a_teacher_failing_midway_stops_synthesis_naming_endpoint_and_setting(monkeypatch, failure, setting):
    seed_store()
    answered = itertools.count()
    with OpenAIStub() as stub:
        # the first batch is answered; from the second on, every request (and every retry) fails
        stub.responder = lambda body: OK if next(answered) < BATCH else failure
        use_stub(monkeypatch, stub, per_cluster=4, k=8, strategies='["sample"]', target_per_cluster=0,
                 teacher_timeout_s=0.2)
        monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "1")
        with pytest.raises(TeacherError) as e:
            synth.synthesize()
        first_run = {key(b) for b in stub.requests[:BATCH]}
        message = str(e.value)
        assert f"the teacher at {stub.base_url} failed {BATCH} requests in a row (each retried 1x" in message
        assert setting in message and "the candidates written so far are kept" in message
        assert len(examples()) == BATCH  # the answered batch's candidates are stored
        stub.responder = lambda body: OK  # the teacher recovers; synthesis runs again
        sent_before = stub.count
        synth.synthesize()
        again = [key(b) for b in stub.requests[sent_before:]]
    assert again and not first_run & set(again)  # no answered request is sent twice
    assert len(examples()) == 2 * BATCH
