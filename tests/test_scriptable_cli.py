"""Issue 26, item 5 (every reporting command scriptable): `--json` prints one JSON document and nothing else on
stdout; `traces config` says what each setting does, from the settings' own comments; every sub-command's --help
exits 0 and touches nothing; `traces ingest` exits 3 for a file that stored nothing (its exit codes in --help).
The clusters and registry listings are tested beside them (test_clusters.py, test_registry.py)."""
import json

import pytest
from builders.ingest_files import chat, write_jsonl
from builders.nightly_report import nightly

from traces import config_cmd, settings


@pytest.fixture(autouse=True)
def wide_terminal(monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich tables wrap cells at the default 80


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(package: str):
    return __import__(f"{package}.cli", fromlist=["main"])


def run(package: str, *argv: str) -> int:
    """The command's exit code, whether it returns it or argparse raises SystemExit (--help, bad flags)."""
    try:
        return cli(package).main(list(argv))
    except SystemExit as e:
        return e.code


def json_of(capsys, package: str, *argv: str) -> dict:
    assert run(package, *argv, "--json") == 0
    return json.loads(capsys.readouterr().out)  # raises unless stdout is exactly one JSON document


# ---------- --help everywhere

def every_command() -> list[tuple[str, ...]]:
    out = [(pkg, name) for pkg in ("traces", "train", "evals", "curate") for name in cli(pkg).COMMANDS]
    return out + [("evals", "registry", sub) for sub in ("list", "promote", "rollback")]


def test_every_help_exits_0_and_touches_nothing(home, capsys):
    """Every sub-command parses its flags with argparse before it does anything: no database is created, nothing is
    written under the project."""
    for command in every_command():
        assert run(*command, "--help") == 0, command
        out = capsys.readouterr().out
        assert out.startswith("usage: python -m"), (command, out[:200])
    assert list(home.iterdir()) == []


def test_curate_report_help_is_not_a_nightly_id(home, capsys):
    """`curate report --help` took `--help` for a nightly id (exit 2, after opening the store; the issue saw it
    write reports/--help/report.md)."""
    nightly()  # a ledger with a nightly in it: a report command that ignored --help would rewrite its report
    assert run("curate", "report", "--help") == 0
    assert "NIGHTLY_ID" in capsys.readouterr().out and not (home / "reports").exists()


# ---------- --json

def test_traces_stats_json(home, capsys):
    from traces import ingest
    log = write_jsonl(home / "mixed.jsonl", [chat(1, "hello"), chat(2, "again")])
    log.write_text(log.read_text() + "{broken\n" * 6)
    ingest.ingest_paths([log])
    doc = json_of(capsys, "traces", "stats")
    assert doc["traces"] == 2 and doc["database"] == str(settings.db_path())
    assert doc["by_model"] == [{"model": "gpt-4o-mini", "traces": 2}]
    assert doc["quarantine_by_reason"] == [{"reason": "invalid JSON", "file": str(log), "lines": 6,
                                            "first_lines": [3, 4, 5, 6, 7]}]
    (ingest_row,) = doc["ingests"]
    assert (ingest_row["read"], ingest_row["stored"], ingest_row["quarantined"], ingest_row["error"]) == (8, 2, 6, None)


def test_traces_config_json_has_value_source_and_description(home, capsys, monkeypatch):
    monkeypatch.setenv("MEND_TRACES_HOLDOUT_FRACTION", "0.25")
    doc = json_of(capsys, "traces", "config")
    assert list(doc["stages"]) == list(settings.STAGES) and doc["database"] == str(settings.db_path())
    holdout = doc["stages"]["traces"]["holdout_fraction"]
    assert holdout["value"] == 0.25 and holdout["source"] == "env MEND_TRACES_HOLDOUT_FRACTION"
    assert doc["stages"]["evals"]["suites"]["value"] == ["instruction_following"]  # values keep their JSON types
    undescribed = [(stage, key) for stage, keys in doc["stages"].items() for key, v in keys.items()
                   if not v["description"]]
    assert undescribed == [], "give each setting a trailing comment: `traces config` shows its first line"


def test_config_descriptions_are_the_first_line_of_each_fields_comment(home, capsys):
    from curate.settings import CurateSettings
    about = config_cmd.descriptions(CurateSettings)
    assert about["teacher_allow_remote"] == "a non-loopback teacher must be opted into"
    # a comment that goes on below its field ends in "…"; a section heading below a field is not its comment
    assert about["teacher_backend"] == "local server: llama.cpp (xllamacpp, serves the GGUF) | transformers …"
    assert about["sweep_dir"] == "each candidate's training set: <sweep_dir>/<sweep_id>/c<k>/train.jsonl"
    assert about["sweep_grid"].startswith("candidate configs: TrainSettings keys")  # a value over several lines
    assert run("traces", "config", "--stage", "curate") == 0
    assert "a non-loopback teacher must be opted into" in capsys.readouterr().out


def test_curate_status_json(home, capsys):
    nightly()
    doc = json_of(capsys, "curate", "status")
    assert {"cluster_id": "cA", "label": "label-cA", "status": "duplicate", "reason": "exact", "n": 1} \
        in doc["examples"]
    assert doc["totals"] == {"accepted": 9, "duplicate": 1, "edited": 1}
    assert {"check_id": "A", "strategy": "repair", "candidates": 2, "verified": 2, "fluent": 2, "kept": 2,
            "accepted": 2} in doc["yield"]
    assert json_of(capsys, "curate", "status", "--cluster", "cB")["cluster"] == "cB"


def test_curate_report_json_writes_the_report_and_prints_its_summary(home, capsys):
    nightly()
    doc = json_of(capsys, "curate", "report", "n1")
    assert doc["report"] == str(home / "reports" / "n1" / "report.md") and (home / "reports/n1/report.md").exists()
    assert doc["nightly_id"] == "n1" and doc["verdict"] == "PROMOTE" and doc["train_run"] == "tr1"
    assert list(doc["stages"]) == ["ingest", "synth", "train", "gate", "promote"]  # the report is being written
    assert doc["stages"]["train"]["wall_s"] == 3600 and doc["wall_s"] == 3761
    assert doc["decision"]["details"]["clusters"]["cA"]["cand_rate"] == 75.0
    assert {"cluster": "label-cA", "strategy": "repair", "n": 2} in doc["strategies"]
    assert run("curate", "report", "nope", "--json") == 2
    out, err = capsys.readouterr()
    assert out == "" and "no nightly 'nope'" in err


def test_json_help_is_the_same_on_every_reporting_command(capsys):
    from traces.json_out import JSON_HELP
    for command in [("traces", "stats"), ("traces", "config"), ("evals", "clusters"), ("evals", "registry", "list"),
                    ("curate", "status"), ("curate", "report")]:
        assert run(*command, "--help") == 0
        assert " ".join(JSON_HELP.split()) in " ".join(capsys.readouterr().out.split()), command


def test_stdout_to_stderr_moves_file_descriptor_output_too(capfd):
    """What a library writes to fd 1 (a C extension, a subprocess) must not break the JSON document either."""
    import os

    from traces.json_out import emit, stdout_to_stderr
    with stdout_to_stderr(True):
        os.write(1, b"library noise\n")
        print("a note")
    emit({"ok": True})
    out, err = capfd.readouterr()
    assert json.loads(out) == {"ok": True} and "library noise" in err and "a note" in err


# ---------- ingest exit codes

def test_ingest_exits_3_when_a_file_stored_nothing(home, capsys):
    bad = home / "all-bad.jsonl"
    bad.write_text('{"messages": "not a list"}\n{broken\n')
    good = write_jsonl(home / "good.jsonl", [chat(1, "hello")])
    assert run("traces", "ingest", str(bad), str(good)) == 3
    err = capsys.readouterr().err
    assert "all-bad.jsonl" in err and "stored nothing" in err and "good.jsonl" not in err
    assert run("traces", "ingest", str(good)) == 0  # all duplicates (a re-run) stored nothing new: not a failure
    capsys.readouterr()
    csv = home / "x.csv"
    csv.write_text("a,b\n")
    assert run("traces", "ingest", str(bad), str(csv)) == 1  # a failed file outranks a file that stored nothing


def test_ingest_help_documents_its_exit_codes(capsys):
    assert run("traces", "ingest", "--help") == 0
    out = capsys.readouterr().out
    assert "exit codes:" in out and all(f"\n  {code} " in out for code in ("0", "1", "2", "3", "130"))


def test_json_document_is_strict_and_plain():
    import datetime as dt
    import decimal
    from pathlib import Path

    from traces.json_out import plain
    value = {"t": dt.datetime(2026, 3, 1, 12), "d": decimal.Decimal("1.5"), "p": Path("/x"), "nan": float("nan"),
             "s": {1}, "w": dt.timedelta(seconds=90)}
    assert plain(value) == {"t": "2026-03-01T12:00:00", "d": 1.5, "p": "/x", "nan": None, "s": [1], "w": 90.0}
