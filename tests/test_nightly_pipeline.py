"""The real nightly on a tiny model and the scripted teacher stub: killed in the middle of the `train` stage,
then resumed; stages already done are not repeated (no new teacher call, no second logged eval run)."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from openai_stub import OpenAIStub

from traces import store

ROOT = Path(__file__).resolve().parent.parent
TOPICS = ["rivers", "bread", "trains", "owls", "tides", "glass", "maps", "bees", "clocks", "salt",
          "moss", "kites", "caves", "wool", "ferns", "comets", "ink", "reefs", "looms", "dunes"]


def write_traffic(path: Path) -> None:
    """40 logged calls: 20 base requests (split groups) x 2; 3 in 4 responses break the no-comma rule."""
    lines = []
    for i in range(40):
        topic = TOPICS[i % 20]
        prompt = f"Write a short note about {topic} number {i}. In your entire response, refrain from the use of any commas."
        answer = f"{topic.title()}, as always, are {'nice' if i % 4 else 'fine and calm'}." if i % 4 else \
            f"{topic.title()} are calm and quiet"
        lines.append(json.dumps({
            "id": f"call-{i}", "created": 1700000000 + i, "model": "tiny",
            "request": {"model": "tiny", "messages": [{"role": "user", "content": prompt}]},
            "response": {"id": f"call-{i}", "object": "chat.completion", "created": 1700000000 + i, "model": "tiny",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": answer},
                                      "finish_reason": "stop"}]},
            "metadata": {"base_id": f"b{i % 20:02d}", "instruction_id_list": ["punctuation:no_comma"],
                         "kwargs": [{}]}}))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))


def answer(body):
    """The teacher: a comma-free answer that differs per request (so dedup keeps some)."""
    words = [w.strip(",.") for w in body["messages"][-1]["content"].split()][:12]
    return f"Sample {body.get('seed', 0)} {' '.join(reversed(words))} told plainly"


def _env(home, tiny, stub):
    # PYTHONHASHSEED: train.models.fingerprint samples tensors in set order, which differs between processes
    # (reported); without it the gate may see another fingerprint than the trainer and refuse the adapter
    return {**os.environ, "MEND_HOME": str(home), "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0",
            "MEND_TRAIN_MODEL": str(tiny), "MEND_TRAIN_MAX_STEPS": "400", "MEND_TRAIN_SAVE_STEPS": "2",
            "MEND_TRAIN_VAL_FRACTION": "0", "MEND_TRAIN_BATCH_SIZE_TRAIN": "1",
            "MEND_TRAIN_EPOCHS": "50", "MEND_TRAIN_CPU_THREADS": "1",
            "MEND_TRACES_HOLDOUT_FRACTION": "0.5",
            "MEND_CURATE_TEACHER_URL": stub.base_url, "MEND_CURATE_TEACHER_MODEL": "stub-model",
            "MEND_CURATE_PER_CLUSTER": "4", "MEND_CURATE_K": "2", "MEND_CURATE_GUIDANCE": "never",
            "MEND_TRAIN_MAX_NEW_TOKENS": "4", "MEND_EVALS_GATE_LM_EVAL": "false",
            "MEND_EVALS_GATE_DRIFT_SAMPLES": "2"}


def _ledger():
    with store.connect(read_only=True, timeout_s=60) as con:
        return dict(con.execute("SELECT stage, status FROM nightly_ledger").fetchall())


def _count(sql):
    with store.connect(read_only=True, timeout_s=60) as con:
        return con.execute(sql).fetchone()[0]


@pytest.mark.integration
def test_nightly_resumes_after_a_kill_in_the_middle_of_training(tmp_path, tiny_model_dir):
    write_traffic(tmp_path / "data" / "inbox" / "traffic.jsonl.gz")
    with OpenAIStub() as stub:
        stub.responder = answer
        env = _env(tmp_path, tiny_model_dir, stub)
        cmd = [sys.executable, "-m", "curate", "nightly"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, start_new_session=True,
                                stdout=open(tmp_path / "first.log", "w"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        # wait until training has written a checkpoint, then kill the whole process group mid-stage
        while not list((tmp_path / "adapters").glob(".tmp-*/checkpoint-*")):
            assert proc.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            if time.monotonic() > deadline:  # a hang guard, not a speed target
                pytest.fail("no training checkpoint appeared within 600 s")
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        os.environ["MEND_HOME"] = str(tmp_path)   # the fixture's MEND_DB already points into tmp_path
        try:
            assert _ledger()["train"] == "running"
            calls, logged = _count("SELECT count(*) FROM llm_calls"), _count(
                "SELECT count(*) FROM eval_runs WHERE mode = 'logged'")
            assert calls > 0 and logged == 1
            env["MEND_TRAIN_MAX_STEPS"] = "6"     # resume: finish quickly from the checkpoint
            out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            assert "resuming nightly" in out.stdout
            ledger = _ledger()
            assert all(v in ("done", "skipped") for v in ledger.values()), ledger
            assert _count("SELECT count(*) FROM llm_calls") == calls       # no teacher call repeated
            assert _count("SELECT count(*) FROM eval_runs WHERE mode = 'logged'") == 1
            assert _count("SELECT count(*) FROM train_runs WHERE status = 'complete'") == 1
            assert _count("SELECT count(*) FROM gate_decisions") == 1
            assert list((tmp_path / "reports").glob("nightly-*/report.md"))
        finally:
            os.environ.pop("MEND_HOME", None)
