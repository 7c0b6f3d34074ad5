"""The gate as a deployment contract: exit 0 PROMOTE / 1 REJECT / 2 no decision (crashes included), the same
decision as JSON on stdout (--json) and in a file (--report), documented in --help, kept through `make gate`."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from builders.gate import CANDIDATE, scenario

from evals import gate, gate_cli, gate_report
from traces import store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_assignment(monkeypatch):
    """The constructed clusters have no centroids: their holdout members are set by the tests themselves."""
    monkeypatch.setattr(gate, "assign_clusters", lambda runs: None)


def gate_args(runs: dict, *extra: str) -> list[str]:
    args = ["--candidate", CANDIDATE, "--baseline", "smollm2-135m-instruct", "--no-guards",
            "--no-run", "--cluster", "cA"]
    for side in ("baseline", "candidate"):
        args += [f"--{side}-run", f"instruction_following={runs[side]['instruction_following']}"]
    return args + list(extra)


def stored(decision_id: str) -> tuple:
    with store.connect(read_only=True) as con:
        return con.execute("SELECT verdict, reasons FROM gate_decisions WHERE decision_id = ?",
                           [decision_id]).fetchone()


def test_json_on_stdout_has_verdict_reasons_figures_and_the_decision_id(capsys):
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json")) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)  # stdout is the JSON object alone
    assert report["verdict"] == "PROMOTE" and report["exit_code"] == 0 and report["error"] is None
    assert stored(report["decision_id"]) == ("PROMOTE", json.dumps(report["reasons"]))
    suite = report["suites"]["instruction_following"]
    assert (suite["n"], suite["fixes"], suite["breaks"], suite["delta"]) == (40, 15, 0, pytest.approx(37.5))
    cluster = report["clusters"]["cA"]
    assert cluster["label"] == "label-cA" and cluster["check_id"] == "A"
    assert (cluster["base_rate"], cluster["cand_rate"]) == (pytest.approx(0.0), pytest.approx(75.0))
    assert report["target"]["p"] == pytest.approx(2 * 0.5 ** 15) and len(report["target"]["ci"]) == 2
    assert report["candidate"]["eval_runs"] == {"instruction_following": "cand-run"}
    assert report["baseline"]["eval_runs"] == {"instruction_following": "base-run"}
    assert "PROMOTE" in err and "McNemar" in err  # the human table still shows, on stderr


def test_reject_exits_1_and_says_why(capsys):
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json", "--min-improvement", "90")) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "REJECT" and report["exit_code"] == 1
    assert any(r.startswith("FAIL: pooled") and "need >= +90.0 pts" in r for r in report["reasons"])


def test_report_file_holds_the_same_object_as_stdout(tmp_path, capsys):
    path = tmp_path / "ci" / "gate.json"
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json", "--report", str(path))) == 0
    assert json.loads(path.read_text()) == json.loads(capsys.readouterr().out)
    assert [p.name for p in path.parent.iterdir()] == ["gate.json"]  # no temporary file left behind


def test_report_without_json_keeps_the_table_on_stdout(tmp_path, capsys):
    path = tmp_path / "gate.json"
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--report", str(path))) == 0
    assert "McNemar" in capsys.readouterr().out
    assert json.loads(path.read_text())["verdict"] == "PROMOTE"


def test_a_refusal_is_exit_2_with_the_stored_error_decision(tmp_path, capsys):
    path = tmp_path / "gate.json"
    assert gate_cli.main(gate_args(scenario(target_status="incomplete"), "--json", "--report", str(path))) == 2
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["verdict"] == "ERROR" and report["exit_code"] == 2 and "incomplete" in report["error"]
    assert stored(report["decision_id"])[0] == "ERROR"
    assert "gate error" in err and "incomplete" in err
    assert json.loads(path.read_text()) == report


def test_a_crash_is_exit_2_not_reject_with_a_clear_message(tmp_path, monkeypatch, capsys):
    def crash(*a, **k):
        raise RuntimeError("disk on fire")
    monkeypatch.setattr(gate, "build_comparison", crash)
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"verdict": "PROMOTE", "exit_code": 0}))  # a stale report of an earlier run
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json", "--report", str(path))) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert "crashed" in err and "RuntimeError: disk on fire" in err
    assert "(at tests/test_gate_contract.py:" in err  # where it broke
    report = json.loads(out)
    assert report["verdict"] == "ERROR" and report["exit_code"] == 2 and "disk on fire" in report["error"]
    assert json.loads(path.read_text()) == report  # the stale PROMOTE is gone


def test_an_interrupted_gate_leaves_no_stale_report(tmp_path, monkeypatch):
    def interrupt(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(gate_cli, "gate_from_args", interrupt)
    path = tmp_path / "gate.json"
    path.write_text(json.dumps({"verdict": "PROMOTE", "exit_code": 0}))  # from an earlier run
    with pytest.raises(KeyboardInterrupt):  # the dispatcher turns it into 130
        gate_cli.main(gate_args(scenario(), "--report", str(path)))
    assert not path.exists()


def test_a_crash_after_the_decision_still_exits_2_and_names_the_decision(monkeypatch, capsys):
    def crash(result, console):
        raise UnicodeEncodeError("ascii", "é", 0, 1, "terminal cannot print it")
    monkeypatch.setattr(gate_cli, "print_result", crash)
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json")) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "ERROR" and stored(report["decision_id"])[0] == "PROMOTE"


def test_stdout_carries_only_json_even_when_something_prints(monkeypatch, capfd):
    real = gate_cli.run_gate

    def noisy(*a, **k):
        print("a library talking on stdout")
        os.write(1, b"a C extension talking on fd 1\n")
        return real(*a, **k)
    monkeypatch.setattr(gate_cli, "run_gate", noisy)
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--json")) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["verdict"] == "PROMOTE"
    assert "a library talking" in err and "a C extension talking" in err


def test_unwritable_report_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert gate_cli.main(gate_args(scenario(candidate_fixes=15), "--report", str(blocker / "gate.json"))) == 2
    err = capsys.readouterr().err
    assert "could not write the report" in err and "PROMOTE" in err


def test_report_values_are_strict_json():
    import numpy as np
    from traces.json_out import plain
    out = plain({"p": float("nan"), "n": np.int64(3), "r": np.float32(0.5), "ci": (np.inf, 1.0)})
    assert json.dumps(out, allow_nan=False) == '{"p": null, "n": 3, "r": 0.5, "ci": [null, 1.0]}'


def test_help_documents_exit_codes_and_json(capsys):
    with pytest.raises(SystemExit) as e:
        gate_cli.main(["--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("0 PROMOTE", "1 REJECT", "2 no decision", "any crash", "--json", "--report FILE", "decision_id",
                   "data/gate-exit-code"):
        assert needle in text, needle


def test_readme_documents_the_contract_and_the_nightly():
    readme = " ".join((ROOT / "README.md").read_text().split())
    for needle in ("--json", "--report", "0 PROMOTE", "1 REJECT", "2", "data/gate-exit-code", "make nightly"):
        assert needle in readme, needle


# ---------------------------------------------------------------- through make

pytestmark_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_gate(tmp_path: Path, py: str, args: str = "", env: dict | None = None) -> tuple[int, Path, Path]:
    """`make gate` with a given python, a satisfied setup stamp and report/exit files under tmp_path."""
    stamp = tmp_path / "setup-done"
    stamp.touch()  # newer than pyproject.toml: make does not run setup
    report, code_file = tmp_path / "out" / "gate.json", tmp_path / "out" / "gate-exit-code"
    argv = ["make", "-s", "gate", f"PY={py}", f"SETUP={stamp}", f"GATE_REPORT={report}", f"GATE_EXIT={code_file}",
            f"ARGS={args}"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    return done.returncode, report, code_file


@pytestmark_make
@pytest.mark.parametrize("code", [0, 1, 2, 137])
def test_make_gate_keeps_the_gates_exit_code(tmp_path, code):
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > "{tmp_path}/argv"\nexit {code}\n')
    fake.chmod(0o755)
    status, report, code_file = make_gate(tmp_path, str(fake), "--no-guards")
    assert status == (0 if code == 0 else 2)  # make's own status: 2 for any failing recipe
    assert code_file.read_text().strip() == str(code)  # the gate's, kept
    assert (tmp_path / "argv").read_text().split() == ["-m", "evals", "gate", "--report", str(report), "--no-guards"]


@pytestmark_make
def test_make_gate_end_to_end_reject(tmp_path, mend_env):
    runs = scenario(candidate_fixes=15)
    with store.connect() as con:  # no clusters: the fresh process runs the real assignment, with nothing to assign
        con.execute("DELETE FROM cluster_members")
        con.execute("DELETE FROM clusters")
    args = " ".join(a for a in gate_args(runs, "--min-improvement", "90") if a not in ("--cluster", "cA"))
    status, report, code_file = make_gate(tmp_path, sys.executable, args)
    assert status == 2 and code_file.read_text().strip() == "1"
    assert json.loads(report.read_text())["verdict"] == "REJECT"
