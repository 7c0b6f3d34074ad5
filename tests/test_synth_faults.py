"""Issue 25, synthesis: a teacher that starts rate limiting or timing out midway stops synthesis with an error that
names its endpoint and the setting to change; a full disk stops it naming the stage and the database; a kill stops it
anywhere. The candidates already written stay, a re-run repeats no answered call (the llm_calls cache) and writes
no candidate twice, and its counts are what is stored."""
import itertools
import json

import pytest
from builders.faults import fail_commit, killed_in_a_child
from builders.synth import examples, seed_store, use_stub
from openai_stub import OpenAIStub, Reply

from curate.synth import driver as synth
from curate.synth.teacher import TeacherError
from traces import store
from traces.settings import db_path
from traces.store import StoreWriteError

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


# ---------- a full disk and a kill while candidates are written ----------

def _sample_run(monkeypatch, stub):
    seed_store()
    stub.responder = lambda body: OK
    use_stub(monkeypatch, stub, per_cluster=4, k=8, strategies='["sample"]', target_per_cluster=0)


def _stored_once() -> int:
    ids = [e["example_id"] for e in examples()]
    assert len(ids) == len(set(ids))
    return len(ids)


def test_a_failed_commit_of_candidates_stops_synthesis_naming_stage_and_store_and_a_rerun_completes(monkeypatch):
    with OpenAIStub() as stub:
        _sample_run(monkeypatch, stub)
        real = fail_commit(monkeypatch, "examples", nth=2)  # the second batch of candidates finds the disk full
        with pytest.raises(StoreWriteError) as e:
            synth.synthesize()
        assert f"curate synth (cluster c1): storing {BATCH} candidates in the database {db_path()} failed" in \
            str(e.value) and "No space left on device" in str(e.value)
        assert _stored_once() == BATCH  # the first batch stays; nothing of the second
        monkeypatch.setattr(store, "transaction", real)  # room again
        tallies = synth.synthesize()
    assert _stored_once() == 2 * BATCH == tallies["c1"].total_candidates  # the run's counts are what is stored


def test_synthesis_killed_while_writing_candidates_keeps_what_was_written_and_a_rerun_completes(monkeypatch):
    with OpenAIStub() as stub:
        _sample_run(monkeypatch, stub)
        killed_in_a_child("from curate.synth import strategies, driver\n"
                          "real, calls = strategies.write_rows, []\n"
                          "def dies_on_the_second(rows, checks):\n"
                          "    calls.append(1)\n"
                          "    if len(calls) == 2:\n"
                          "        die()\n"
                          "    return real(rows, checks)\n"
                          "strategies.write_rows = dies_on_the_second\n"
                          "driver.synthesize()\n")
        assert _stored_once() == BATCH
        tallies = synth.synthesize()
    assert _stored_once() == 2 * BATCH == tallies["c1"].total_candidates
