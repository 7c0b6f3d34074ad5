"""OpenTelemetry GenAI spans exported as OTLP JSON -> canonical rows (see traces.canonical).

A file holds one `{"resourceSpans": [...]}` export request, or one per line (the collector's file
exporter). A span is a GenAI call when it has `gen_ai.*` attributes or events; other spans (HTTP,
DB, ...) are not traces and are counted as skipped. Where the prompt and completion live, newest
convention first:

- attributes `gen_ai.input.messages` / `gen_ai.output.messages` (+ `gen_ai.system_instructions`):
  `[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]`, as a JSON string or structured;
- events `gen_ai.system.message`, `gen_ai.user.message`, `gen_ai.assistant.message`,
  `gen_ai.tool.message` (attribute `content`) and `gen_ai.choice` (attribute `message` or `content`);
- older attributes `gen_ai.prompt` / `gen_ai.completion` (JSON list of messages or plain text), also
  as events `gen_ai.content.prompt` / `gen_ai.content.completion`, and the flattened
  `gen_ai.prompt.<i>.role` / `.content`, `gen_ai.completion.<i>.role` / `.content`.
Span volumes are small next to chat logs, so this walks the JSON in Python.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any, Iterator

ROLE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
               "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
PARAMS = {"gen_ai.request.temperature": "temperature", "gen_ai.request.top_p": "top_p",
          "gen_ai.request.max_tokens": "max_tokens", "gen_ai.request.seed": "seed",
          "gen_ai.request.stop_sequences": "stop", "gen_ai.request.frequency_penalty": "frequency_penalty",
          "gen_ai.request.presence_penalty": "presence_penalty"}


def looks_like_otel(head: str) -> bool:
    return '"resourceSpans"' in head[:4096]


def any_value(v: dict) -> Any:
    """OTLP JSON AnyValue -> Python (int64 arrives as a string in proto3 JSON)."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return v["stringValue"]
    if "intValue" in v:
        return int(v["intValue"])
    if "doubleValue" in v:
        return float(v["doubleValue"])
    if "boolValue" in v:
        return bool(v["boolValue"])
    if "arrayValue" in v:
        return [any_value(x) for x in v["arrayValue"].get("values", [])]
    if "kvlistValue" in v:
        return {kv["key"]: any_value(kv.get("value", {})) for kv in v["kvlistValue"].get("values", [])}
    return None


def attrs(obj: dict) -> dict:
    return {kv.get("key"): any_value(kv.get("value", {})) for kv in obj.get("attributes", []) or []}


def documents(text: str) -> Iterator[tuple[int, dict | None, str]]:
    """(file line, document or None if invalid, raw): one JSON document, or JSON lines of export requests."""
    try:
        yield 1, json.loads(text), ""
        return
    except json.JSONDecodeError:
        pass
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                yield n, json.loads(line), line
            except json.JSONDecodeError as e:
                yield n, None, line


def spans(doc: dict) -> Iterator[dict]:
    for rs in doc.get("resourceSpans", []) or []:
        for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])) or []:
            yield from ss.get("spans", []) or []


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return v
    return v


def _from_parts(msg: dict) -> dict:
    """A semconv message with `parts` -> an OpenAI-style message."""
    if "parts" not in msg:
        return msg
    texts = [p.get("content", "") for p in msg["parts"] if p.get("type") == "text"]
    calls = [{"id": p.get("id"), "type": "function",
              "function": {"name": p.get("name"), "arguments": json.dumps(p.get("arguments"))
                           if not isinstance(p.get("arguments"), str) else p.get("arguments")}}
             for p in msg["parts"] if p.get("type") == "tool_call"]
    results = [p.get("response") for p in msg["parts"] if p.get("type") == "tool_call_response"]
    out = {"role": msg.get("role")}
    content = "\n".join(t for t in texts if isinstance(t, str))
    if results and not content:
        content = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in results)
    out["content"] = content if content or not calls else None
    if calls:
        out["tool_calls"] = calls
    return out


def _as_messages(v: Any, role: str) -> list[dict]:
    v = _maybe_json(v)
    if isinstance(v, list):
        return [_from_parts(m) if isinstance(m, dict) else {"role": role, "content": str(m)} for m in v]
    if isinstance(v, dict):
        return [_from_parts(v)]
    return [{"role": role, "content": v}] if v is not None else []


def _flattened(a: dict, prefix: str) -> list[dict]:
    """gen_ai.prompt.0.role / gen_ai.prompt.0.content -> messages, in index order."""
    found: dict[int, dict] = {}
    for k, v in a.items():
        m = re.fullmatch(re.escape(prefix) + r"\.(\d+)\.(role|content|tool_calls)", k)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = _maybe_json(v) if m.group(2) == "tool_calls" else v
    return [found[i] for i in sorted(found)]


def _conversation(a: dict, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(request messages, output messages) from whichever convention the span uses."""
    if "gen_ai.input.messages" in a or "gen_ai.output.messages" in a:
        sys_msgs = [{"role": "system", "content": _system_text(a.get("gen_ai.system_instructions"))}] \
            if a.get("gen_ai.system_instructions") else []
        return sys_msgs + _as_messages(a.get("gen_ai.input.messages"), "user"), \
            _as_messages(a.get("gen_ai.output.messages"), "assistant")
    ev_in, ev_out = _from_events(events)
    if ev_in or ev_out:
        return ev_in, ev_out
    if "gen_ai.prompt" in a or "gen_ai.completion" in a:
        return _as_messages(a.get("gen_ai.prompt"), "user"), _as_messages(a.get("gen_ai.completion"), "assistant")
    return _flattened(a, "gen_ai.prompt"), _flattened(a, "gen_ai.completion")


def _system_text(v: Any) -> str:
    v = _maybe_json(v)
    if isinstance(v, list):
        return "\n".join(p.get("content", "") if isinstance(p, dict) else str(p) for p in v)
    return str(v)


def _from_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
    req, out = [], []
    for ev in events:
        name, ea = ev.get("name", ""), attrs(ev)
        if name in ROLE_EVENTS:
            msg = {"role": ea.get("role", ROLE_EVENTS[name]), "content": _maybe_json(ea.get("content"))}
            if "tool_calls" in ea:
                msg["tool_calls"] = _maybe_json(ea["tool_calls"])
            req.append(msg)
        elif name == "gen_ai.choice":
            msg = _maybe_json(ea.get("message"))
            if not isinstance(msg, dict):
                msg = {"content": ea.get("content", msg)}
            out.append({"role": "assistant", **_from_parts(msg)})
        elif name == "gen_ai.content.prompt":
            req += _as_messages(ea.get("gen_ai.prompt"), "user")
        elif name == "gen_ai.content.completion":
            out += _as_messages(ea.get("gen_ai.completion"), "assistant")
    return req, out


def is_genai(span: dict, a: dict) -> bool:
    return any(k.startswith("gen_ai.") for k in a) or any(
        e.get("name", "").startswith("gen_ai.") for e in span.get("events", []) or [])


def span_row(index: int, span: dict) -> dict | None:
    """A canonical row (see traces.canonical), or None for a span that is not a GenAI call."""
    a = attrs(span)
    if not is_genai(span, a):
        return None
    events = span.get("events", []) or []
    req, out = _conversation(a, events)
    reply = out[0] if out else {}
    content = reply.get("content")
    usage = {k: a[f"gen_ai.usage.{k}"] for k in ("input_tokens", "output_tokens") if f"gen_ai.usage.{k}" in a}
    params = {v: a[k] for k, v in PARAMS.items() if k in a}
    meta = {"otel_trace_id": span.get("traceId"), "span_name": span.get("name"),
            "operation": a.get("gen_ai.operation.name"),
            "provider": a.get("gen_ai.provider.name", a.get("gen_ai.system"))}
    meta.update({k[len("mend.metadata."):]: v for k, v in a.items() if k.startswith("mend.metadata.")})
    return {
        "line": index, "source_format": "otel", "src_id": span.get("spanId") or a.get("gen_ai.response.id"),
        "ts": _ts(span.get("startTimeUnixNano")),
        "model": a.get("gen_ai.response.model") or a.get("gen_ai.request.model"),
        "messages": json.dumps(req), "response": _text(content),
        "tool_calls": json.dumps(reply["tool_calls"]) if reply.get("tool_calls") else None,
        "tools": None, "params": json.dumps(params) if params else None,
        "usage": json.dumps(usage) if usage else None,
        "metadata": json.dumps({k: v for k, v in meta.items() if v is not None}), "feedback": None,
        "error": None if req else "span has gen_ai.* attributes but no prompt messages", "raw": json.dumps(span),
    }


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", p.get("content", "")) if isinstance(p, dict) else str(p) for p in content)
    return json.dumps(content)


def _ts(nanos: Any) -> dt.datetime | None:
    try:
        return dt.datetime.fromtimestamp(int(nanos) / 1e9, dt.UTC).replace(tzinfo=None)
    except (TypeError, ValueError):
        return None


def _bad_row(index: int, raw: str, reason: str) -> dict:
    keys = ["src_id", "ts", "model", "messages", "response", "tool_calls", "tools", "params", "usage",
            "metadata", "feedback"]
    return {"line": index, "source_format": "otel", **dict.fromkeys(keys), "error": reason, "raw": raw}


def rows(text: str) -> tuple[list[dict], int]:
    """(canonical rows of the GenAI spans, number of non-GenAI spans skipped)."""
    out, skipped, index = [], 0, 0
    for file_line, doc, raw in documents(text):
        if not isinstance(doc, dict):
            index += 1
            out.append(_bad_row(index, raw, f"invalid JSON (file line {file_line})" if doc is None
                                else f"export request is not a JSON object (file line {file_line})"))
            continue
        for span in spans(doc):
            index += 1
            row = span_row(index, span)
            if row is None:
                skipped += 1
            else:
                out.append(row)
    return out, skipped
