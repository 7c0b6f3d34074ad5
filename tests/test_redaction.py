"""Issue 25, findings 3 and 4: PII redaction that breaks no JSON and reaches every column, and secrets in the places
that still kept them in clear. Every input is written here; every check greps the stored rows and the DuckDB file."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
from test_ingest_hardening import chat, export, rows, run, span, write_jsonl

from traces import settings, store
from traces.scrub import scrub_text, secrets_sql

EMAIL, PHONE = "jane.doe@example.com", "415-555-0134"


def stored_text() -> str:
    """Every value of every row of traces, quarantine and ingests, as one string."""
    return " ".join(str(v) for table in ("traces", "quarantine", "ingests") for r in rows(f"SELECT * FROM {table}")
                    for v in r)


def db_holds(*needles: str) -> list[str]:
    """The needles found in the bytes of the database file (checkpointed, so nothing waits in the WAL)."""
    with store.connect() as con:
        con.execute("CHECKPOINT")
    blob = settings.db_path().read_bytes()
    return [n for n in needles if n.encode() in blob]


def genai_span(span_id, prompt, answer="ok", **extra):
    return span(span_id, "chat gpt-4o", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                                         "gen_ai.prompt": prompt, "gen_ai.completion": answer, **extra})


# ---------- 3. --redact-pii ----------

def test_pii_after_an_escape_leaves_valid_json(tmp_path):
    """OTel rows are ASCII-escaped JSON: Chinese text right before an address (\\u7cfb), an en dash right before a
    number (\\u2013), a newline before an address in a chat log (\\n). The marker must not eat the escape."""
    zh = f"请联系{EMAIL}，电话–{PHONE}"
    spans = tmp_path / "spans.json"
    spans.write_text(json.dumps(export(genai_span("a1", zh))))
    chat_log = write_jsonl(tmp_path / "chat.jsonl", [chat(1, f"Contact:\n{EMAIL}\n+1 {PHONE}")])
    for path, prompt in ((spans, "请联系[REDACTED_EMAIL]，电话–[REDACTED_PHONE]"),
                         (chat_log, "Contact:\n[REDACTED_EMAIL]\n[REDACTED_PHONE]")):
        s = run(path, redact_pii=True)
        assert (s.status, s.counts.stored, s.counts.quarantined) == ("complete", 1, 0), s.error
        got, messages = rows("SELECT prompt, messages FROM traces WHERE ingest_id = ?", [s.ingest_id])[0]
        assert got == prompt and json.loads(messages)[-1]["content"] == prompt
    assert db_holds(EMAIL, PHONE) == []


def test_pii_reaches_no_column_group_key_metadata_feedback_or_quarantine(tmp_path):
    path = write_jsonl(tmp_path / "pii.jsonl", [
        chat(1, f"Mail {EMAIL} or call +1 {PHONE}", metadata={"user": EMAIL, "phone": PHONE},
             feedback={"comment": f"reach me at {EMAIL}"}, user=EMAIL),
        chat(2, "second request", metadata={"base_id": f"ticket {EMAIL}"}),
        {"messages": f"call {PHONE} or mail {EMAIL}"},  # bad: quarantined with its raw line
    ])
    run(path)
    split_without_flag = rows("SELECT trace_id, split FROM traces ORDER BY 1")
    with store.connect() as con:
        for table in ("traces", "trace_hashes", "quarantine", "ingests"):
            con.execute(f"DELETE FROM {table}")
    s = run(path, redact_pii=True)
    assert (s.counts.stored, s.counts.quarantined) == (2, 1)
    text = stored_text()
    assert EMAIL not in text and PHONE not in text
    keys = [r[0] for r in rows("SELECT group_key FROM traces ORDER BY trace_id")]
    assert keys == ["mail [REDACTED_EMAIL] or call [REDACTED_PHONE]", "ticket [REDACTED_EMAIL]"]
    # the split is decided on the key as logged: the same with or without the flag
    assert rows("SELECT trace_id, split FROM traces ORDER BY 1") == split_without_flag
    assert "[REDACTED_EMAIL]" in rows("SELECT raw FROM quarantine")[0][0]
    assert db_holds(EMAIL, PHONE) == []


def test_pii_after_literal_backslashes_is_redacted_whole(tmp_path):
    """A UNC path (two literal backslashes) or a Windows path before an address. In JSON text each literal backslash
    is an escaped one, whose second half the escape rule took with the address's first letter, which stayed in
    clear; in a plain-text column (the prompt) a lone backslash was taken for an escape the same way; an address
    starting with `u` was missed whole (taken for a `\\u` escape)."""
    texts = [f"share \\\\{EMAIL}", f"C:\\{EMAIL}", "home C:\\ursula.k@example.com", f"C:\\\\\\{EMAIL} \\n"]
    path = write_jsonl(tmp_path / "paths.jsonl", [chat(i, text) for i, text in enumerate(texts)])
    s = run(path, redact_pii=True)
    assert (s.counts.stored, s.counts.quarantined) == (4, 0)
    got = rows("SELECT prompt, messages FROM traces ORDER BY source_line")
    expected = [text.replace(EMAIL, "[REDACTED_EMAIL]").replace("ursula.k@example.com", "[REDACTED_EMAIL]")
                for text in texts]
    assert [prompt for prompt, _ in got] == expected
    assert [json.loads(messages)[-1]["content"] for _, messages in got] == expected  # the JSON column, still JSON
    assert db_holds(EMAIL, "ursula.k@") == []


def test_two_addresses_separated_by_backslashes_are_both_redacted(tmp_path):
    """`a@x.org\\b@y.org` (one or more literal backslashes between two addresses, or two numbers). In JSON text the
    run of escaped backslashes needs the character before it as its start, and that was the first address's last
    letter, already taken by the first match: the second address stayed in clear."""
    other, phone = "bob.k@example.org", "212-555-0199"
    texts = [f"{EMAIL}\\{other}", f"{EMAIL}\\\\{other}", f"{PHONE}\\{phone}", f"{EMAIL}\\{other}\\{EMAIL}",
             f"{EMAIL}\\{phone}"]
    expected = [t.replace(EMAIL, "[REDACTED_EMAIL]").replace(other, "[REDACTED_EMAIL]")
                .replace(PHONE, "[REDACTED_PHONE]").replace(phone, "[REDACTED_PHONE]") for t in texts]
    assert [json.loads(scrub_text(json.dumps(t), secrets=False, pii=True)) for t in texts] == expected
    path = write_jsonl(tmp_path / "two.jsonl", [chat(i, text) for i, text in enumerate(texts)])
    assert run(path, redact_pii=True).counts.stored == len(texts)
    got = rows("SELECT prompt, messages FROM traces ORDER BY source_line")
    assert [prompt for prompt, _ in got] == expected
    assert [json.loads(messages)[-1]["content"] for _, messages in got] == expected
    assert db_holds(EMAIL, other, PHONE, phone) == []


def test_pii_patterns_keep_what_surrounds_them():
    text = f'x\\u7cfb{EMAIL} \\u2013{PHONE} "\\n{EMAIL}"'
    assert scrub_text(text, secrets=False, pii=True) == \
        'x\\u7cfb[REDACTED_EMAIL] \\u2013[REDACTED_PHONE] "\\n[REDACTED_EMAIL]"'
    assert scrub_text("order 12345 6789, build 2024.11.08", secrets=False, pii=True) == \
        "order 12345 6789, build 2024.11.08"


# ---------- 4. secrets that were still stored in clear ----------

KEY = "sk-proj-Zq9vB7nT9kLm2Pz8Rw4Ys6Ua1Cd5Ef0GhJk"
TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"


def test_a_crash_that_quotes_a_key_stores_and_prints_it_scrubbed(tmp_path, capsys):
    """A key logged in an OTel integer field made int() fail with the key in its message: the error went to
    `ingests.error` and, as a traceback, to the terminal."""
    from traces.cli import main
    bad = span("k1", "chat", {"gen_ai.operation.name": "chat", "gen_ai.prompt": "hi", "gen_ai.completion": "ok"})
    bad["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": KEY}})
    path = tmp_path / "spans.json"
    path.write_text(json.dumps(export(bad)))
    main(["ingest", str(path)])
    out = capsys.readouterr()
    assert KEY not in out.out + out.err
    assert KEY not in stored_text() and db_holds(KEY) == []


def test_store_layout_parquet_id_model_and_usage_are_scrubbed(tmp_path):
    path = tmp_path / "store.parquet"
    pq.write_table(pa.table({
        "trace_id": [f"run-{KEY}"], "model": [f"ft:{TOKEN}"], "usage": [json.dumps({"note": f"Bearer {KEY}"})],
        "messages": [json.dumps([{"role": "user", "content": "hi"}])], "response": ["hello"]}), path)
    s = run(path)
    assert s.counts.stored == 1
    assert KEY not in stored_text() and TOKEN not in stored_text()
    assert db_holds(KEY, TOKEN) == []


def test_url_password_without_user_and_upper_case_bearer():
    cases = {"REDIS_URL=redis://:Sup3r-pw@cache:6379/0": "REDIS_URL=redis://:[REDACTED_SECRET]@cache:6379/0",
             f"AUTHORIZATION: BEARER {TOKEN[4:]}abc": "AUTHORIZATION: BEARER [REDACTED_SECRET]"}
    with store.connect() as con:
        for line, expected in cases.items():  # the Python rules, and the SQL ones ingest runs
            assert scrub_text(line) == expected
            assert con.execute(f"SELECT {secrets_sql('t')} FROM (SELECT ? AS t)", [line]).fetchone()[0] == expected


def test_teacher_url_credentials_are_neither_stored_nor_printed(monkeypatch, capsys):
    from evals.client import Call, Client
    from traces import config_cmd
    url = "https://mend:Sup3r-pw@teacher.example.com/v1"
    client = Client(url, "m", allow_remote=True)
    client._store(Call("h1", "ok", {"choices": [{"message": {"content": "ok"}}]}), {"messages": []})
    assert rows("SELECT endpoint FROM llm_calls") == [("https://mend:[REDACTED_SECRET]@teacher.example.com/v1",)]
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", url)
    monkeypatch.setenv("COLUMNS", "200")
    assert config_cmd.main(["--stage", "curate"]) == 0
    out = capsys.readouterr().out
    assert "Sup3r-pw" not in out and "teacher.example.com" in out
