"""Issue 15, ingest half: one test (or a few) per numbered item, inputs built here in the shapes real tools write.

Every ingest is checked against the invariant read = stored + duplicate + quarantined + skipped, in the
summary, in its `ingests` row and in the rows it left in `traces` and `quarantine`.
"""
import base64
import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from builders.ingest_files import chat, export, rows, run, span, write_jsonl

from traces import canonical, cli_dispatch, ingest, otel, settings, stats, store, timestamps


# ---------- 1. a chat log that mentions "resourceSpans" is not OTel ----------

def test_chat_log_that_mentions_resourceSpans_is_read_as_chat(tmp_path):
    logged = export(span("aa", "chat", {"gen_ai.operation.name": "chat"}))  # an OTel payload, logged as an object
    path = write_jsonl(tmp_path / "chat.jsonl", [chat(1, "Why does this OTel payload fail?", metadata={"payload": logged}),
                                                 chat(2, "second"), chat(3, "third")])
    assert '"resourceSpans"' in path.read_text()[:4096]
    s = run(path)
    assert s.format == "jsonl" and (s.counts.read, s.counts.stored) == (3, 3)
    assert rows("SELECT status FROM ingests") == [("complete",)]


def test_otel_line_without_resourceSpans_is_quarantined_not_dropped(tmp_path):
    path = tmp_path / "export.jsonl"
    good = export(span("a1", "chat", {"gen_ai.operation.name": "chat", "gen_ai.prompt": "Hi?",
                                      "gen_ai.completion": "Hello."}))
    path.write_text(json.dumps(good) + "\n" + json.dumps(chat(9, "not a span")) + "\n")
    s = run(path)
    assert s.format == "otel" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 1, 1)
    assert rows("SELECT reason FROM quarantine") == [("export request has no `resourceSpans` (file line 2)",)]


# ---------- 2. secrets: every kind, every place, greped in every file the store writes ----------

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
JWT = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
       "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
BASIC = base64.b64encode(b"deploy:Sup3rS3cretPw").decode()
URL_PASSWORD = "hunter2-db-Passw0rd"
BEARER = "abcDEF0123456789/ghiJKL+mnoPQR/stu"  # base64 with "/": the encoder below writes it as "\/"
SECRETS = [AWS_SECRET, JWT, BASIC, URL_PASSWORD, BEARER, BEARER.replace("/", "\\/")]


def secret_text(where):
    return (f"{where}: aws_secret_access_key={AWS_SECRET} token {JWT} "
            f"Authorization: Basic {BASIC} db postgres://app:{URL_PASSWORD}@db.internal:5432/prod "
            f"Authorization: Bearer {BEARER}")


def _escaped_slashes(record):
    return json.dumps(record).replace("/", "\\/")  # what PHP's json_encode and some Java encoders write


def _plant_secrets(folder):
    folder.mkdir()
    tool_call = {"id": "call_1", "type": "function",
                 "function": {"name": "deploy", "arguments": json.dumps({"creds": secret_text("args")})}}
    lines = [
        _escaped_slashes(chat(1, secret_text("prompt"))),
        _escaped_slashes(chat(2, "hi", secret_text("response"))),
        _escaped_slashes({**chat(3, "call the tool"), "choices": [{"message": {
            "role": "assistant", "content": None, "tool_calls": [tool_call]}}]}),
        _escaped_slashes(chat(4, "meta", metadata={"note": secret_text("metadata")})),
        _escaped_slashes({"messages": secret_text("quarantined")}),  # bad line: quarantined with its raw text
    ]
    (folder / "leaky.jsonl").write_text("\n".join(lines) + "\n")
    oi = span("b1", "ChatCompletion", {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o",
                                       "llm.input_messages.0.message.role": "user",
                                       "llm.input_messages.0.message.content": secret_text("otel prompt"),
                                       "llm.output_messages.0.message.role": "assistant",
                                       "llm.output_messages.0.message.content": "ok"})
    (folder / "spans.json").write_text(json.dumps(export(oi)).replace("/", "\\/"))
    return folder


def _grep_store(data_dir):
    """{secret: [files under data_dir whose bytes hold it]} after the store is checkpointed and closed."""
    with store.connect() as con:
        con.execute("CHECKPOINT")
    found = {}
    for f in Path(data_dir).rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for secret in SECRETS:
                if secret.encode() in blob:
                    found.setdefault(secret, []).append(f.name)
    return found


def test_secrets_never_reach_the_store(tmp_path, monkeypatch):
    src = _plant_secrets(tmp_path / "src")
    data = tmp_path / "data"
    monkeypatch.setenv("MEND_DB", str(data / "mend.duckdb"))
    for f in sorted(src.iterdir()):
        run(f)
    assert rows("SELECT count(*) FROM traces")[0][0] == 5 and rows("SELECT count(*) FROM quarantine")[0][0] == 1
    assert _grep_store(data) == {}
    text = " ".join(str(v) for table in ("traces", "quarantine") for r in rows(f"SELECT * FROM {table}") for v in r)
    for secret in SECRETS:
        assert secret not in text
    # what is kept around a redaction: the scheme, user and host of a URL, the word Bearer / Basic
    assert "postgres://app:[REDACTED_SECRET]@db.internal" in text and "Bearer [REDACTED_SECRET]" in text


def test_secret_grep_finds_them_when_scrubbing_is_off(tmp_path, monkeypatch):
    """The grep above is only evidence if it can see an unscrubbed secret in the DuckDB file."""
    src = _plant_secrets(tmp_path / "src")
    data = tmp_path / "data"
    monkeypatch.setenv("MEND_DB", str(data / "mend.duckdb"))
    run(src / "leaky.jsonl", scrub_secrets=False)
    assert set(_grep_store(data)) >= {AWS_SECRET, JWT, BASIC, URL_PASSWORD}


def test_scrubber_leaves_look_alikes_alone():
    from traces.scrub import scrub_text
    for text in ("commit 3b18e512dba79e4c8300dd08aeb37f8e728b8dad", "Basic questions about Python",
                 "see https://example.com:8080/docs", "Bearer of bad news"):
        assert scrub_text(text) == text


# ---------- 3. one unreadable file does not stop the others ----------

def test_truncated_and_fake_gzip_fail_alone(tmp_path, monkeypatch, capsys):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    big = "".join(json.dumps(chat(i, f"prompt {i} " + "x" * 200)) + "\n" for i in range(3000)).encode()
    packed = gzip.compress(big)
    (inbox / "a_truncated.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (inbox / "b_not_gzip.jsonl.gz").write_text(json.dumps(chat(1, "plain text named .gz")) + "\n")
    write_jsonl(inbox / "c_good.jsonl", [chat(f"g{i}", f"good {i}") for i in range(3)])
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    from traces.cli import main
    assert main(["ingest"]) == 1
    err = capsys.readouterr().err.replace("\n", "")
    assert "a_truncated.jsonl.gz" in err and "truncated" in err and "b_not_gzip.jsonl.gz" in err
    got = {Path(f).name: (status, n_stored, error) for f, status, n_stored, error in
           rows("SELECT source_file, status, n_stored, error FROM ingests")}
    assert got["c_good.jsonl"][:2] == ("complete", 3)
    status, stored, error = got["a_truncated.jsonl.gz"]
    assert status == "failed" and 0 < stored < 3000 and f"after line {stored:,}" in error  # whole lines kept
    assert got["b_not_gzip.jsonl.gz"][0] == "failed" and "not a gzip file" in got["b_not_gzip.jsonl.gz"][2]


# ---------- 4. ids reused across files ----------

def test_ids_reused_with_other_content_are_new_traces(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{**chat(i, f"day one question {i}"), "id": str(i)} for i in (1, 2, 3)])
    b = write_jsonl(tmp_path / "b.jsonl", [{**chat(i, f"day two question {i}"), "id": str(i)} for i in (1, 2, 3)])
    assert run(a).counts.stored == 3
    s = run(b)
    assert (s.counts.stored, s.counts.duplicate) == (3, 0)
    assert rows("SELECT count(*) FROM traces")[0][0] == 6
    again = run(b)  # same ids, same content: duplicates
    assert (again.counts.stored, again.counts.duplicate) == (0, 3)
    same = write_jsonl(tmp_path / "c.jsonl", [{**chat(1, "day one question 1"), "id": "1"},
                                              {**chat(1, "day three"), "id": "1"}, {**chat(1, "day three"), "id": "1"}])
    s = run(same)
    assert (s.counts.stored, s.counts.duplicate) == (1, 2)  # in-file variant kept once; A's line 1 is a duplicate
    ids = {r[0] for r in rows("SELECT trace_id FROM traces")}
    assert {"1", "2", "3"} <= ids and len(ids) == 7 and all(i[:2] in ("1~", "2~", "3~") for i in ids - {"1", "2", "3"})


# ---------- 5. real formats ----------

def test_pretty_printed_json_object_and_json_array(tmp_path):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(chat(1, "pretty printed"), indent=2))
    s = run(one)
    assert s.format == "json" and (s.counts.read, s.counts.stored) == (1, 1)
    arr = tmp_path / "many.json"
    arr.write_text(json.dumps([chat(2, "first"), "not an object", chat(3, "third")], indent=2))
    s = run(arr)
    assert s.format == "json" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (3, 2, 1)
    line = next(i + 1 for i, t in enumerate(arr.read_text().splitlines()) if "not an object" in t)
    assert rows("SELECT source_line, reason FROM quarantine") == [(line, "line is not a JSON object")]
    starts = dict(rows("SELECT trace_id, source_line FROM traces WHERE source_file = ?", [str(arr)]))
    assert starts["chatcmpl-2"] == 2  # where the record starts in the file


def test_broken_json_document_is_one_quarantined_record(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text(json.dumps([chat(1, "kept"), chat(2, "cut off")], indent=2)[:-40])
    s = run(path)
    assert (s.counts.stored, s.counts.quarantined) == (1, 1)
    assert rows("SELECT reason FROM quarantine") == [("invalid JSON",)]


def test_hugging_face_chat_parquet_messages_as_list_of_structs(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    msgs = [[{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]
            for i in range(4)] + [[{"role": "user", "content": "no reply"}]]
    table = pa.table({"prompt_id": [f"p{i}" for i in range(5)], "messages": msgs})
    assert pa.types.is_list(table.schema.field("messages").type)  # list<struct<role, content>>
    path = tmp_path / "train_sft.parquet"
    pq.write_table(table, path)
    s = run(path, batch_lines=2)
    assert s.format == "parquet" and (s.counts.read, s.counts.stored, s.counts.quarantined) == (5, 4, 1)
    assert rows("SELECT prompt, response FROM traces ORDER BY source_line LIMIT 1") == [("Question 0?", "Answer 0.")]
    assert rows("SELECT source_line FROM quarantine") == [(5,)]


def test_store_layout_parquet_with_struct_messages(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "store.parquet"
    pq.write_table(pa.table({"trace_id": ["t1"], "messages": [[{"role": "user", "content": "Hello?"}]],
                             "response": ["Hi."], "ts": pa.array([1731052800000], pa.int64())}), path)
    s = run(path)
    assert s.counts.stored == 1
    assert rows("SELECT prompt, response, ts::VARCHAR FROM traces") == [("Hello?", "Hi.", "2024-11-08 08:00:00")]


def test_openinference_phoenix_spans(tmp_path):
    llm = span("c1", "ChatCompletion", {
        "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini", "llm.provider": "openai",
        "llm.invocation_parameters": json.dumps({"temperature": 0.1}),
        "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "Be brief.",
        "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "Weather in Oslo?",
        "llm.output_messages.0.message.role": "assistant",
        "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_9",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
        "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Oslo"}',
        "llm.token_count.prompt": 21, "llm.token_count.completion": 7,
        "llm.tools.0.tool.json_schema": json.dumps({"type": "function", "function": {"name": "get_weather"}}),
        "session.id": "s-1", "metadata": json.dumps({"base_id": "b042"})})
    tool = span("c2", "get_weather", {"openinference.span.kind": "TOOL", "tool.name": "get_weather"})
    chain = span("c3", "agent", {"openinference.span.kind": "CHAIN", "input.value": "Weather in Oslo?"})
    path = tmp_path / "phoenix.json"
    path.write_text(json.dumps(export(chain, llm, tool)))
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.skipped) == (3, 1, 2)
    assert s.skipped == {"OpenInference CHAIN span (not an LLM call)": 1, "OpenInference TOOL span (not an LLM call)": 1}
    model, prompt, calls, usage, params, meta, tools = rows(
        "SELECT model, prompt, tool_calls, usage, params, metadata, tools FROM traces")[0]
    assert model == "gpt-4o-mini" and prompt == "Weather in Oslo?"
    assert json.loads(calls) == [{"id": "call_9", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    assert json.loads(usage) == {"input_tokens": 21, "output_tokens": 7} and json.loads(params) == {"temperature": 0.1}
    assert json.loads(meta)["base_id"] == "b042" and json.loads(tools)[0]["function"]["name"] == "get_weather"


def test_openllmetry_flattened_tool_calls(tmp_path):
    sp = span("d1", "openai.chat", {
        "llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
        "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Book a table for two at 7.",
        "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.finish_reason": "tool_calls",
        "gen_ai.completion.0.tool_calls.0.id": "call_1", "gen_ai.completion.0.tool_calls.0.name": "book_table",
        "gen_ai.completion.0.tool_calls.0.arguments": '{"people": 2, "time": "19:00"}',
        "llm.request.functions.0.name": "book_table", "llm.request.functions.0.description": "Book a table",
        "gen_ai.usage.prompt_tokens": 30, "gen_ai.usage.completion_tokens": 9})
    workflow = span("d2", "booking.workflow", {"traceloop.span.kind": "workflow"})
    path = tmp_path / "openllmetry.json"
    path.write_text(json.dumps(export(sp, workflow)))
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined, s.counts.skipped) == (2, 1, 0, 1)
    calls, response, usage, tools = rows("SELECT tool_calls, response, usage, tools FROM traces")[0]
    assert response is None and json.loads(calls)[0]["function"] == {"name": "book_table",
                                                                      "arguments": '{"people": 2, "time": "19:00"}'}
    assert json.loads(usage) == {"input_tokens": 30, "output_tokens": 9}
    assert json.loads(tools)[0]["function"]["name"] == "book_table"


def test_genai_tool_execution_spans_are_skipped_with_a_reason(tmp_path):
    chat_span = span("e1", "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                          "gen_ai.input.messages": json.dumps([{"role": "user", "parts": [
                                              {"type": "text", "content": "Sum 2 and 3"}]}]),
                                          "gen_ai.output.messages": json.dumps([{"role": "assistant", "parts": [
                                              {"type": "text", "content": "5"}]}])})
    tools = [span(f"e{i}", "execute_tool add", {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "add"})
             for i in range(2, 5)]
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(export(chat_span, *tools)))
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined, s.counts.skipped) == (4, 1, 0, 3)
    assert s.skipped == {"GenAI execute_tool span: tool execution, not an LLM call": 3}
    assert json.loads(rows("SELECT skipped FROM ingests")[0][0]) == dict(s.skipped)


def test_csv_is_refused_with_a_clear_error(tmp_path, capsys):
    path = tmp_path / "logs.csv"
    path.write_text("prompt,response\nhi,hello\n")
    s = ingest.ingest_paths([path])[0]
    assert s.status == "failed" and "logs.csv" in s.error and "CSV" in s.error
    assert rows("SELECT count(*) FROM quarantine")[0][0] == 0 and rows("SELECT status FROM ingests") == [("failed",)]


# ---------- 8. hangs and tracebacks ----------

@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_lines_below_one_is_refused(tmp_path, value, capsys, monkeypatch):
    from traces.cli import main
    path = write_jsonl(tmp_path / "x.jsonl", [chat(1, "x")])
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(path), "--batch-lines", value])
    assert e.value.code == 2 and "must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("MEND_TRACES_BATCH_LINES", value)  # the same value from the environment
    assert main(["ingest", str(path)]) == 2
    # below zero the settings loader refuses it (as any negative number setting), at zero ingest does
    assert re.search(r"batch_lines must (be a whole number >= 1|not be negative)", capsys.readouterr().err)
    assert not settings.db_path().exists() or rows("SELECT count(*) FROM ingests")[0][0] == 0


@pytest.mark.parametrize("fraction", ["1.5", "-0.1"])
def test_holdout_fraction_outside_0_1_is_refused(tmp_path, fraction, capsys):
    from traces.cli import main
    path = write_jsonl(tmp_path / "x.jsonl", [chat(1, "x")])
    assert main(["ingest", str(path), "--holdout-fraction", fraction]) == 2
    assert re.search(r"holdout_fraction must (be between 0 and 1|not be negative)", capsys.readouterr().err)


def test_ctrl_c_inside_a_batch_prints_a_message_and_exits_130(tmp_path, monkeypatch, capsys):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(i, f"p {i}") for i in range(6)])
    real = canonical.store_batch

    def interrupted(con, *a, **k):
        if rows_done():
            raise duckdb.InterruptException("INTERRUPT Error: Interrupted!")  # what Ctrl-C raises mid-query
        return real(con, *a, **k)

    calls = []

    def rows_done():
        calls.append(1)
        return len(calls) == 2

    monkeypatch.setattr(canonical, "store_batch", interrupted)
    from traces.cli import main
    assert main(["ingest", str(path), "--batch-lines", "2"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
    assert rows("SELECT status, n_stored FROM ingests") == [("failed", 2)]  # the first batch is committed
    monkeypatch.setattr(canonical, "store_batch", real)
    assert run(path).counts.stored == 4 and rows("SELECT count(*) FROM traces")[0][0] == 6


def test_deeply_nested_otel_is_quarantined_not_a_recursion_error(tmp_path):
    good = export(span("f1", "chat", {"gen_ai.prompt": "Hi?", "gen_ai.completion": "Hello."}))
    # an attribute value 5,000 kvlists deep (json.dumps would recurse too, so the text is built by hand)
    deep_text = ('{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "f2", "attributes": [{"key": "a", "value": '
                 + '{"kvlistValue": {"values": [{"key": "k", "value": ' * 5000 + '{"stringValue": "x"}'
                 + '}]}}' * 5000 + '}]}]}]}]}')
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(good) + "\n" + deep_text + "\n")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 1, 1)
    assert rows("SELECT reason FROM quarantine") == [("JSON nested too deeply to read (file line 2)",)]
    # the same depth in a chat JSONL line (DuckDB parses it) is quarantined too
    chat_path = tmp_path / "deep_chat.jsonl"
    chat_path.write_text(json.dumps(chat(1, "fine")) + "\n" + '{"messages": ' + "[" * 100000 + "]" * 100000 + "}\n")
    s = run(chat_path)
    assert (s.counts.stored, s.counts.quarantined) == (1, 1)


def test_raw_u2028_does_not_split_a_collector_export_line(tmp_path):
    text = "Line one\u2028line two\u2029end"
    first = export(span("g1", "chat", {"gen_ai.prompt": "Say it?", "gen_ai.completion": text}))
    second = export(span("g2", "chat", {"gen_ai.prompt": "Again?", "gen_ai.completion": "ok"}))
    path = tmp_path / "collector.jsonl"
    path.write_text(json.dumps(first, ensure_ascii=False) + "\n" + json.dumps(second, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")  # raw, not escaped
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 2, 0)
    assert rows("SELECT response FROM traces WHERE trace_id = 'g1'") == [(text,)]


def test_stale_running_rows_are_marked_failed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with store.connect() as con:
        con.execute("""INSERT INTO ingests (ingest_id, source_file, file_sha256, n_read, n_stored, n_duplicate,
                       n_quarantined, started_at, status, pid, host)
                       VALUES ('old', '/x.jsonl', 'abc', 0, 0, 0, 0, now(), 'running', ?, ?)""",
                    [dead.pid, __import__("socket").gethostname()])
        con.execute("""INSERT INTO ingests (ingest_id, source_file, file_sha256, n_read, n_stored, n_duplicate,
                       n_quarantined, started_at, status, pid, host)
                       VALUES ('alive', '/y.jsonl', 'def', 0, 0, 0, 0, now(), 'running', ?, ?)""",
                    [os.getpid(), __import__("socket").gethostname()])
    run(write_jsonl(tmp_path / "x.jsonl", [chat(1, "x")]))
    got = dict((i, (s, e)) for i, s, e in rows("SELECT ingest_id, status, error FROM ingests"))
    assert got["old"][0] == "failed" and f"process {dead.pid} stopped" in got["old"][1]
    assert got["alive"] == ("running", None)  # a live process's ingest is left alone


# ---------- 9. commit per batch: others get in between batches ----------

def test_each_batch_is_committed_and_the_database_released(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "x.jsonl", [chat(i, f"p {i}") for i in range(6)])
    db, seen, real = str(settings.db_path()), [], ingest._connect
    probe = "import duckdb,sys; c=duckdb.connect(sys.argv[1], read_only=True); " \
            "print(c.execute('SELECT count(*) FROM traces').fetchone()[0])"

    def connect_and_probe(cfg):
        if settings.db_path().exists():  # another process opens the file between two batches
            out = subprocess.run([sys.executable, "-c", probe, db], capture_output=True, text=True, timeout=60)
            seen.append(out.stdout.strip() or out.stderr.strip()[-200:])
        return real(cfg)

    monkeypatch.setattr(ingest, "_connect", connect_and_probe)
    run(path, batch_lines=2)
    assert seen == ["0", "2", "4"]  # batch 1 (with the file's `ingests` row), batch 2, batch 3 (with its `complete`)


def test_busy_message_says_ingest_releases_the_database_per_batch(capsys):
    def busy(_):
        raise store.StoreBusy("database is busy (held by process 4242): data/mend.duckdb.")
    assert cli_dispatch._run(busy, []) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "process 4242" in err and "after every batch" in err


# ---------- 10. timestamps ----------

def test_epoch_units_by_magnitude_and_iso_offsets(tmp_path):
    instant = "2024-11-08 08:00:00"
    shapes = [{"created": 1731052800}, {"created": 1731052800000}, {"created": 1731052800000000},
              {"created": 1731052800000000000}, {"created": 1731052800.0},
              {"timestamp": "2024-11-08T09:00:00+01:00"}, {"timestamp": "2024-11-08T03:00:00-0500"},
              {"timestamp": "2024-11-08T08:00:00Z"}, {"timestamp": "2024-11-08 08:00:00"},
              {"timestamp": 1731052800000}, {"timestamp": "1731052800000"}]
    records = []
    for i, extra in enumerate(shapes):
        r = chat(i, f"time {i}")
        r.pop("created")
        records.append({**r, **extra})
    s = run(write_jsonl(tmp_path / "t.jsonl", records))
    assert s.counts.stored == len(shapes)
    assert rows("SELECT DISTINCT ts::VARCHAR FROM traces") == [(instant,)]
    for v in (1731052800, 1731052800000, 1731052800000000, "1731052800000000000", "2024-11-08T10:00:00+02:00"):
        assert str(timestamps.parse(v)) == instant, v


def test_otel_start_time_in_milliseconds(tmp_path):
    path = tmp_path / "ms.json"
    path.write_text(json.dumps(export(span("h1", "chat", {"gen_ai.prompt": "Hi?", "gen_ai.completion": "Yo."},
                                           start="1731052800000"))))
    run(path)
    assert rows("SELECT ts::VARCHAR FROM traces") == [("2024-11-08 08:00:00",)]


# ---------- 12. stats: reasons with file and line; the lines of one file ----------

def test_stats_show_quarantine_file_and_lines_and_the_quarantine_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    bad = [json.dumps(chat(1, "ok"))] + ["{broken"] * 7 + ['{"messages": []}']
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(bad) + "\n")
    run(path)
    by_reason = stats.collect()["quarantine by reason"]
    assert (("invalid JSON", str(path), 7, [2, 3, 4, 5, 6]) in by_reason
            and ("field `messages` needs a prompt and a final assistant reply (no `choices` given)", str(path), 1, [9])
            in by_reason)
    assert stats.main([]) == 0
    out = capsys.readouterr().out
    assert "mixed.jsonl" in out and "2, 3, 4, 5, 6, ..." in out and "python -m traces quarantine FILE" in out
    from traces.cli import main
    assert main(["quarantine", "mixed.jsonl", "--reason", "final assistant reply"]) == 0
    out = capsys.readouterr().out
    assert '{"messages": []}' in out and "broken" not in out
    assert main(["quarantine", "other.jsonl"]) == 1


def test_otel_unflatten_handles_any_depth_of_keys():
    a = {"p.0.tool_calls.1.name": "b", "p.0.tool_calls.0.name": "a", "p.1.role": "user", "x": 1}
    assert otel.unflatten(a, "p") == [{"tool_calls": [{"name": "a"}, {"name": "b"}]}, {"role": "user"}]
