"""Langfuse observations exported as JSON -> canonical rows (see traces.canonical); GENERATIONs only.

Langfuse's public API (`GET /api/public/observations`, and `/api/public/v2/observations`) answers
`{"data": [observation, ...], "meta": {...}}`, and its UI exports the observations table as JSON or JSONL; an
observation is
    {"id": "…", "traceId": "…", "type": "GENERATION", "name": "OpenAI-generation",
     "startTime": "2025-06-04T10:15:02.120Z", "endTime": "…", "completionStartTime": "…", "model": "gpt-4o-mini",
     "modelParameters": {"temperature": 0.2},
     "input": [{"role": "system", "content": "…"}, {"role": "user", "content": "…"}],
     "output": {"role": "assistant", "content": "…"}, "usage": {"input": 12, "output": 40, "total": 52,
     "unit": "TOKENS"}, "usageDetails": {"input": 12, "output": 40, "total": 52}, "metadata": {...},
     "level": "DEFAULT", "statusMessage": null, "parentObservationId": "…", "promptName": null,
     "promptTokens": 12, "completionTokens": 40, ...}
A file may hold them one per line, as a JSON array, or the API's answer, pretty-printed or not
(traces.readers.paged_records).

`input` is the request: a list of chat messages (Langfuse's OpenAI integration), `{"messages": [...], "tools":
[...]}` (the same with tools), one message object, or a string (the user's text). `output` is the answer: a
string, a message (`content`, `tool_calls`), a list of messages, or a completion with `choices`. Observations of
another type (SPAN, EVENT, and the agent, tool, chain, retriever, embedding ... types) are skipped, counted per
type; a record that is not an observation or breaks its shape is quarantined with the field at fault.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from traces import otel, records, timestamps

FORMAT = "langfuse"
KEYS = {"traceId", "type", "startTime"}
META = {"traceId": "langfuse_trace_id", "name": "observation_name", "level": "level",
        "statusMessage": "status_message", "parentObservationId": "parent_observation_id",
        "promptName": "prompt_name", "promptVersion": "prompt_version", "environment": "environment"}


def is_observation(doc: Any) -> bool:
    return isinstance(doc, dict) and KEYS <= doc.keys()


def is_document(doc: Any) -> bool:
    """An observation, a JSON array that starts with one, or the API's answer (`data` and `meta`)."""
    if isinstance(doc, list):
        return bool(doc) and is_observation(doc[0])
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return ("meta" in doc and not doc["data"]) or is_document(doc["data"])
    return is_observation(doc)


def _request(value: Any) -> tuple[list[dict], Any]:
    """`input` -> (messages, tools)."""
    value = otel._maybe_json(value)
    tools = None
    if isinstance(value, dict) and "messages" in value:
        value, tools = value["messages"], value.get("tools") or value.get("functions")
    if value is not None and not isinstance(value, (str, list, dict)):
        raise otel.MalformedSpan(f"`input` must be a string, a message or an array of messages, got "
                                 f"{otel.json_type(value)}")
    messages = otel._as_messages(value, "user")
    return messages, otel._typed(tools, list, "`input.tools`") if tools is not None else None


def _reply(value: Any) -> dict:
    """`output` -> the assistant's message (`content`, maybe `tool_calls`)."""
    value = otel._maybe_json(value)
    if isinstance(value, dict) and isinstance(value.get("choices"), list) and value["choices"]:
        value = value["choices"][0].get("message", value["choices"][0])
    if value is not None and not isinstance(value, (str, list, dict)):
        raise otel.MalformedSpan(f"`output` must be a string, a message or an array of messages, got "
                                 f"{otel.json_type(value)}")
    out = otel._as_messages(value, "assistant")
    return out[-1] if out else {}


def _usage(obs: dict) -> dict:
    """usageDetails, else usage, else promptTokens/completionTokens -> {input_tokens, output_tokens}."""
    for key in ("usageDetails", "usage"):
        counts = obs.get(key)
        if counts is not None:
            counts = otel._typed(counts, dict, f"`{key}`")
            if counts.get("input") is not None or counts.get("output") is not None:
                return {k: counts[src] for k, src in (("input_tokens", "input"), ("output_tokens", "output"))
                        if counts.get(src) is not None}
    return {k: obs[src] for k, src in (("input_tokens", "promptTokens"), ("output_tokens", "completionTokens"))
            if obs.get(src) is not None}


def _metadata(obs: dict) -> dict:
    own = otel._maybe_json(obs.get("metadata"))
    own = own if isinstance(own, dict) else {} if own is None else {"metadata": own}
    return {**{name: obs[k] for k, name in META.items() if obs.get(k) is not None}, **own}


def _read(line: int, obs: dict) -> tuple[dict | None, str | None]:
    if not is_observation(obs):
        needs = ", ".join(f"`{k}`" for k in sorted(KEYS))
        raise otel.MalformedSpan(f"not a Langfuse observation: it needs {needs}")
    kind = otel._typed(obs["type"], str, "`type`")
    if kind.upper() != "GENERATION":
        return None, f"Langfuse {otel.shown(kind.upper())} observation (not an LLM call)"
    messages, tools = _request(obs.get("input"))
    reply = _reply(obs.get("output"))
    params = otel._typed(obs.get("modelParameters") or {}, dict, "`modelParameters`")
    usage, src_id, model = _usage(obs), obs.get("id"), obs.get("model")
    empty = reply.get("content") in (None, "") and not reply.get("tool_calls")
    error = "generation has no input messages" if not messages else \
        "generation failed (level ERROR) and has no output" if empty and obs.get("level") == "ERROR" else None
    return {"line": line, "source_format": FORMAT,
            "src_id": otel._typed(src_id, str, "`id`") if src_id is not None else None,
            "ts": timestamps.parse(obs["startTime"]),
            "model": otel._typed(model, str, "`model`") if model is not None else None,
            "messages": otel._json(messages), "response": otel._text(reply.get("content")),
            "tool_calls": otel._json(reply["tool_calls"]) if reply.get("tool_calls") else None,
            "tools": otel._json(tools) if tools else None, "params": otel._json(params) if params else None,
            "usage": otel._json(usage) if usage else None, "metadata": otel._json(_metadata(obs)),
            "feedback": None, "error": error, "raw": ""}, None


def rows(items: Iterable[tuple[int, str]]) -> tuple[list[dict], Counter]:
    """(line, JSON text) records -> (canonical rows of GENERATIONs and of bad records, {skip reason: count})."""
    return records.rows(records.decoded(items), _read, FORMAT, "observation")
