"""Langfuse observation exports (issue 26): GENERATIONs become traces, SPANs, EVENTs and the other observation types
are skipped and counted (read = stored + duplicate + quarantined + skipped); a record that breaks the shape is
quarantined alone with the field at fault, never a traceback.

The observations below have the fields Langfuse's public API gives them (`GET /api/public/observations` answers
`{"data": [...], "meta": {"page", "limit", "totalItems", "totalPages"}}`; its UI exports the same objects as JSON or
JSONL); `input`/`output` as its OpenAI integration logs them.
"""
import json

from builders.ingest_files import rows, run_as

TRACE = "0f3b7c9e-5a1d-4e2b-9c8f-7a6b5c4d3e2f"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def observation(oid, kind="GENERATION", **fields):
    return {"id": oid, "traceId": TRACE, "type": kind, "name": "OpenAI-generation",
            "startTime": "2025-06-04T10:15:02.120Z", "endTime": "2025-06-04T10:15:03.480Z",
            "completionStartTime": "2025-06-04T10:15:02.900Z", "model": "gpt-4o-mini-2024-07-18",
            "modelParameters": {"temperature": 0.2, "max_tokens": 256}, "input": None, "output": None,
            "version": None, "metadata": {"base_id": "b7"}, "level": "DEFAULT", "statusMessage": None,
            "parentObservationId": "a1c2e3", "promptId": None, "promptName": None, "promptVersion": None,
            "usage": {"input": 52, "output": 17, "total": 69, "unit": "TOKENS"},
            "usageDetails": {"input": 52, "output": 17, "total": 69}, "costDetails": {"total": 0.00002},
            "promptTokens": 52, "completionTokens": 17, "totalTokens": 69, "environment": "production",
            "latency": 1.36, "timeToFirstToken": 0.78, **fields}


def chat_generation(oid, question, answer):
    return observation(oid, input=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": question}],
                       output={"role": "assistant", "content": answer})


def test_api_answer_generations_stored_spans_and_events_skipped(tmp_path):
    tool_call = observation("gen-2", input={"messages": [{"role": "user", "content": "Weather in Paris?"}],
                                            "tools": TOOLS},
                            output={"role": "assistant", "content": None, "tool_calls": [
                                {"id": "call_Qx1", "type": "function",
                                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]})
    plain = observation("gen-3", input="Say hi.", output="Hi!", usage=None, usageDetails=None, metadata=None,
                        startTime="2025-06-04T12:15:02+02:00")
    page = {"data": [observation("span-1", "SPAN", name="agent", model=None),
                     chat_generation("gen-1", "Capital?", "Paris."), tool_call, observation("event-1", "EVENT", name="cache-hit"), plain,
                     observation("tool-1", "TOOL", name="get_weather")],
            "meta": {"page": 1, "limit": 50, "totalItems": 6, "totalPages": 1}}
    path = tmp_path / "observations.json"
    s = run_as(path, json.dumps(page, indent=2), "langfuse")
    assert (s.status, s.counts.read, s.counts.stored, s.counts.skipped, s.counts.quarantined) == \
        ("complete", 6, 3, 3, 0)
    assert dict(s.skipped) == {"Langfuse SPAN observation (not an LLM call)": 1,
                               "Langfuse EVENT observation (not an LLM call)": 1,
                               "Langfuse TOOL observation (not an LLM call)": 1}
    got = {r[0]: r[1:] for r in rows("""SELECT trace_id, source_format, ts::VARCHAR, model, messages, prompt,
                                               response, tool_calls, tools, params, usage, metadata FROM traces""")}
    fmt, ts, model, messages, prompt, response, calls, _, params, usage, meta = got["gen-1"]
    assert (fmt, ts, model, prompt, response, calls) == ("langfuse", "2025-06-04 10:15:02.12", "gpt-4o-mini-2024-07-18",
                                                         "Capital?", "Paris.", None)
    assert json.loads(messages) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital?"}]
    assert json.loads(params) == {"temperature": 0.2, "max_tokens": 256}
    assert json.loads(usage) == {"input_tokens": 52, "output_tokens": 17}
    assert json.loads(meta) == {"langfuse_trace_id": TRACE, "observation_name": "OpenAI-generation",
                                "level": "DEFAULT", "parent_observation_id": "a1c2e3", "environment": "production",
                                "base_id": "b7"}
    _, _, _, messages, prompt, response, calls, tools, _, _, _ = got["gen-2"]
    assert (prompt, response) == ("Weather in Paris?", None) and json.loads(tools) == TOOLS
    assert json.loads(calls) == [{"id": "call_Qx1", "type": "function",
                                  "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    _, ts, _, messages, prompt, response, _, _, _, usage, meta = got["gen-3"]
    assert (ts, prompt, response) == ("2025-06-04 10:15:02", "Say hi.", "Hi!")
    assert json.loads(usage) == {"input_tokens": 52, "output_tokens": 17}  # from promptTokens/completionTokens
    assert "base_id" not in json.loads(meta)
    # the line each generation starts at, in the pretty-printed page
    assert rows("SELECT source_line FROM traces WHERE trace_id = 'gen-1'")[0][0] == \
        path.read_text()[:path.read_text().index('"id": "gen-1"')].count("\n")


def test_each_malformed_observation_is_quarantined_alone_with_its_reason(tmp_path):
    good = chat_generation("gen-1", "Capital?", "Paris.")

    def bad(i, **changes):
        return json.dumps({**good, "id": f"bad-{i}", **changes})
    lines = [json.dumps(good),
             json.dumps({k: v for k, v in good.items() if k != "traceId"}),  # missing: not an observation
             bad(3, type=7), bad(4, input=12), bad(5, output=True), bad(6, usageDetails=[52, 17]),
             bad(7, modelParameters="temperature=0.2"), bad(8, input=None), bad(9, id=42),
             bad(10, output=None, level="ERROR", statusMessage="429 Too Many Requests"),
             bad(11, output=None),  # no answer, no error level: the common check's reason
             json.dumps("not an observation"),
             '{"id": "cut", "traceId": "t", "type": "GENERATION", "input": "Hel']  # the export was cut mid-record
    path = tmp_path / "observations.jsonl"
    s = run_as(path, "\n".join(lines) + "\n", "langfuse")
    assert (s.status, s.counts.read, s.counts.stored, s.counts.quarantined) == ("complete", 13, 1, 12)
    assert rows("SELECT source_line, reason FROM quarantine ORDER BY 1") == [
        (2, "malformed observation: not a Langfuse observation: it needs `startTime`, `traceId`, `type`"),
        (3, "malformed observation: `type` must be a string, got number"),
        (4, "malformed observation: `input` must be a string, a message or an array of messages, got number"),
        (5, "malformed observation: `output` must be a string, a message or an array of messages, got boolean"),
        (6, "malformed observation: `usageDetails` must be an object, got array"),
        (7, "malformed observation: `modelParameters` must be an object, got string"),
        (8, "generation has no input messages"),
        (9, "malformed observation: `id` must be a string, got number"),
        (10, "generation failed (level ERROR) and has no output"),
        (11, "empty response: no content and no tool_calls"),
        (12, "observation is not a JSON object"),
        (13, "invalid JSON")]


def test_json_array_secrets_redacted_and_metadata_as_group_key(tmp_path):
    leaky = chat_generation("gen-9", "Use key sk-proj-abcdefghijklmnopqrstuvwx1234 and mail ada@example.com", "Done.")
    path = tmp_path / "observations.json"
    text = json.dumps([chat_generation("gen-8", "Capital?", "Paris."), leaky, observation("span-1", "SPAN")])
    s = run_as(path, text, "langfuse", redact_pii=True, group_key="base_id")
    assert (s.counts.read, s.counts.stored, s.counts.skipped) == (3, 2, 1)
    assert rows("SELECT prompt FROM traces WHERE trace_id = 'gen-9'")[0][0] == \
        "Use key [REDACTED_SECRET] and mail [REDACTED_EMAIL]"
    assert rows("SELECT DISTINCT group_key FROM traces") == [("b7",)]
