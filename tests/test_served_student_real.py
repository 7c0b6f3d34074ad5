"""Integration: the served student against a real OpenAI-compatible server on 127.0.0.1, `transformers serve` (it
loads the folder a request's `model` names): the tiny model as the base, and a LoRA adapter's merged weights as the
adapter's served model (`student_adapters` maps the adapter folder to it, as vLLM's --lora-modules maps a name to a
folder). The server's greedy answers are the in-process ones, token for token, and the gate runs on them: both
sides' eval runs served, recorded as served, and reused by a second gate. The test starts and stops the server."""
import json
import os
import subprocess
import sys

import pytest

from curate.synth.teacher import free_port, stop, wait_healthy
from evals import gate
from evals.student import Student, answer_settings
from traces import store
from builders.suites import instructions_only  # noqa: F401  (autouse: the suite these counts are about)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]

PROMPTS = ["Write a haiku about rain.", "Describe a dog. Do not use any commas.", "Say hello in French."]


@pytest.fixture(scope="module")
def weights(tiny_model_dir, tmp_path_factory):
    """(adapter folder, its merged weights): a LoRA adapter initialised away from zero, so it changes answers."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = tmp_path_factory.mktemp("served")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(folder / "run-1")
    model.merge_and_unload().save_pretrained(folder / "merged")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder / "merged")
    return folder / "run-1", folder / "merged"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`transformers serve` on a free loopback port, loading models on demand; stopped after the module."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("serve") / "serve.log", "wb")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve",
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "error"],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, 900)  # 2 shared cores: importing the server takes minutes
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop(proc)
        log.close()


@pytest.fixture
def served(server, weights, tiny_model_dir, monkeypatch):
    adapter, merged = weights
    monkeypatch.setenv("MEND_EVALS_STUDENT_URL", server)
    monkeypatch.setenv("MEND_EVALS_STUDENT_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_EVALS_STUDENT_ADAPTERS", json.dumps({str(adapter): str(merged)}))
    monkeypatch.setenv("MEND_EVALS_CLIENT_TIMEOUT_S", "900")  # the first request loads the model
    monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "0")
    monkeypatch.setenv("MEND_TRAIN_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("MEND_TRAIN_MAX_NEW_TOKENS", "8")
    return adapter


def test_served_answers_are_the_in_process_answers(served, tiny_model_dir, monkeypatch):
    convs = [[{"role": "user", "content": p}] for p in PROMPTS]
    by_server = {a: Student(str(tiny_model_dir), a).generate(convs, progress=False) for a in (None, served)}
    monkeypatch.delenv("MEND_EVALS_STUDENT_URL")
    # one prompt per batch: left padding alone can move a tiny random model's argmax
    in_process = {a: Student(str(tiny_model_dir), a).generate(convs, batch_size=1, progress=False)
                  for a in (None, served)}
    assert by_server == in_process  # text, prompt and completion tokens, finish reason
    assert [g.text for g in by_server[None]] != [g.text for g in by_server[served]]  # the adapter answered


def test_the_gate_on_a_served_student(served, tiny_model_dir, monkeypatch):
    rows = [[f"t{i}", json.dumps([{"role": "user", "content": f"Describe item {i}. Do not use any commas."}]),
             f"Describe item {i}. Do not use any commas.", json.dumps({"instruction_id_list": ["punctuation:no_comma"],
                                                                     "kwargs": [{}]})] for i in range(6)]
    with store.connect() as con:
        con.executemany("""INSERT INTO traces (trace_id, source_format, source_file, ingest_id, messages, prompt,
                           response, group_key, split, metadata) VALUES (?, 'openai_chat', 'f.jsonl', 'i1', ?, ?,
                           'logged', 'g', 'holdout', ?)""", rows)
    monkeypatch.setattr(gate, "min_discordant", lambda alpha: 0)  # 6 traces: let it decide, not refuse
    first = gate.run_gate(str(tiny_model_dir), str(served), str(tiny_model_dir), clusters=[], guards=False)
    runs = [first["baseline"].runs["instruction_following"], first["candidate"].runs["instruction_following"]]
    with store.connect(read_only=True) as con:
        gens = [json.loads(con.execute("SELECT gen_settings FROM eval_runs WHERE run_id = ?", [r]).fetchone()[0])
                for r in runs]
        outputs = con.execute("SELECT output FROM results WHERE run_id = ? ORDER BY trace_id", [runs[1]]).fetchall()
    assert gens == [answer_settings()] * 2 and gens[0]["server"].startswith("http://127.0.0.1")
    second = gate.run_gate(str(tiny_model_dir), str(served), str(tiny_model_dir), clusters=[], guards=False)
    assert [second["baseline"].runs["instruction_following"],
            second["candidate"].runs["instruction_following"]] == runs  # reused, not asked again
    monkeypatch.delenv("MEND_EVALS_STUDENT_URL")  # the candidate's holdout answers, in-process
    convs = [json.loads(r[1]) for r in rows]
    local = Student(str(tiny_model_dir), served).generate(convs, batch_size=1, progress=False)
    assert [o for (o,) in outputs] == [g.text for g in local]
