"""traces ingest: each format, each bad-input class, idempotence, reconciliation, scrubbing, the split."""
import gzip
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from traces import canonical, ingest, settings, store

FIX = Path(__file__).parent / "fixtures" / "traces"


def rows(sql, params=()):
    with store.connect(read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def run(path, **flags):
    cfg = settings.load("traces", flags or None)
    return ingest.ingest_paths([path], cfg)[0]


def reconciles(s):
    c = s.counts
    return c.read == c.stored + c.duplicate + c.quarantined + c.skipped


def test_openai_chat_log():
    s = run(FIX / "openai_chat.jsonl")
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (5, 5, 0)
    got = {r[0]: r[1:] for r in rows("SELECT trace_id, model, prompt, response, tool_calls, params, usage, "
                                     "metadata, feedback, ts, source_format FROM traces")}
    assert set(got) == {"chatcmpl-AZx81kQ2pLmN3", "chatcmpl-AZx81kQ2pLmN4", "chatcmpl-AZx81kQ2pLmN5",
                        "chatcmpl-local-0007", "chatcmpl-AZx81kQ2pLmN6"}
    model, prompt, response, _, params, usage, meta, feedback, ts, fmt = got["chatcmpl-AZx81kQ2pLmN3"]
    assert model == "gpt-4o-mini-2024-07-18" and fmt == "openai_chat"
    assert response.startswith("Revoke the leaked key")
    assert json.loads(params) == {"temperature": 0.2, "max_tokens": 300}
    assert json.loads(usage)["total_tokens"] == 89 and json.loads(feedback) == {"score": 1, "comment": "helpful"}
    assert json.loads(meta)["base_id"] == "b001" and str(ts) == "2024-11-08 08:00:00"
    # content given as a list of text parts: the prompt is their text
    assert got["chatcmpl-AZx81kQ2pLmN4"][1] == "Write a two-line status update about the outage\nwithout using any commas."
    # tool call only: response NULL, tool_calls kept, the request's tools kept
    _, prompt, response, tool_calls, params, *_ = got["chatcmpl-AZx81kQ2pLmN5"]
    assert response is None and json.loads(tool_calls)[0]["function"]["name"] == "get_weather"
    assert json.loads(params) == {"tool_choice": "auto"}
    # nested {"request", "response"} shape
    model, prompt, response, *_ = got["chatcmpl-local-0007"]
    assert model == "smollm2-135m-instruct" and prompt == "Describe a  sunrise   over the sea."
    # the prompt is the LAST user message
    assert got["chatcmpl-AZx81kQ2pLmN6"][1].startswith("401 Unauthorized")
    tools = rows("SELECT tools FROM traces WHERE trace_id = 'chatcmpl-AZx81kQ2pLmN5'")[0][0]
    assert json.loads(tools)[0]["function"]["name"] == "get_weather"


def test_messages_jsonl_last_assistant_is_the_response():
    s = run(FIX / "messages.jsonl")
    assert (s.counts.read, s.counts.stored) == (3, 3)
    r = rows("SELECT messages, prompt, response, source_format, trace_id FROM traces WHERE source_line = 1")[0]
    messages, prompt, response, fmt, trace_id = r
    assert [m["role"] for m in json.loads(messages)] == ["system", "user"]
    assert prompt == "What's the capital of France?" and response.startswith("Paris")
    assert fmt == "messages" and len(trace_id) == 64  # no id in the line: a content hash


def test_otel_genai_spans_every_convention():
    s = run(FIX / "otel_genai.json")
    assert s.format == "otel" and s.counts.skipped == 1  # the HTTP span is not a trace: read, skipped
    assert s.skipped == {"not a GenAI span (no gen_ai.*, llm.* or OpenInference attributes)": 1}
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (7, 5, 1)
    got = {r[0]: r[1:] for r in rows("SELECT trace_id, prompt, response, tool_calls, model, messages, metadata, "
                                     "usage, params FROM traces")}
    prompt, response, _, model, messages, meta, usage, params = got["a1b2c3d4e5f60001"]  # input/output.messages
    assert prompt == "Suggest one museum in Paris." and response.startswith("The Musee d'Orsay")
    assert model == "gpt-4o-mini-2024-07-18" and json.loads(messages)[0]["role"] == "system"
    assert json.loads(meta)["base_id"] == "b020" and json.loads(usage) == {"input_tokens": 25, "output_tokens": 12}
    assert json.loads(params) == {"temperature": 0.3}
    assert json.loads(got["a1b2c3d4e5f60002"][2])[0]["function"]["name"] == "get_weather"  # tool_call part
    assert got["a1b2c3d4e5f60003"][:2] == ("Why is the sky blue?", "Air scatters blue light more than red light.")
    assert got["a1b2c3d4e5f60004"][:2] == ("Name a prime number above 100.", "101 is prime.")  # gen_ai.prompt
    assert got["a1b2c3d4e5f60005"][:2] == ("Capital of Japan?", "Tokyo.")  # flattened gen_ai.prompt.N.*
    assert rows("SELECT source_line, reason FROM quarantine") == [
        (6, "span is an LLM call but has no prompt messages (is content capture on?)")]


def test_otel_json_lines_export_with_a_bad_line(tmp_path):
    doc = json.loads((FIX / "otel_genai.json").read_text())
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps(doc) + "\n{not json\n")
    s = run(path)
    assert s.counts.stored == 5 and s.counts.quarantined == 2
    reasons = [r[0] for r in rows("SELECT reason FROM quarantine")]
    assert any(r.startswith("invalid JSON") and r.endswith("(file line 2)") for r in reasons)


def test_parquet_with_the_store_columns(tmp_path):
    run(FIX / "openai_chat.jsonl")
    out = tmp_path / "export.parquet"
    with store.connect() as con:
        con.execute(f"COPY (SELECT * FROM traces) TO '{out}' (FORMAT parquet)")
        con.execute("DELETE FROM traces")
    s = run(out)
    assert s.format == "parquet" and (s.counts.read, s.counts.stored) == (5, 5)
    r = rows("SELECT prompt, split, source_format FROM traces WHERE trace_id = 'chatcmpl-AZx81kQ2pLmN5'")[0]
    assert r == ("What's the weather in Paris right now?", "seed", "parquet")


def test_parquet_without_messages_is_quarantined(tmp_path):
    out = tmp_path / "bad.parquet"
    duckdb.sql(f"COPY (SELECT 'x' AS prompt, 'y' AS response) TO '{out}' (FORMAT parquet)")
    s = run(out)
    assert (s.counts.read, s.counts.quarantined) == (1, 1)
    assert rows("SELECT reason FROM quarantine")[0][0] == "parquet file has no column `messages`"


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "log.jsonl.gz"
    path.write_bytes(gzip.compress((FIX / "openai_chat.jsonl").read_bytes()))
    s = run(path)
    assert (s.counts.read, s.counts.stored) == (5, 5)


BAD = {
    2: "invalid JSON",
    3: "missing field `messages`",
    4: "field `messages` must be an array, got OBJECT",
    5: "field `messages[].role` must be a string in every message",
    6: "field `choices[0].message.content` must be a string or a list of parts, got UBIGINT",
    7: "empty response: no content and no tool_calls",
    8: "empty response: `choices` is empty",
    9: "field `messages` has no user message with text",
    10: "field `metadata` must be an object, got ARRAY",
    11: "line is not a JSON object",
    12: "field `messages` needs a prompt and a final assistant reply (no `choices` given)",
}


def test_each_bad_input_class_is_quarantined_with_line_and_reason():
    s = run(FIX / "bad_lines.jsonl")
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (12, 1, 11)
    got = dict(rows("SELECT source_line, reason FROM quarantine"))
    assert got == BAD
    files = {r[0] for r in rows("SELECT source_file FROM quarantine")}
    assert files == {str((FIX / "bad_lines.jsonl").resolve())}
    raw = rows("SELECT raw FROM quarantine WHERE source_line = 3")[0][0]
    assert json.loads(raw)["id"] == "no-messages"  # the line as read, newline stripped


def test_blank_lines_crlf_and_bom_are_not_errors(tmp_path):
    lines = (FIX / "messages.jsonl").read_text().splitlines()
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join([lines[0], "", lines[1]]) + "\r\n\r\n").encode())
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (2, 2, 0)
    assert sorted(r[0] for r in rows("SELECT source_line FROM traces")) == [1, 3]


def test_reingest_adds_nothing_and_reconciles():
    first = run(FIX / "bad_lines.jsonl")
    second = run(FIX / "bad_lines.jsonl")
    assert reconciles(first) and reconciles(second)
    assert (second.counts.stored, second.counts.duplicate, second.counts.quarantined) == (0, 1, 11)
    assert rows("SELECT count(*) FROM traces")[0][0] == 1
    assert rows("SELECT count(*) FROM quarantine")[0][0] == 11  # quarantined lines are not repeated
    ingests = rows("SELECT n_read, n_stored, n_duplicate, n_quarantined, n_skipped, status FROM ingests "
                   "ORDER BY started_at")
    assert ingests == [(12, 1, 0, 11, 0, "complete"), (12, 0, 1, 11, 0, "complete")]


def test_duplicates_within_one_file(tmp_path):
    line = (FIX / "openai_chat.jsonl").read_text().splitlines()[0]
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join([line, line, line]) + "\n")
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.duplicate) == (3, 1, 2)


def test_reconcile_invariant_matches_the_tables(tmp_path):
    for f in ("openai_chat.jsonl", "messages.jsonl", "bad_lines.jsonl", "otel_genai.json"):
        s = run(FIX / f)
        assert reconciles(s)
        n_traces = rows("SELECT count(*) FROM traces WHERE ingest_id = ?", [s.ingest_id])[0][0]
        n_quar = rows("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [s.ingest_id])[0][0]
        assert (n_traces, n_quar) == (s.counts.stored, s.counts.quarantined)


def test_secrets_are_scrubbed_everywhere():
    run(FIX / "openai_chat.jsonl")
    text = " ".join(str(v) for r in rows("SELECT * FROM traces") for v in r)
    for secret in ("sk-proj-Xq3vB7nT9kLm2Pz8Rw4Ys6Ua1Cd5Ef0Gh", "AKIAIOSFODNN7EXAMPLE", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in text
    assert "Bearer [REDACTED_SECRET]" in text and "[REDACTED_SECRET]" in text


def test_secrets_in_quarantined_lines_are_scrubbed_too(tmp_path):
    path = tmp_path / "leak.jsonl"
    path.write_text('{"messages": "token ghp_abcdefghijklmnopqrstuvwxyz0123456789 here"}\n')
    run(path)
    raw = rows("SELECT raw FROM quarantine")[0][0]
    assert "ghp_" not in raw and "[REDACTED_SECRET]" in raw


def test_scrubbing_can_be_turned_off():
    run(FIX / "openai_chat.jsonl", scrub_secrets=False)
    assert "sk-proj-Xq3vB7nT9kLm2Pz8Rw4Ys6Ua1Cd5Ef0Gh" in rows(
        "SELECT prompt FROM traces WHERE trace_id = 'chatcmpl-AZx81kQ2pLmN3'")[0][0]


def test_pii_redaction_behind_a_setting(tmp_path):
    path = tmp_path / "pii.jsonl"
    msg = "Mail jane.doe@example.com or call +1 415-555-0134 about order 12345."
    path.write_text(json.dumps({"messages": [{"role": "user", "content": msg},
                                             {"role": "assistant", "content": "Will do: jane.doe@example.com"}]}) + "\n")
    run(path)
    assert rows("SELECT prompt FROM traces")[0][0] == msg  # off by default
    with store.connect() as con:
        con.execute("DELETE FROM traces")
    run(path, redact_pii=True)
    prompt, response = rows("SELECT prompt, response FROM traces")[0]
    assert prompt == "Mail [REDACTED_EMAIL] or call [REDACTED_PHONE] about order 12345."
    assert response == "Will do: [REDACTED_EMAIL]"


def _chat_line(i, prompt, meta=None):
    rec = {"id": f"x-{i}", "messages": [{"role": "user", "content": prompt}],
           "choices": [{"message": {"role": "assistant", "content": f"answer {i}"}}]}
    if meta:
        rec["metadata"] = meta
    return json.dumps(rec)


def test_split_is_deterministic_across_files(tmp_path):
    prompts = [f"Question number {i} about the weather?" for i in range(60)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(_chat_line(i, p) for i, p in enumerate(prompts)))
    # the same prompts again in another file, with other ids, case and spacing
    b.write_text("\n".join(_chat_line(100 + i, "  " + p.upper().replace(" ", "   ")) for i, p in enumerate(prompts)))
    run(a)
    run(b, holdout_fraction=0.2)
    pairs = rows("SELECT x.split, y.split FROM traces x JOIN traces y ON x.group_key = y.group_key "
                 "AND x.trace_id < y.trace_id")
    assert len(pairs) == 60 and all(p == q for p, q in pairs)
    splits = dict(rows("SELECT group_key, split FROM traces"))
    assert {k: canonical.split_for(k, 0.2) for k in splits} == splits  # the SQL and the Python rule agree
    assert 0 < sum(s == "holdout" for s in splits.values()) < 60


def test_group_key_from_metadata(tmp_path):
    path = tmp_path / "g.jsonl"
    path.write_text("\n".join(_chat_line(i, f"different prompt {i}", {"base_id": "b017"}) for i in range(20)))
    run(path)
    assert rows("SELECT DISTINCT group_key, split FROM traces") == [("b017", canonical.split_for("b017", 0.2))]
    # another setting names another field; a trace without it falls back to its prompt
    with store.connect() as con:
        con.execute("DELETE FROM traces")
    run(path, group_key="tenant")
    assert rows("SELECT count(DISTINCT group_key) FROM traces")[0][0] == 20


def test_holdout_fraction_extremes(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(_chat_line(i, f"p {i}") for i in range(30)))
    run(path, holdout_fraction=1.0)
    assert rows("SELECT DISTINCT split FROM traces") == [("holdout",)]


def test_interrupt_mid_file_leaves_no_half_batch(tmp_path, monkeypatch):
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(_chat_line(i, f"prompt {i}") for i in range(10)) + "\n")
    real, calls = canonical.store_batch, []

    def flaky(con, *a, **k):
        calls.append(1)
        if len(calls) == 2:  # inside the second batch's transaction, after its rows were validated
            con.execute("INSERT INTO traces SELECT * REPLACE ('partial' AS trace_id) FROM traces LIMIT 1")
            raise KeyboardInterrupt
        return real(con, *a, **k)

    monkeypatch.setattr(canonical, "store_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(path, batch_lines=4)
    stored = {r[0] for r in rows("SELECT trace_id FROM traces")}
    assert "partial" not in stored and len(stored) in (0, 4)
    assert rows("SELECT status FROM ingests") == [("failed",)]
    monkeypatch.setattr(canonical, "store_batch", real)
    s = run(path, batch_lines=4)  # running again resumes: nothing twice, nothing lost
    assert s.counts.stored == 10 - len(stored) and rows("SELECT count(*) FROM traces")[0][0] == 10


def test_inbox_skips_files_already_ingested(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    shutil.copy(FIX / "messages.jsonl", inbox / "day1.jsonl")
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    first = ingest.ingest_inbox()
    assert [s.status for s in first] == ["complete"]
    shutil.copy(FIX / "openai_chat.jsonl", inbox / "day2.jsonl")
    second = ingest.ingest_inbox()
    assert sorted((Path(s.path).name, s.status) for s in second) == [("day1.jsonl", "skipped"),
                                                                    ("day2.jsonl", "complete")]
    assert rows("SELECT count(*) FROM traces")[0][0] == 8


def test_cli_prints_a_summary_table(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert ingest.main([str(FIX / "bad_lines.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "bad_lines.jsonl" in out and "quarantined" in out


def test_missing_file_is_a_clear_error():
    from traces.cli import main
    assert main(["ingest", "/nonexistent/file.jsonl"]) == 2


def test_invalid_utf8_does_not_fail_the_batch(tmp_path):
    path = tmp_path / "latin1.jsonl"
    good = _chat_line(1, "plain prompt").encode()
    bad = _chat_line(2, "caf@ au lait").encode().replace(b"@", b"\xe9")  # a Latin-1 byte: not UTF-8
    path.write_bytes(good + b"\n" + bad + b"\n")
    s = run(path)
    assert (s.counts.read, s.counts.stored) == (2, 2)
    assert rows("SELECT prompt FROM traces WHERE trace_id = 'x-2'")[0][0] == "caf\ufffd au lait"
