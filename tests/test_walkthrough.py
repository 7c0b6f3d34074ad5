"""The README's "Your own logs, your own checks, your own teacher", step by step, on examples/own-logs/.

The files the README shows are the example's files, and the commands run here are the README's own strings (each
must appear in that section). The example is copied to tmp_path and every command runs there, as a user would run
it in their own folder: settings from its pyproject.toml, the database under its data/. The only differences are
environment overrides: the teacher is the example's own, the built-in llama.cpp server on the embedded GGUF; the
judge of step 5 (from the `--train-anyway` nightly on) is a scripted OpenAI-compatible stub on loopback
(tests/openai_stub.py) holding the key from TEACHER_API_KEY; the student is the tiny model, and the training, sampling
and gate sizes are small.
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from openai_stub import OpenAIStub

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "own-logs"
TITLE = "Your own logs, your own checks, your own teacher"
KEY = "sk-walkthrough-not-a-real-key"
STAGES = ["ingest", "eval", "clusters", "holdout", "synth", "filter", "accept", "export", "train", "validate", "focus",
          "gate", "promote"]

# the README's commands, in its order
INGEST = "python -m traces ingest logs/support.jsonl"
RUN, REPORT = "python -m evals run", "python -m evals report"
RUN_FILE = "python -m evals run --suite suites/no_links.yaml"
NIGHTLY = "python -m curate nightly"
ANYWAY = "python -m curate nightly --train-anyway"
NO_MATCH = """MEND_EVALS_SUITES='["no_links", "format"]' python -m curate nightly"""
NO_PROMOTE = "export MEND_CURATE_NIGHTLY_PROMOTE=false"
GATE = "python -m evals gate --report gate.json"
EXPORT = "python -m train export latest"
COMMANDS = [INGEST, RUN, REPORT, RUN_FILE, "export TEACHER_API_KEY=", NIGHTLY, ANYWAY, NO_MATCH, NO_PROMOTE, GATE,
            EXPORT]


def section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {TITLE}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", section(), re.M | re.S)


# ---------------------------------------------------------------- the README shows the example's files

def test_readme_shows_the_example_files():
    assert blocks("yaml")[0] == (EXAMPLE / "suites" / "no_links.yaml").read_text()
    assert blocks("toml") == [(EXAMPLE / "pyproject.toml").read_text()]
    [line] = blocks("json")
    assert line.strip() == (EXAMPLE / "logs" / "support.jsonl").read_text().splitlines()[0]


def test_every_suite_the_readme_shows_is_valid():
    from evals.suites import parse
    suites = [parse(text) for text in blocks("yaml")]
    assert [s.name for s in suites] == ["no_links", "refunds"]
    assert suites[1].check_names() == ["json_schema", "judge"]


def test_the_commands_run_here_are_the_readmes():
    missing = [c for c in COMMANDS if c not in section()]
    assert not missing, f"README section {TITLE!r} no longer shows: {missing}"


def test_the_workaround_the_readme_gives_is_verified_by_synthesis():
    """Step 5: a check named in the trace's metadata is verified too, besides the suite's own."""
    from curate.synth.candidates import verify
    from evals.suites import parse
    spec = {"checks": [{"check": "regex", "args": {"pattern": "https?://", "negate": True}}]}
    assert verify("How do I reset my password?", "Open Settings, then Security.", spec)[0]
    assert not verify("How do I reset my password?", "See https://acme.example/reset", spec)[0]
    assert verify("How do I reset my password?", "Open Settings.", {})[1].startswith("no checks")
    assert parse("name: x\nversion: '1'\nchecks: {from_metadata: checks}\n").from_metadata == "checks"


# ---------------------------------------------------------------- the walkthrough itself

def _env(tiny: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEND_")}  # no MEND_HOME/MEND_DB: like a user
    return {**env, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
            "TEACHER_API_KEY": KEY,                       # step 4: export TEACHER_API_KEY=... (the judge's, here)
            "MEND_CURATE_PER_CLUSTER": "4", "MEND_CURATE_SELF_K": "2",  # a few samples of each strategy
            "MEND_TRAIN_MODEL": str(tiny), "MEND_TRAIN_MAX_STEPS": "4", "MEND_TRAIN_VAL_FRACTION": "0",
            "MEND_TRAIN_CPU_THREADS": "1", "MEND_EVALS_GATE_LM_EVAL": "false", "MEND_EVALS_GATE_DRIFT_SAMPLES": "2",
            "MEND_TRAIN_MAX_NEW_TOKENS": "64"}  # the teacher's budget too: its samples must be whole to be kept


def _run(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """A README command line as written: leading VAR=value words go into the environment, `python` is this one."""
    words = shlex.split(command)
    env = dict(env)
    while "=" in words[0]:
        key, value = words.pop(0).split("=", 1)
        env[key] = value
    assert words[0] == "python", command
    out = subprocess.run([sys.executable, *words[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=900)
    (cwd / "commands.log").open("a").write(f"$ {command}\n{out.stdout}{out.stderr}exit {out.returncode}\n")
    return out


def _answer(body):
    """The judge: a pass for every answer it is shown."""
    assert "grader" in body["messages"][0]["content"], body  # evals.checks_judge.SYSTEM: only the judge calls here
    return '{"score": 8, "reason": "answers where to click"}'


@pytest.fixture(scope="module")
def walk(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("walk") / "support-bot"
    shutil.copytree(EXAMPLE, home)                        # cp -r examples/own-logs ~/support-bot && cd ~/support-bot
    with OpenAIStub() as stub:
        stub.responder = _answer
        env = _env(tiny_model_dir)
        out = {cmd: _run(cmd, home, env) for cmd in [INGEST, RUN, REPORT, RUN_FILE, NIGHTLY]}
        # step 5: a judge vouches for what the suite's one narrow check verified (the stub, with the same key)
        env.update(MEND_EVALS_JUDGE_BASE_URL=stub.base_url, MEND_EVALS_JUDGE_MODEL="stub-model",
                   MEND_EVALS_JUDGE_API_KEY_ENV="TEACHER_API_KEY")
        out.update({cmd: _run(cmd, home, env) for cmd in [ANYWAY, NO_MATCH]})
        out[GATE] = _run(GATE, home, {**env, "MEND_CURATE_NIGHTLY_PROMOTE": "false"})
        out[EXPORT] = _run(EXPORT, home, env)
        yield home, out, stub


def _ok(out: subprocess.CompletedProcess, code: int = 0) -> str:
    text = out.stdout + out.stderr
    assert out.returncode == code, f"exit {out.returncode}, wanted {code}:\n{text[-4000:]}"
    return " ".join(text.split())  # rich wraps long lines; compare words


def _db(home: Path):
    return duckdb.connect(str(home / "data" / "mend.duckdb"), read_only=True)


@pytest.mark.integration
def test_ingest_and_score_the_logs(walk):
    home, out, _ = walk
    _ok(out[INGEST])
    with _db(home) as con:
        assert con.execute("SELECT count(*) FROM traces").fetchone()[0] == 16
    _ok(out[RUN])
    report = _ok(out[REPORT])
    assert "no_links v1" in report and "regex │ 16 │ 62.5" in report     # README: 10 of the 16 answers pass
    assert "regex │ 16 │ 62.5" in _ok(out[RUN_FILE])


def _report(text: str) -> str:
    """The report whose path the nightly printed last."""
    return Path(re.findall(r"report: (\S+report\.md)", text)[-1]).read_text()


@pytest.mark.integration
def test_the_nightly_stops_before_synthesis_when_the_gate_could_not_decide(walk):
    home, out, _ = walk
    text = _ok(out[NIGHTLY], 5)
    # README step 4: 16 traces leave one holdout trace; it says so, and what to change, before any synthesis
    assert "the gate cannot decide" in text and "more traces" in text and "holdout_fraction" in text
    report = _report(text)
    assert "**Gate verdict: not run**" in report and "## Needs attention" in report
    for stage in STAGES[STAGES.index("synth"):]:
        assert re.search(rf"^\| {stage} \| skipped \| .* why=stopped at holdout: ", report, re.M), stage


@pytest.mark.integration
def test_the_nightly_runs_to_its_end_and_writes_the_report(walk):
    home, out, stub = walk
    text = _ok(out[ANYWAY])
    reports = list((home / "reports").glob("nightly-*/report.md"))
    assert len(reports) == 2            # the stopped nightly's and this one's (its path is printed last)
    report = _report(text)
    # README step 5, on this example: with a judge it trains, and 16 traces leave the gate too small a holdout
    assert "**Gate verdict: ERROR**" in report and "holdout too small" in report
    for stage in STAGES:
        assert re.search(rf"^\| {stage} \| (done|skipped) \|", report, re.M), stage
    # the built-in teacher wrote candidates; the judge was asked, with the key from the variable its settings name
    with _db(home) as con:
        assert con.execute("SELECT count(*) FROM examples WHERE strategy = 'sample'").fetchone()[0] > 0
    assert stub.count > 0
    assert {h.get("authorization") for h in stub.headers} == {f"Bearer {KEY}"}
    assert KEY not in (home / "commands.log").read_text() + report


@pytest.mark.integration
def test_a_suite_that_matches_no_trace_fails_the_nightly_loudly(walk):
    home, out, _ = walk
    text = _ok(out[NO_MATCH], 1)
    # the README quotes this line
    assert "stage eval failed: StageError: suite(s) format matched none of the 16 traces: the loop has nothing to " \
           "fix." in text
    assert "stage eval failed: StageError: suite(s) format matched none of the 16 traces" in section()
    assert f"README: '{TITLE}'" in text                                      # the message points here
    assert len(list((home / "reports").glob("nightly-*/report.md"))) == 2   # the first two nightlies'; none here


@pytest.mark.integration
def test_the_ci_gate_step_gives_its_decision_as_exit_code_and_json(walk):
    home, out, _ = walk
    _ok(out[GATE], 2)                                                       # no decision on this holdout
    decision = json.loads((home / "gate.json").read_text())
    assert decision["exit_code"] == 2 and decision["verdict"] == "ERROR" and "holdout too small" in decision["error"]


@pytest.mark.integration
def test_candidates_are_verified_by_the_suites_own_checks(walk):
    home, _, _ = walk
    with _db(home) as con:
        reasons = [r[0] or "" for r in con.execute("SELECT reason FROM examples").fetchall()]
        checked = con.execute("SELECT DISTINCT check_id FROM example_checks ORDER BY 1").fetchall()
        unvouched = con.execute("""SELECT count(*) FROM examples e WHERE status = 'accepted' AND NOT EXISTS
                                   (SELECT 1 FROM example_checks k WHERE k.example_id = e.example_id
                                    AND k.check_id = 'judge' AND k.passed)""").fetchone()[0]
    assert reasons and not [r for r in reasons if r.startswith("no checks")]
    assert checked == [("judge",), ("regex",)]       # suites/no_links.yaml's own check, then the judge that vouched
    assert unvouched == 0                            # nothing the narrow check alone verified was accepted


@pytest.mark.integration
def test_the_trained_adapter_exports_for_serving(walk, tiny_model_dir):
    """Step 7: `train export latest` writes the adapter in the PEFT form vLLM's --lora-modules and peft load."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    home, out, _ = walk
    text = _ok(out[EXPORT])
    with _db(home) as con:
        (run,) = con.execute("SELECT run_id FROM train_runs WHERE status = 'complete' ORDER BY started_at DESC "
                             "LIMIT 1").fetchone()
    folder = home / "data" / "exports" / run
    assert str(folder.name) in text and (folder / "adapter_model.safetensors").is_file()
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(folder))  # it loads
