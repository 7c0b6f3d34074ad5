"""Suite YAML: loading, validation errors, selection, the shipped suites, version mismatches."""
import json

import pytest
from builders.trace_rows import NO_COMMA, fetch, ifeval_meta, insert_traces, trace_row

from evals import runner, suites
from evals.suites import SuiteError, SuiteVersionMismatch

SHIPPED = ["format", "instruction_following", "judge", "tool_calls"]


def test_shipped_suites_load():
    assert set(SHIPPED) <= set(suites.available())
    for name in SHIPPED:
        s = suites.load(name)
        assert s.name == name and s.version and s.higher_is_better is True and s.sha256
    assert suites.load("instruction_following").from_metadata == "instructions"
    assert suites.load("judge").requires == "judge"


@pytest.mark.parametrize("text,message", [
    ("name: x\nchecks: [{check: contains}]", "missing required field 'version'"),
    ("name: x\nversion: 1\nchecks: []", "checks must be a non-empty list"),
    ("name: x\nversion: 1\nchecks: [{check: nope}]", "checks\\[0\\]: unknown check 'nope'"),
    ("name: x\nversion: 1\ncolour: red\nchecks: [{check: valid_json}]", "unknown field\\(s\\) colour"),
    ("name: x\nversion: 1\nchecks: {from_metadata: elsewhere}", "from_metadata"),
    ("name: x\nversion: 1\nselect: {split: train}\nchecks: [{check: valid_json}]", "select.split"),
    ("name: x\nversion: 1\nselect: {metadata: {'a b': 1}}\nchecks: [{check: valid_json}]", "plain identifier"),
    ("name: [x\n", "not valid YAML"),
])
def test_suite_errors_name_the_field(text, message):
    with pytest.raises(SuiteError, match=message):
        suites.parse(text, "x.yaml")


def test_name_must_match_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("name: bad\nversion: '1'\nchecks: [{check: valid_json}]\n")
    with pytest.raises(SuiteError, match="file is named 'good'"):
        suites.load(str(path))


def test_unknown_suite_lists_available():
    with pytest.raises(SuiteError, match="available: .*instruction_following"):
        suites.load("nope")


def test_project_suites_dir_first(tmp_path, monkeypatch):
    (tmp_path / "mine.yaml").write_text("name: mine\nversion: '7'\nchecks: [{check: valid_json}]\n")
    monkeypatch.setenv("MEND_EVALS_SUITES_DIR", str(tmp_path))
    assert suites.load("mine").version == "7" and "mine" in suites.available()


def test_version_mismatch_is_a_clear_error():
    a = {"run_id": "r1", "suite": "format", "suite_version": "1"}
    with pytest.raises(SuiteVersionMismatch, match="version 1 but run r2 used version 2"):
        suites.require_same_version(a, {"run_id": "r2", "suite": "format", "suite_version": "2"})
    with pytest.raises(SuiteError, match="different suites"):
        suites.require_same_version(a, {"run_id": "r2", "suite": "judge", "suite_version": "1"})
    suites.require_same_version(a, {**a, "run_id": "r3"})


SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}}, "required": ["a"]}}}]


def traffic():
    insert_traces([
        trace_row(0, "Give JSON", '{"n": 1}', params={"response_format": {"type": "json_schema",
                                                                          "json_schema": {"name": "x", "schema": SCHEMA}}}),
        trace_row(1, "Give JSON", '{"n": "one"}', params={"response_format": {"type": "json_schema",
                                                                              "json_schema": {"name": "x", "schema": SCHEMA}}}),
        trace_row(2, "Any JSON", "not json", params={"response_format": {"type": "json_object"}}),
        trace_row(3, "Add 2", None, tools=TOOLS, tool_calls=[{"id": "1", "type": "function",
                                                              "function": {"name": "add", "arguments": '{"a": 2}'}}]),
        trace_row(4, "Add x", None, tools=TOOLS, tool_calls=[{"id": "1", "type": "function",
                                                              "function": {"name": "add", "arguments": '{"b": 2}'}}]),
        trace_row(5, "No commas", "a, b", ifeval_meta(NO_COMMA) | {"task": "poem"}),
        trace_row(6, "No commas", "a b", ifeval_meta(NO_COMMA) | {"task": "essay"}),
    ])


def test_format_and_tool_calls_suites():
    traffic()
    run_id = runner.run_suite("format", "all", progress=False)
    rows = fetch("SELECT trace_id, check_id, passed FROM results WHERE run_id = ? ORDER BY trace_id, check_idx",
                 [run_id])
    assert rows == [("t0000", "valid_json", True), ("t0000", "json_schema", True), ("t0001", "valid_json", True),
                    ("t0001", "json_schema", False), ("t0002", "valid_json", False)]
    run_id = runner.run_suite("tool_calls", "all", progress=False)
    assert fetch("SELECT trace_id, passed FROM results WHERE run_id = ? ORDER BY trace_id", [run_id]) == [
        ("t0003", True), ("t0004", False)]


def test_metadata_filter_selection():
    traffic()
    suite = suites.parse("name: poems\nversion: '1'\nselect: {metadata: {task: poem}}\n"
                         "checks: {from_metadata: instructions}")
    run_id = runner.run_suite(suite, "all", progress=False)
    assert fetch("SELECT trace_id, passed FROM results WHERE run_id = ?", [run_id]) == [("t0005", False)]


def test_from_metadata_checks():
    insert_traces([trace_row(0, "p", "hello world", {"checks": [{"check": "contains", "args": {"text": "hello"}},
                                                                {"check": "max_words", "args": {"n": 1}}]})])
    suite = suites.parse("name: m\nversion: '1'\nchecks: {from_metadata: checks}")
    run_id = runner.run_suite(suite, "all", progress=False)
    assert fetch("SELECT check_id, passed FROM results WHERE run_id = ? ORDER BY check_idx", [run_id]) == [
        ("contains", True), ("max_words", False)]


def test_judge_suite_skipped_without_endpoint(capsys):
    traffic()
    with pytest.raises(runner.SuiteSkipped, match="skipped: no judge endpoint configured"):
        runner.run_suite("judge", "all", progress=False)
    from evals.cli import main
    assert main(["run", "--suite", "judge", "--quiet"]) == 0
    assert "skipped" in capsys.readouterr().err
    assert fetch("SELECT count(*) FROM eval_runs") == [(0,)]


def test_judge_suite_with_a_local_endpoint(monkeypatch):
    from openai_stub import OpenAIStub

    from evals import checks_judge
    traffic()
    with OpenAIStub(models=("judge-m",)) as stub:
        stub.responder = lambda body: '{"score": 9, "reason": "good"}'
        monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", stub.base_url)
        monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "judge-m")
        checks_judge._CLIENTS.clear()
        run_id = runner.run_suite("judge", "all", progress=False)
        n_requests = stub.count
    rows = fetch("SELECT passed, score, details FROM results WHERE run_id = ?", [run_id])
    assert len(rows) == 5 and n_requests == 5  # prefetched once each; the checks read the cache
    assert all(r[0] and r[1] == 0.9 and json.loads(r[2])["judge_model"] == "judge-m" for r in rows)


def test_remote_judge_refused_without_opt_in(monkeypatch):
    from evals import checks_judge
    from evals.client import RemoteNotAllowed
    traffic()
    monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", "https://judge.example.com/v1")
    monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "big")
    checks_judge._CLIENTS.clear()
    with pytest.raises(RemoteNotAllowed, match="allow_remote"):
        runner.run_suite("judge", "all", progress=False)
