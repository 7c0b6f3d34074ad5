"""Arize Phoenix span JSON (issue 25): its REST API's answer and its older one-span-per-line JSON, read as
OpenInference spans; a malformed span is quarantined alone with its file and line.

The spans below have the shape Phoenix gives them: `GET /v1/projects/{project}/spans` answers
`{"data": [Span, ...], "next_cursor": ...}`, a Span being `id, name, context {trace_id, span_id}, span_kind,
parent_id, start_time, end_time, status_code, status_message, attributes, events`, its attributes flattened to
dotted keys without `openinference.span.kind` (moved to `span_kind`); phoenix.trace.span_json_encoder writes the
same fields with nested attributes, one span per line.
"""
import json

from builders.ingest_files import rows, run, run_as

TRACE = "6c80880dbeb609e2ed41e06a6397a0dd"


def rest_span(span_id, kind, attributes, start="2025-06-04T10:15:02.120000+00:00", name="ChatCompletion"):
    return {"id": f"U3BhbjoxM{span_id[-1]}", "name": name, "context": {"trace_id": TRACE, "span_id": span_id},
            "span_kind": kind, "parent_id": "7eb5df0046c77cd2", "start_time": start,
            "end_time": "2025-06-04T10:15:03.480000+00:00", "status_code": "OK", "status_message": "",
            "attributes": attributes, "events": []}


WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_CALL = {  # an LLM span whose answer is a tool call (openinference-instrumentation-openai's attributes)
    "llm.system": "openai", "llm.provider": "openai", "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.invocation_parameters": json.dumps({"temperature": 0.2, "max_tokens": 256}),
    "llm.input_messages.0.message.role": "system", "llm.input_messages.0.message.content": "You are a travel agent.",
    "llm.input_messages.1.message.role": "user", "llm.input_messages.1.message.content": "Weather in Paris?",
    "llm.output_messages.0.message.role": "assistant",
    "llm.output_messages.0.message.tool_calls.0.tool_call.id": "call_Qx1",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.name": "get_weather",
    "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments": '{"city": "Paris"}',
    "llm.tools.0.tool.json_schema": json.dumps(WEATHER_TOOL),
    "llm.token_count.prompt": 52, "llm.token_count.completion": 17, "llm.token_count.total": 69,
    "input.mime_type": "application/json", "output.mime_type": "application/json",
    "session.id": "sess-42", "metadata": json.dumps({"base_id": "b7"}),
}
ANSWER = {"llm.model_name": "gpt-4o-mini-2024-07-18",
          "llm.input_messages.0.message.role": "user", "llm.input_messages.0.message.content": "Capital of France?",
          "llm.output_messages.0.message.role": "assistant",
          "llm.output_messages.0.message.content": "Paris.", "llm.token_count.prompt": 9}
CHAIN = {"input.value": "Weather in Paris?", "output.value": "Sunny, 24 degrees."}


def opening_line(text: str, span_id: str) -> int:
    """The line where the pretty-printed span with this id opens (`{`, then id, name, context, trace_id, span_id)."""
    return text[:text.index(f'"span_id": "{span_id}"')].count("\n") + 1 - 5


def test_rest_api_answer_is_read_as_openinference_spans(tmp_path):
    page = {"data": [rest_span("d9bdedf0df0b7208", "LLM", TOOL_CALL), rest_span("a1b2c3d4e5f6a7b8", "CHAIN", CHAIN,
                                                                                  name="agent"),
                     rest_span("0f0e0d0c0b0a0908", "LLM", ANSWER, start="2025-06-04T12:15:02+02:00")],
            "next_cursor": None}
    path = tmp_path / "spans.json"
    s = run_as(path, json.dumps(page, indent=2), "phoenix")
    assert (s.status, s.counts.read, s.counts.stored, s.counts.skipped, s.counts.quarantined) == \
        ("complete", 3, 2, 1, 0)
    assert dict(s.skipped) == {"OpenInference CHAIN span (not an LLM call)": 1}
    got = {r[0]: r[1:] for r in rows("""SELECT trace_id, source_format, source_line, ts::VARCHAR, model, messages,
                                               prompt, response, tool_calls, tools, params, usage, metadata
                                        FROM traces""")}
    fmt, line, ts, model, messages, prompt, response, tool_calls, tools, params, usage, metadata = \
        got["d9bdedf0df0b7208"]
    assert (fmt, line, ts, model) == ("phoenix", 3, "2025-06-04 10:15:02.12", "gpt-4o-mini-2024-07-18")
    assert json.loads(messages) == [{"role": "system", "content": "You are a travel agent."},
                                    {"role": "user", "content": "Weather in Paris?"}]
    assert (prompt, response) == ("Weather in Paris?", None)
    assert json.loads(tool_calls) == [{"id": "call_Qx1", "type": "function",
                                       "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    assert json.loads(tools) == [WEATHER_TOOL]
    assert json.loads(params) == {"temperature": 0.2, "max_tokens": 256}
    assert json.loads(usage) == {"input_tokens": 52, "output_tokens": 17}
    meta = json.loads(metadata)
    assert (meta["otel_trace_id"], meta["span_name"], meta["provider"], meta["session.id"], meta["base_id"]) == \
        (TRACE, "ChatCompletion", "openai", "sess-42", "b7")
    # the second LLM span: its own line, its offset time in UTC
    assert got["0f0e0d0c0b0a0908"][1:3] == (opening_line(path.read_text(), "0f0e0d0c0b0a0908"), "2025-06-04 10:15:02")
    assert got["0f0e0d0c0b0a0908"][6] == "Paris."


def legacy_span(span_id, content, answer):
    """phoenix.trace.span_json_encoder's shape: the attributes nested, `conversation` beside them."""
    span = rest_span(span_id, "LLM", {"openinference": {"span": {"kind": "LLM"}}, "llm": {
        "model_name": "gpt-4o-mini", "token_count": {"prompt": 11, "completion": 3},
        "input_messages": [{"message": {"role": "user", "content": content}}],
        "output_messages": [{"message": {"role": "assistant", "content": answer}}]}})
    del span["id"]
    return {**span, "conversation": None}


def test_one_span_per_line_nested_attributes_and_each_bad_span_quarantined_alone(tmp_path):
    bad_id = legacy_span("b000000000000002", "Hi again?", "Hello again.")
    bad_id["context"]["span_id"] = 12345  # a number: the span id must be a string
    lines = [json.dumps(legacy_span("b000000000000001", "Hi?", "Hello.")), json.dumps(bad_id),
             json.dumps(legacy_span("b000000000000003", "Cut?", "Cut."))[:-9],  # the export was cut mid-span
             json.dumps({"messages": [{"role": "user", "content": "not a span"}]}),
             json.dumps(legacy_span("b000000000000005", "Last?", "Last."))]
    path = tmp_path / "spans.jsonl"
    path.write_text("\n".join(lines) + "\n")
    s = run(path)
    assert (s.status, s.counts.read, s.counts.stored, s.counts.quarantined) == ("complete", 5, 2, 3)
    assert rows("SELECT trace_id, source_line, prompt, response FROM traces ORDER BY 2") == [
        ("b000000000000001", 1, "Hi?", "Hello."), ("b000000000000005", 5, "Last?", "Last.")]
    assert rows("SELECT source_file, source_line, reason FROM quarantine ORDER BY 2") == [
        (str(path), 2, "malformed span: `context.span_id` must be a string, got number"),
        (str(path), 3, "invalid JSON"),
        (str(path), 4, "malformed span: not a Phoenix span: no `context` object with a `span_id`")]
    assert rows("SELECT raw FROM quarantine WHERE source_line = 4")[0][0] == lines[3]  # the line as it was


def test_a_broken_span_in_a_pretty_printed_answer_takes_no_other_along(tmp_path):
    spans = [rest_span(f"c00000000000000{i}", "LLM", {**ANSWER, "llm.input_messages.0.message.content": f"q {i}"})
             for i in range(4)]
    text = json.dumps({"data": spans, "next_cursor": "U3BhbjoxMA=="}, indent=2)
    text = text.replace('"q 2"', '"q\t2"')  # a raw TAB in one span's string: that span is not JSON
    path = tmp_path / "page.json"
    path.write_text(text)
    s = run(path)
    assert (s.counts.read, s.counts.stored, s.counts.quarantined) == (4, 3, 1)
    assert rows("SELECT source_line, reason FROM quarantine") == [(opening_line(text, "c000000000000002"), "invalid JSON")]
