"""simonw/llm's `llm logs --json` (issue 26): one trace per logged response, a conversation's earlier turns as its
messages; a record that breaks the shape is quarantined alone with the field at fault, never a traceback.

The records below have the keys `llm logs --json` writes (llm 0.26: the `responses` row joined with its
conversation, `*_json` columns decoded, fragments, tools, tool calls and results, attachments added), as a JSON
array with indent 2 (what `llm logs --json` prints) or one per line (`llm logs --json | jq -c '.[]'`).
"""
import json

from builders.ingest_files import rows, run_as

CONV = "01jx8m3v7k2c9d5e4f6g7h8j9k"
OPENAI_CONV = "01jx8p0a1b2c3d4e5f6g7h8j9m"


def record(rid, prompt, response, *, conversation=CONV, when="2025-06-04T10:15:02.120000", system=None,
           prompt_json=None, model="claude-3.5-haiku", **extra):
    return {"id": rid, "model": model, "resolved_model": None, "prompt": prompt, "system": system,
            "prompt_json": prompt_json, "options_json": {"temperature": 0.2} if model.startswith("claude") else {},
            "response": response, "response_json": {"id": f"msg_{rid[-4:]}", "stop_reason": "end_turn"},
            "conversation_id": conversation, "duration_ms": 812, "datetime_utc": when,
            "input_tokens": 14, "output_tokens": 9, "token_details": None, "conversation_name": "Paris trip",
            "conversation_model": model, "schema_json": None, "prompt_fragments": [], "system_fragments": [],
            "tools": [], "tool_calls": [], "tool_results": [], "attachments": [], **extra}


def conversation():
    """Three turns of a chat with a plugin that logs no prompt_json, and an OpenAI call that logs the request."""
    return [
        record("01jx8m3v7k2c9d5e4f6g7h8j01", "Capital of France?", "Paris.", system="Be brief."),
        record("01jx8m3v7k2c9d5e4f6g7h8j02", "And its population?", "About 2.1 million.", system="Be brief.",
               when="2025-06-04T10:15:09.500000"),
        record("01jx8m3v7k2c9d5e4f6g7h8j03", "Largest museum there?", "The Louvre.", system="Be brief.",
               when="2025-06-04T10:16:00.000000"),
        record("01jx8p0a1b2c3d4e5f6g7h8j04", "Weather in Paris?", None, conversation=OPENAI_CONV, model="gpt-4o-mini",
               resolved_model="gpt-4o-mini-2024-07-18", when="2025-06-04T11:00:00.000000",
               prompt_json={"messages": [{"role": "system", "content": "You are a travel agent."},
                                         {"role": "user", "content": "Weather in Paris?"}]},
               tools=[{"id": 1, "hash": "a1", "name": "get_weather", "description": "Current weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
               tool_calls=[{"id": 1, "tool_id": 1, "name": "get_weather", "arguments": {"city": "Paris"},
                            "tool_call_id": "call_Qx1"}],
               attachments=[{"id": "att1", "type": "image/jpeg", "path": "/tmp/eiffel.jpg", "url": None,
                             "content_length": None}]),
    ]


def test_llm_logs_json_array_one_trace_per_response_with_earlier_turns(tmp_path):
    recs = conversation()
    path = tmp_path / "llm-logs.json"
    s = run_as(path, json.dumps([recs[2], recs[3], recs[0], recs[1]], indent=2), "llm_logs")  # in any order
    assert (s.status, s.counts.read, s.counts.stored, s.counts.quarantined, s.counts.skipped) == \
        ("complete", 4, 4, 0, 0)
    got = {r[0]: r[1:] for r in rows("""SELECT trace_id, source_format, ts::VARCHAR, model, messages, prompt,
                                               response, tool_calls, tools, params, usage, metadata FROM traces""")}
    fmt, ts, model, messages, prompt, response, _, _, params, usage, meta = got["01jx8m3v7k2c9d5e4f6g7h8j03"]
    assert (fmt, ts, model, prompt, response) == ("llm_logs", "2025-06-04 10:16:00", "claude-3.5-haiku",
                                                  "Largest museum there?", "The Louvre.")
    assert json.loads(messages) == [  # rebuilt from the earlier records of its conversation
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And its population?"}, {"role": "assistant", "content": "About 2.1 million."},
        {"role": "user", "content": "Largest museum there?"}]
    assert json.loads(got["01jx8m3v7k2c9d5e4f6g7h8j01"][3]) == [{"role": "system", "content": "Be brief."},
                                                              {"role": "user", "content": "Capital of France?"}]
    assert json.loads(params) == {"temperature": 0.2} and json.loads(usage) == {"input_tokens": 14, "output_tokens": 9}
    assert json.loads(meta) == {"conversation_id": CONV, "conversation_name": "Paris trip", "duration_ms": 812,
                                "requested_model": "claude-3.5-haiku"}
    # the OpenAI call: its logged request is the messages, its answer a tool call, the attachment noted
    _, _, model, messages, prompt, response, calls, tools, params, _, meta = got["01jx8p0a1b2c3d4e5f6g7h8j04"]
    assert (model, prompt, response, params) == ("gpt-4o-mini-2024-07-18", "Weather in Paris?", None, None)
    assert json.loads(messages)[0] == {"role": "system", "content": "You are a travel agent."}
    assert json.loads(calls) == [{"id": "call_Qx1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert json.loads(tools) == [{"type": "function", "function": {
        "name": "get_weather", "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert json.loads(meta)["attachments"] == [{"type": "image/jpeg", "path": "/tmp/eiffel.jpg", "url": None}]


def test_each_malformed_record_is_quarantined_alone_with_its_reason(tmp_path):
    good = conversation()[0]

    def bad(i, **changes):
        return json.dumps({**good, "id": f"bad{i}", **changes})
    lines = [json.dumps(good),
             json.dumps({k: v for k, v in good.items() if k != "datetime_utc"}),  # missing: not this format's record
             bad(2, prompt=42), bad(3, options_json=["temperature", 0.2]), bad(4, input_tokens="14"),
             bad(6, prompt_json={"messages": {"role": "user", "content": "hi"}}),
             bad(7, tool_calls={"name": "get_weather"}), bad(8, id={"ulid": "01jx"}), bad(9, conversation_id=7),
             bad(10, response=None),  # no answer: the common check's reason
             json.dumps("a string, not a record")]
    lines.insert(5, '{"id": "cut", "prompt": "Hi?", "response": "Hel')  # the export was cut mid-record
    path = tmp_path / "llm-logs.jsonl"
    s = run_as(path, "\n".join(lines) + "\n", "llm_logs")
    assert (s.status, s.counts.read, s.counts.stored, s.counts.quarantined) == ("complete", 12, 1, 11)
    assert rows("SELECT source_line, reason FROM quarantine ORDER BY 1") == [
        (2, "malformed record: not a `llm logs --json` record: it needs `conversation_id`, `datetime_utc`, "
            "`response`"),
        (3, "malformed record: `prompt` must be a string, got number"),
        (4, "malformed record: `options_json` must be an object, got array"),
        (5, "malformed record: `input_tokens` must be a number, got string"),
        (6, "invalid JSON"),
        (7, "malformed record: `prompt_json.messages` must be an array, got object"),
        (8, "malformed record: `tool_calls` must be an array, got object"),
        (9, "malformed record: `id` must be a string, got object"),
        (10, "malformed record: `conversation_id` must be a string, got number"),
        (11, "empty response: no content and no tool_calls"),
        (12, "record is not a JSON object")]
    assert rows("SELECT raw FROM quarantine WHERE source_line = 3")[0][0] == lines[2]  # the line as it was


def test_secrets_pii_and_a_conversation_as_the_split_group(tmp_path):
    recs = conversation()[:3]
    recs[1]["prompt"] = "My key is sk-proj-abcdefghijklmnopqrstuvwx1234, mail me at ada@example.com"
    path = tmp_path / "llm-logs.json"
    s = run_as(path, json.dumps(recs), "llm_logs", redact_pii=True, group_key="conversation_id")
    assert s.counts.stored == 3
    prompts = [r[0] for r in rows("SELECT prompt FROM traces ORDER BY ts")]
    assert prompts[1] == "My key is [REDACTED_SECRET], mail me at [REDACTED_EMAIL]"
    assert "sk-proj" not in rows("SELECT messages FROM traces ORDER BY ts")[2][0]  # an earlier turn, too
    assert rows("SELECT DISTINCT group_key, count(DISTINCT split) FROM traces GROUP BY 1") == [(CONV, 1)]
