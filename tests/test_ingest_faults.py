"""Issue 25, ingest half: nothing lost, nothing blocked, counts that follow what was committed.

Each test builds its input here and checks the invariant read = stored + duplicate + quarantined + skipped in the
summary, the `ingests` row and the rows left in `traces` and `quarantine` (builders.ingest_files.run).
"""
import contextlib
import json
import os
import textwrap
from pathlib import Path

import duckdb
import pytest
from builders.ingest_files import chat, check_invariant, export, kv, rows, run, span, write_jsonl

from traces import hashing, ingest, settings, store


def line_of(text: str, needle: str) -> int:
    return text[:text.index(needle)].count("\n") + 1


def stored_ids() -> set[str]:
    return {r[0] for r in rows("SELECT trace_id FROM traces")}


# ---------- 1. one bad item of a JSON document is quarantined alone ----------

@pytest.mark.parametrize("indent", [2, None], ids=["pretty", "compact"])
def test_raw_tab_in_one_array_item_quarantines_that_item_alone(tmp_path, indent):
    text = json.dumps([chat(i, f"question {i}") for i in range(300)], indent=indent)
    text = text.replace('"question 5"', '"question\t5"')  # a raw TAB (a control character) inside a string
    path = tmp_path / "calls.json"
    path.write_text(text)
    s = run(path)
    assert s.status == "complete" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (300, 299, 1)
    start = line_of(text, '"id": "chatcmpl-5"') - (1 if indent else 0)  # the line where the item opens
    assert rows("SELECT source_line, reason FROM quarantine") == [(start, "invalid JSON")]
    assert "chatcmpl-299" in stored_ids() and "chatcmpl-5" not in stored_ids()


def _pretty_item(record) -> str:
    return textwrap.indent(json.dumps(record, indent=2), "  ")


@pytest.mark.parametrize("broken, why", [
    (lambda item: item[:-1], "its closing brace is missing"),
    (lambda item: item.replace('"role": "user"', '"role": "user" "x": 1'), "a comma is missing inside it"),
    (lambda item: item.replace('"content": "q 3"', '"content": "q 3'), "a quote is missing"),
])
def test_broken_item_of_a_pretty_printed_array_takes_no_other_item_along(tmp_path, broken, why):
    items = [_pretty_item(chat(i, f"q {i}")) for i in range(8)]
    items[3] = broken(items[3])
    path = tmp_path / "calls.json"
    path.write_text("[\n" + ",\n".join(items) + "\n]\n")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (8, 7, 1), why
    assert stored_ids() == {f"chatcmpl-{i}" for i in range(8) if i != 3}


def test_stray_text_between_compact_items_is_one_record(tmp_path):
    path = tmp_path / "calls.json"
    path.write_text("[" + json.dumps(chat(1, "a")) + ", oops, " + json.dumps(chat(2, "b")) + "]")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (3, 2, 1)
    assert rows("SELECT raw FROM quarantine") == [("oops",)]


def test_bad_items_sharing_a_line_are_each_quarantined_in_any_batch(tmp_path):
    """Found by the fuzzer: the items of a one-line array all start on line 1; the second batch's bad item was
    counted but not written (taken for a line already quarantined), so the counts no longer matched the rows."""
    path = tmp_path / "one_line.json"
    path.write_text(json.dumps([[1], chat(1, "fine"), {"messages": []}]))
    s = run(path, batch_lines=1)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (3, 1, 2)
    again = ingest.ingest_paths([path], settings.load("traces", {"batch_lines": 1}))[0]  # counted again, kept once
    assert again.counts.quarantined == 2 and rows("SELECT count(*) FROM quarantine")[0][0] == 2


@pytest.mark.parametrize("broken", [lambda doc: doc.replace('"q 1"', '"q\t1"'),  # a raw TAB
                                    lambda doc: doc[:-2]],                        # its last line cut
                         ids=["tab", "cut"])
def test_broken_document_of_jq_output_leaves_the_next_one(tmp_path, broken):
    docs = [json.dumps(chat(i, f"q {i}"), indent=2) for i in range(3)]
    docs[1] = broken(docs[1])
    path = tmp_path / "jq.json"
    path.write_text("\n".join(docs) + "\n")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (3, 2, 1)
    assert stored_ids() == {"chatcmpl-0", "chatcmpl-2"}


# ---------- 10. blank lines, and a JSONL file whose first record is pretty-printed ----------

def test_whitespace_only_lines_are_blank_lines_not_errors(tmp_path):
    path = tmp_path / "spaced.jsonl"
    path.write_text("  \n\t\n" + json.dumps(chat(1, "a")) + "\n \r\n" + json.dumps(chat(2, "b")) + "\n   ")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 2, 0)
    assert sorted(r[0] for r in rows("SELECT source_line FROM traces")) == [3, 5]


@pytest.mark.parametrize("first", [json.dumps(chat(0, "q 0"), indent=2), '{"messages": [', "{"],
                         ids=["whole", "cut", "brace"])
def test_jsonl_whose_first_record_is_pretty_printed_keeps_the_rest(tmp_path, first):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(i, f"q {i}") for i in range(1, 5)])
    path.write_text(first + "\n" + path.read_text())
    s = run(path)
    whole = first.endswith("}")
    assert (s.counts.stored, s.counts.quarantined) == ((5, 0) if whole else (4, 1))
    assert {f"chatcmpl-{i}" for i in range(1, 5)} <= stored_ids()


# ---------- 2. a malformed span is quarantined with a reason; the rest of the file and the next files go on ----------

GOOD = span("good", "chat", {"gen_ai.prompt": "Hi?", "gen_ai.completion": "Hello."})


def _bad_span(**fields):
    sp = span("bad", "chat", {"gen_ai.prompt": "Hi again?", "gen_ai.completion": "Hello again."})
    sp.update(fields)
    return sp


def _with_attribute(value):
    sp = _bad_span()
    sp["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": value})
    return sp


def _resource(spans):
    return export(*spans)["resourceSpans"][0]


MALFORMED = {
    "intValue 12abc": ([_with_attribute({"intValue": "12abc"})], "intValue must be an integer"),
    "doubleValue {}": ([_with_attribute({"doubleValue": {}})], "doubleValue must be a number, got object"),
    "arrayValue [1, 2]": ([_with_attribute({"arrayValue": [1, 2]})], "arrayValue must be an object"),
    "boolValue yes": ([_with_attribute({"boolValue": "yes"})], "boolValue must be a boolean, got string"),
    "stringValue {}": ([_with_attribute({"stringValue": {}})], "stringValue must be a string, got object"),
    "attributes {}": ([_bad_span(attributes={"k": 1})], "`attributes` must be an array, got object"),
    "events {a: 1}": ([_bad_span(events={"a": 1})], "`events` must be an array, got object"),
    "events [1]": ([_bad_span(events=[1])], "`events` must hold objects"),
    "spanId {..}": ([_bad_span(spanId={"id": 1})], "`spanId` must be"),
    "NaN literal": ([_bad_span(attributes=[kv("gen_ai.prompt", "Hi"), kv("gen_ai.completion", "yo"),
                                           {"key": "gen_ai.request.temperature", "value": {"doubleValue": 0.5}},
                                           kv("llm.invocation_parameters", '{"temperature": NaN}'),
                                           kv("openinference.span.kind", "LLM"),
                                           kv("llm.input_messages.0.message.content", "Hi")])],
                    "NaN or Infinity"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_span_is_quarantined_and_the_rest_of_the_file_stored(tmp_path, case):
    bad, reason = MALFORMED[case]
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(export(GOOD, *bad)))
    s = run(path)
    assert s.status == "complete" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 1, 1)
    (got,), = rows("SELECT reason FROM quarantine")
    assert got.startswith("malformed span: ") and reason in got
    assert stored_ids() == {"good"}


@pytest.mark.parametrize("resource_spans, reason", [
    ([1], "`resourceSpans[0]` must be an object, got number"),
    ([{"scopeSpans": "x"}], "`resourceSpans[0].scopeSpans` must be an array, got string"),
    ([{"scopeSpans": [{"spans": {}}]}], "`resourceSpans[0].scopeSpans[0].spans` must be an array, got object"),
])
def test_malformed_export_nesting_is_quarantined_where_it_breaks(tmp_path, resource_spans, reason):
    path = tmp_path / "spans.json"
    path.write_text(json.dumps({"resourceSpans": resource_spans + [_resource([GOOD])]}))
    s = run(path)
    assert s.status == "complete" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 1, 1)
    assert rows("SELECT reason FROM quarantine") == [(f"malformed export: {reason} (file line 1)",)]


def test_nan_start_time_is_a_trace_without_a_time(tmp_path):
    """As a JSONL `created` that is no time: the trace is kept, `ts` is NULL (timestamps.epoch_to_utc)."""
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(export(_bad_span(startTimeUnixNano="nan"), GOOD)))
    s = run(path)
    assert (s.counts.stored, s.counts.quarantined) == (2, 0)
    assert rows("SELECT ts FROM traces WHERE trace_id = 'bad'") == [(None,)]


def _inbox(tmp_path, monkeypatch, files: dict[str, str]) -> Path:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name, text in files.items():
        (inbox / name).write_text(text)
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    return inbox


def _statuses() -> dict[str, tuple]:
    return {Path(f).name: (status, stored, error) for f, status, stored, error in
            rows("SELECT source_file, status, n_stored, error FROM ingests")}


def test_unreadable_file_fails_alone_naming_itself(tmp_path, monkeypatch, capsys):
    inbox = _inbox(tmp_path, monkeypatch, {"a_locked.jsonl": json.dumps(chat(1, "locked")) + "\n",
                                           "b_good.jsonl": json.dumps(chat(2, "good")) + "\n"})
    if os.geteuid() == 0:  # root reads a mode-000 file: refuse it as the kernel refuses anyone else
        real_open = open

        def guarded(path, *a, **k):
            if Path(path).name == "a_locked.jsonl":
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, *a, **k)
        monkeypatch.setattr(hashing, "open", guarded, raising=False)
    (inbox / "a_locked.jsonl").chmod(0)
    from traces.cli import main
    assert main(["ingest"]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "a_locked.jsonl: cannot read the file: Permission denied" in err and "Traceback" not in err
    got = _statuses()
    assert got["a_locked.jsonl"][0] == "failed" and "a_locked.jsonl" in got["a_locked.jsonl"][2]
    assert got["b_good.jsonl"][:2] == ("complete", 1)


def test_a_reader_crash_fails_that_file_only(tmp_path, monkeypatch):
    """Whatever breaks inside one file's ingest (here a reader bug) is that file's failure, named, not a crash."""
    _inbox(tmp_path, monkeypatch, {"a_spans.json": json.dumps(export(GOOD)),
                                   "b_chat.jsonl": json.dumps(chat(2, "good")) + "\n"})

    def broken(*_):
        raise RuntimeError("reader bug")
    monkeypatch.setitem(ingest.INGESTERS, "otel", broken)
    summaries = ingest.ingest_inbox()
    assert [s.status for s in summaries] == ["failed", "complete"]
    assert "a_spans.json: RuntimeError: reader bug" in summaries[0].error
    assert _statuses()["b_chat.jsonl"][:2] == ("complete", 1)


# ---------- 7. counts follow what was committed ----------

def test_a_batch_whose_commit_failed_is_not_counted(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(i, f"p {i}") for i in range(6)])
    real, commits = store.transaction, []

    @contextlib.contextmanager
    def disk_full_at_second_commit(con):
        with real(con):
            yield con
            commits.append(1)
            if len(commits) == 2:  # the batch is written, then its COMMIT fails: nothing of it stays
                raise duckdb.IOException("IO Error: Could not write file: No space left on device")

    monkeypatch.setattr(store, "transaction", disk_full_at_second_commit)
    s = ingest.ingest_paths([path], settings.load("traces", {"batch_lines": 2}))[0]
    check_invariant(s)
    assert s.status == "failed" and "No space left on device" in s.error
    assert (s.counts.read, s.counts.stored) == (2, 2) and rows("SELECT count(*) FROM traces")[0][0] == 2
    monkeypatch.setattr(store, "transaction", real)
    again = run(path, batch_lines=2)  # the rerun completes: what was committed is a duplicate, the rest stored
    assert again.status == "complete" and (again.counts.stored, again.counts.duplicate) == (4, 2)


# ---------- found by the fuzzer: span data in a reason, printed raw ----------

def test_span_data_in_a_skip_reason_is_escaped_where_stored_and_printed(tmp_path, capsys):
    kind = "x\x1b[2J\u202ey" * 20  # clear-screen and a bidi override in a span kind
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(export(span("k1", "agent", {"openinference.span.kind": kind}))))
    from traces.cli import main
    assert main(["ingest", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out and "X\\u001b[2J\\u202eY" in out
    (skipped,), = rows("SELECT skipped FROM ingests")
    reason, = json.loads(skipped)
    assert reason.startswith("OpenInference X\\u001b[2J\\u202eY") and len(reason) < 120  # cut: one odd span, one key
