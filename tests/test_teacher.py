"""The teacher through the OpenAI stub server: retries, timeouts, server errors, malformed JSON in full
mode, a clear error before any work for an unreachable endpoint or a rejected key, kill-and-resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_stub import OpenAIStub, Reply
from builders.synth import examples, seed_store, use_stub

from curate.synth import driver as synth
from curate.synth import full as synth_full
from traces import store

NO_COMMA_OK = "Here is a calm answer without any commas"


def test_429_with_retry_after_then_success(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.push(Reply(status=429, headers={"Retry-After": "0.1"}), NO_COMMA_OK)
        stub.responder = lambda b: NO_COMMA_OK
        use_stub(monkeypatch, stub, per_cluster=1, k=1, strategies='["sample"]', teacher_concurrency=1)
        tallies = synth.synthesize()
        assert stub.count == 2
    assert tallies["c1"].verified == 1 and tallies["c1"].errors == 0


def test_timeout_and_500_are_errors_not_examples(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        # the first request times out (on every retry), the second gets 500s: both end as errors
        stub.responder = lambda b: (Reply(delay_s=1.5) if b["seed"] == 0 else Reply(status=500))
        use_stub(monkeypatch, stub, per_cluster=1, k=2, strategies='["sample"]', teacher_timeout_s=0.3,
                 teacher_concurrency=2)
        monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "1")
        tallies = synth.synthesize()
    assert tallies["c1"].errors == 2 and examples() == []
    with store.connect(read_only=True) as con:
        assert con.execute("SELECT count(*) FROM llm_calls").fetchall()[0][0] == 0  # nothing cached


def test_unreachable_remote_fails_before_any_work(monkeypatch):
    seed_store()
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "http://127.0.0.1:9/v1")
    from evals.client import EndpointError
    with pytest.raises(EndpointError, match="cannot reach"):
        synth.synthesize()
    assert examples() == []


def test_rejected_key_fails_before_any_work(monkeypatch):
    seed_store()
    with OpenAIStub() as stub:
        stub.models_status = 401
        use_stub(monkeypatch, stub)
        from evals.client import EndpointError
        with pytest.raises(EndpointError, match="rejected the API key"):
            synth.synthesize()
        assert stub.count == 0


def test_remote_teacher_needs_opt_in(monkeypatch):
    seed_store()
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "https://api.example.com/v1")
    from evals.client import RemoteNotAllowed
    with pytest.raises(RemoteNotAllowed):
        synth.synthesize()


def test_full_mode_parses_json_and_keeps_malformed_as_failed(monkeypatch):
    seed_store()
    good = {"examples": [{"request": "Describe a quiet morning at the lake.", "response": "The lake was still"},
                         {"request": "Explain tides simply.", "response": "Tides rise, and fall."}]}
    with OpenAIStub() as stub:
        stub.push("```json\n" + json.dumps(good) + "\n```", "Sure! {not json at all")
        use_stub(monkeypatch, stub, mode="full", max_examples_per_cluster=8, full_requests_per_call=4)
        synth.synthesize()
        body = stub.requests[0]
    assert body["response_format"]["type"] == "json_schema"
    rows = examples()
    statuses = sorted((r["status"], (r["reason"] or "")[:14]) for r in rows)
    assert ("failed_verification", "malformed_json") in statuses
    ok = [r for r in rows if r["status"] == "verified"]
    assert len(ok) == 1 and ok[0]["prompt"].startswith("Describe a quiet morning")
    assert "commas" in ok[0]["prompt"]  # mend appended the instruction it verifies


def test_parse_examples_is_robust():
    assert synth_full.parse_examples('noise [{"request": "a", "response": "b"}] tail') == [
        {"request": "a", "response": "b"}]
    with pytest.raises(ValueError):
        synth_full.parse_examples('{"examples": []}')


CHILD = """
import sys
sys.path.insert(0, {root!r})
from curate.synth import driver as synth
synth.synthesize()
"""


def test_kill_and_resume_repeats_no_completed_call(monkeypatch, tmp_path):
    seed_store()
    with OpenAIStub() as stub:
        stub.responder = lambda b: Reply(content=NO_COMMA_OK, delay_s=0.2)
        # the default strategies: repair (t1, t2: no call), constrained (none on a remote stub), sample
        use_stub(monkeypatch, stub, per_cluster=4, k=4, teacher_concurrency=1)
        env = {**os.environ}
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(root=str(Path(__file__).parents[1]))],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while stub.count < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait()
        with store.connect(read_only=True) as con:
            done = {r[0] for r in con.execute("SELECT request_hash FROM llm_calls").fetchall()}
        assert 0 < len(done) < 16
        before = stub.count
        synth.synthesize()
        from evals.client import request_hash
        resent = {request_hash(stub.base_url, "stub-model", {k: v for k, v in r.items() if k != "model"})
                  for r in stub.requests[before:]}
    with store.connect(read_only=True) as con:
        final = {r[0] for r in con.execute("SELECT request_hash FROM llm_calls").fetchall()}
    assert resent and resent <= final  # the hashes computed here are the client's own
    assert not (resent & done)  # no completed call was sent again
    assert len(done) + (stub.count - before) >= 16
    with store.connect(read_only=True) as con:
        made = dict(con.execute("SELECT strategy, count(*) FROM examples GROUP BY 1").fetchall())
    assert made == {"sample": 16, "repair": 2} and len(examples()) == 18  # nothing written twice


def test_teacher_folder_samples_and_serve_modes(tiny_model_dir, tmp_path, monkeypatch):
    from curate.synth import teacher
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    folder = teacher.teacher_folder(str(tiny_model_dir), temperature=0.7, top_p=0.9)
    gen = json.loads((folder / "generation_config.json").read_text())
    assert gen["do_sample"] is True and gen["temperature"] == 0.7
    assert (folder / "config.json").is_file() and folder.parent == tmp_path / "models" / "teacher"
    assert teacher.teacher_folder(str(tiny_model_dir)) == folder  # idempotent
    cb = teacher.serve_command(folder, 1234, True)
    assert "--continuous-batching" in cb and "127.0.0.1" in cb and "--cb-num-blocks" in cb
    assert "--continuous-batching" not in teacher.serve_command(folder, 1234, False)


def test_guided_messages_put_constraint_and_demos_first():
    from curate.synth.guidance import guided_messages
    from curate.synth.candidates import Prompt
    p = Prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}], "Q?", {}, None)
    msgs = guided_messages(p, {"system": "No commas.", "few_shot": [["q1", "a1"]]})
    assert msgs == [{"role": "system", "content": "Be brief. No commas."}, {"role": "user", "content": "q1"},
                    {"role": "assistant", "content": "a1"}, {"role": "user", "content": "Q?"}]


def test_cli_unreachable_teacher_is_one_clear_line(monkeypatch, capsys):
    seed_store()
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "http://127.0.0.1:9/v1")
    assert synth.main(["--no-filter"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the teacher endpoint" in err and "Traceback" not in err
