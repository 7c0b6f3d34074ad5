"""OpenTelemetry LLM spans exported as OTLP JSON -> canonical rows (see traces.canonical).

A file holds one `{"resourceSpans": [...]}` export request (pretty-printed or not), or one per
line (the collector's file exporter; lines end at "\\n" only, so a raw U+2028 inside a string does
not split one). Three attribute conventions are read:

- OTel GenAI semantic conventions, newest first: attributes `gen_ai.input.messages` /
  `gen_ai.output.messages` (+ `gen_ai.system_instructions`) holding
  `[{"role": "user", "parts": [{"type": "text", "content": "..."}]}]`; events `gen_ai.system.message`,
  `gen_ai.user.message`, `gen_ai.assistant.message`, `gen_ai.tool.message` and `gen_ai.choice`;
  the older `gen_ai.prompt` / `gen_ai.completion` (attributes, or `gen_ai.content.*` events);
- openllmetry's flattened attributes `gen_ai.prompt.<i>.role|content`, `gen_ai.completion.<i>.content`
  and `gen_ai.completion.<i>.tool_calls.<j>.name|arguments|id`; tools as `llm.request.functions.<i>.*`;
- OpenInference (Arize Phoenix): `openinference.span.kind = LLM` with `llm.input_messages.<i>.message.*`,
  `llm.output_messages.<i>.message.*` (tool calls under `message.tool_calls.<j>.tool_call.function.*`),
  `llm.model_name`, `llm.invocation_parameters`, `llm.token_count.*`, `llm.tools.<i>.tool.json_schema`.

Every span read is a row or skipped with a reason: spans that are not LLM calls (HTTP and DB spans,
tool executions, agents, chains, retrievers, embeddings) are skipped, counted per reason.
Span volumes are small next to chat logs, so this walks the JSON in Python; a file is streamed one export line or
one span at a time (traces.otel_stream).
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from typing import Any, Iterator

from traces import timestamps

ROLE_EVENTS = {"gen_ai.system.message": "system", "gen_ai.user.message": "user",
               "gen_ai.assistant.message": "assistant", "gen_ai.tool.message": "tool"}
PARAMS = {"gen_ai.request.temperature": "temperature", "gen_ai.request.top_p": "top_p",
          "gen_ai.request.max_tokens": "max_tokens", "gen_ai.request.seed": "seed",
          "gen_ai.request.stop_sequences": "stop", "gen_ai.request.frequency_penalty": "frequency_penalty",
          "gen_ai.request.presence_penalty": "presence_penalty"}
# GenAI operations that are not a model call: their model calls are child `chat` spans (no double count)
NOT_LLM_OPERATIONS = {"execute_tool": "tool execution", "embeddings": "embeddings", "create_agent": "agent setup",
                      "invoke_agent": "agent invocation"}
KEEP_CHARS = 10_000  # raw span text kept for a quarantined span (as the quarantine table truncates)


def is_export_request(doc: Any) -> bool:
    return isinstance(doc, dict) and "resourceSpans" in doc


class MalformedSpan(ValueError):
    """A span (or the export around it) that breaks the OTLP JSON shape; the message says where, never the value
    (a value in the wrong field may be a secret)."""


def json_type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number")


INT_RE = re.compile(r"-?\d+")


def shown(value: Any, limit: int = 60) -> str:
    """Span data put in a reason (an attribute key, a span kind): control and non-ASCII characters escaped, cut to
    `limit`, so that a stored or printed reason carries no escape sequence and one odd span adds no huge key."""
    text = json.dumps(str(value))[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def any_value(v: Any, key: str = "?") -> Any:
    """OTLP JSON AnyValue -> Python (int64 arrives as a string in proto3 JSON); MalformedSpan on a mis-typed one."""
    if not isinstance(v, dict):
        return v
    if "stringValue" in v:
        return _typed(v["stringValue"], str, f"attribute `{key}`: stringValue")
    if "intValue" in v:
        n = v["intValue"]
        if isinstance(n, bool) or not (isinstance(n, int) or isinstance(n, str) and INT_RE.fullmatch(n.strip())):
            raise MalformedSpan(f"attribute `{key}`: intValue must be an integer, got {json_type(n)}")
        return int(n)
    if "doubleValue" in v:
        return _double(v["doubleValue"], key)
    if "boolValue" in v:
        return _typed(v["boolValue"], bool, f"attribute `{key}`: boolValue")
    if "arrayValue" in v:
        return [any_value(x, key) for x in _values(v["arrayValue"], key, "arrayValue")]
    if "kvlistValue" in v:
        return _pairs(_values(v["kvlistValue"], key, "kvlistValue"), key)
    return None


def _typed(x: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(x, kind) or isinstance(x, bool) and kind is not bool:
        name = json_type((kind[0] if isinstance(kind, tuple) else kind)())
        raise MalformedSpan(f"{where} must be {'an' if name[0] in 'aeiou' else 'a'} {name}, got {json_type(x)}")
    return x


def _double(x: Any, key: str) -> float | str:
    """A number; proto3's "NaN"/"Infinity" are kept as that text (JSON has no such number)."""
    try:
        f = float(x) if isinstance(x, (int, float, str)) and not isinstance(x, bool) else None
    except ValueError:
        f = None
    if f is None:
        raise MalformedSpan(f"attribute `{key}`: doubleValue must be a number, got {json_type(x)}")
    return f if math.isfinite(f) else str(x)


def _values(container: Any, key: str, field: str) -> list:
    values = container.get("values") if isinstance(container, dict) else False
    if not isinstance(values, list) and values is not None:
        raise MalformedSpan(f"attribute `{key}`: {field} must be an object with a `values` array, "
                            f"got {json_type(container)}")
    return values or []


def _pairs(kvs: Any, key: str) -> dict:
    """OTLP KeyValue list -> dict."""
    out = {}
    for kv in _typed(kvs, list, f"`{key}`"):
        name = kv.get("key") if isinstance(kv, dict) else None
        if not isinstance(name, str):
            raise MalformedSpan(f"attribute in `{key}` must be an object with a string `key`")
        out[name] = any_value(kv.get("value", {}), shown(name))
    return out


def attrs(obj: dict) -> dict:
    return _pairs(obj.get("attributes") or [], "attributes")


def events(span: dict) -> list[dict]:
    evs = _typed(span.get("events") or [], list, "`events`")
    if not all(isinstance(e, dict) for e in evs):
        raise MalformedSpan("`events` must hold objects")
    return evs


def _loads(text: str) -> tuple[Any, str | None]:
    """(document, None) or (None, why it is not JSON)."""
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return None, "JSON nested too deeply to read"


def documents(text: str) -> Iterator[tuple[int, Any, str | None, str]]:
    """(file line, document, error, raw): one JSON document, or JSON lines of export requests."""
    doc, err = _loads(text)
    if err is None:
        yield 1, doc, None, ""
        return
    # "\n" only: str.splitlines() also splits at U+2028/U+2029, which JSON allows raw inside strings
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            doc, err = _loads(line)
            yield n, doc, err, line


LEVELS = [("resourceSpans",), ("scopeSpans", "instrumentationLibrarySpans"), ("spans",)]


def spans(doc: Any, level: int = 0, where: str = "") -> Iterator[tuple[Any, str | None]]:
    """(span, None) per span of an export request, or (the part, why) where its nesting is broken."""
    if level == len(LEVELS):
        yield doc, None
        return
    if not isinstance(doc, dict):
        yield doc, f"`{where}` must be an object, got {json_type(doc)}"
        return
    key = next((k for k in LEVELS[level] if k in doc), LEVELS[level][0])
    items, path = doc.get(key), f"{where}.{key}".lstrip(".")
    if items is not None and not isinstance(items, list):
        yield items, f"`{path}` must be an array, got {json_type(items)}"
        return
    for i, item in enumerate(items or []):
        yield from spans(item, level + 1, f"{path}[{i}]")


def _maybe_json(v: Any) -> Any:
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except (json.JSONDecodeError, RecursionError):
            return v
    return v


def unflatten(a: dict, prefix: str) -> Any:
    """Attributes `prefix.0.role`, `prefix.0.tool_calls.1.name` -> [{"role": .., "tool_calls": [.., {"name": ..}]}].

    OTel attributes are flat, so instrumentations spell lists and objects as dotted keys."""
    root: dict = {}
    for key, value in a.items():
        if not key.startswith(prefix + "."):
            continue
        node, parts = root, key[len(prefix) + 1:].split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {}) if isinstance(node.get(p, {}), dict) else {}
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    """Dicts whose keys are all indices become lists, in index order (iteratively deep enough for any key)."""
    if not isinstance(node, dict):
        return node
    items = {k: _lists(v) for k, v in node.items()}
    if items and all(k.isdigit() for k in items):
        return [items[k] for k in sorted(items, key=int)]
    return items


def _as_list(v: Any) -> list:
    v = _maybe_json(v)
    return v if isinstance(v, list) else [] if v is None else [v]


def tool_call(tc: Any) -> dict:
    """Any tool-call shape (OpenAI, OTel `parts`, openllmetry flat, OpenInference `tool_call.*`) -> OpenAI's."""
    tc = tc if isinstance(tc, dict) else {"name": str(tc)}
    tc = tc["tool_call"] if isinstance(tc.get("tool_call"), dict) else tc
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
    args = fn.get("arguments")
    return {"id": tc.get("id"), "type": "function",
            "function": {"name": fn.get("name"), "arguments": args if isinstance(args, str) or args is None
                         else json.dumps(args)}}


def _from_parts(msg: dict) -> dict:
    """A semconv message with `parts` -> an OpenAI-style message."""
    if "parts" not in msg:
        return msg
    parts = [p for p in _as_list(msg["parts"]) if isinstance(p, dict)]
    texts = [p.get("content", "") for p in parts if p.get("type") == "text"]
    calls = [tool_call(p) for p in parts if p.get("type") == "tool_call"]
    results = [p.get("response") for p in parts if p.get("type") == "tool_call_response"]
    out = {"role": msg.get("role")}
    content = "\n".join(t for t in texts if isinstance(t, str))
    if results and not content:
        content = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in results)
    out["content"] = content if content or not calls else None
    if calls:
        out["tool_calls"] = calls
    return out


def _message(m: Any, role: str) -> dict:
    """One message of any convention -> OpenAI shape (tool calls normalized)."""
    if not isinstance(m, dict):
        return {"role": role, "content": str(m)}
    m = _from_parts(m.get("message", m) if isinstance(m.get("message"), dict) else m)
    out = {"role": m.get("role") or role, "content": m.get("content")}
    if out["content"] is None and "contents" in m:  # OpenInference list of content parts
        parts = [c.get("message_content", c) for c in _as_list(m["contents"]) if isinstance(c, dict)]
        out["content"] = "\n".join(str(p.get("text", "")) for p in parts if p.get("type") == "text") or None
    calls = [tool_call(c) for c in _as_list(m.get("tool_calls"))]
    if calls:
        out["tool_calls"] = calls
    if m.get("tool_call_id"):
        out["tool_call_id"] = m["tool_call_id"]
    return out


def _as_messages(v: Any, role: str) -> list[dict]:
    v = _maybe_json(v)
    if isinstance(v, list):
        return [_message(m, role) for m in v]
    if isinstance(v, dict):
        return [_message(v, role)]
    return [{"role": role, "content": v}] if v is not None else []


def _system_text(v: Any) -> str:
    v = _maybe_json(v)
    if isinstance(v, list):
        return "\n".join(str(p.get("content", "")) if isinstance(p, dict) else str(p) for p in v)
    return str(v)


def _from_events(events: list[dict]) -> tuple[list[dict], list[dict]]:
    req, out = [], []
    for ev in events:
        name, ea = ev.get("name", ""), attrs(ev)
        if name in ROLE_EVENTS:
            msg = {"role": ea.get("role", ROLE_EVENTS[name]), "content": _maybe_json(ea.get("content"))}
            if "tool_calls" in ea:
                msg["tool_calls"] = ea["tool_calls"]
            req.append(_message(msg, ROLE_EVENTS[name]))
        elif name == "gen_ai.choice":
            msg = _maybe_json(ea.get("message"))
            if not isinstance(msg, dict):
                msg = {"content": ea.get("content", msg)}
            out.append(_message({"role": "assistant", **msg}, "assistant"))
        elif name == "gen_ai.content.prompt":
            req += _as_messages(ea.get("gen_ai.prompt"), "user")
        elif name == "gen_ai.content.completion":
            out += _as_messages(ea.get("gen_ai.completion"), "assistant")
    return req, out


def _genai_conversation(a: dict, events: list[dict]) -> tuple[list[dict], list[dict]]:
    """(request messages, output messages) from whichever GenAI/openllmetry convention the span uses."""
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
    return _as_messages(unflatten(a, "gen_ai.prompt") or None, "user"), \
        _as_messages(unflatten(a, "gen_ai.completion") or None, "assistant")


def _openinference_conversation(a: dict) -> tuple[list[dict], list[dict]]:
    req = _as_messages(unflatten(a, "llm.input_messages") or None, "user")
    out = _as_messages(unflatten(a, "llm.output_messages") or None, "assistant")
    if not req and a.get("input.value") is not None:  # only the raw request body was captured
        body = _maybe_json(a["input.value"])
        req = _as_messages(body.get("messages") if isinstance(body, dict) else body, "user")
    if not out and a.get("output.value") is not None:
        body = _maybe_json(a["output.value"])
        choices = body.get("choices") if isinstance(body, dict) else None
        if isinstance(choices, list) and choices:
            body = choices[0].get("message") if isinstance(choices[0], dict) else None
        out = _as_messages(body, "assistant")
    return req, out


def skip_reason(span: dict, a: dict) -> str | None:
    """Why a span is not an LLM call (skipped, counted), or None when it is one."""
    oi_kind = a.get("openinference.span.kind")
    if oi_kind is not None:
        kind = str(oi_kind).upper()
        return None if kind == "LLM" else f"OpenInference {shown(kind)} span (not an LLM call)"
    tl_kind = a.get("traceloop.span.kind")
    if tl_kind is not None:
        return f"openllmetry {shown(tl_kind)} span (not an LLM call)"
    op = a.get("gen_ai.operation.name")
    if op in NOT_LLM_OPERATIONS:
        return f"GenAI {op} span: {NOT_LLM_OPERATIONS[op]}, not an LLM call"
    genai = any(k.startswith(("gen_ai.", "llm.")) for k in a) or any(
        str(e.get("name", "")).startswith("gen_ai.") for e in events(span))
    return None if genai else "not a GenAI span (no gen_ai.*, llm.* or OpenInference attributes)"


def _openinference_extras(a: dict) -> tuple[dict, dict, list | None, dict]:
    """(usage, params, tools, metadata) of an OpenInference span."""
    usage = {k: a[f"llm.token_count.{src}"] for k, src in (("input_tokens", "prompt"), ("output_tokens", "completion"))
             if f"llm.token_count.{src}" in a}
    params = _maybe_json(a.get("llm.invocation_parameters"))
    tools = [_maybe_json(t["tool"].get("json_schema")) if isinstance(t, dict) and isinstance(t.get("tool"), dict)
             else t
             for t in _as_list(unflatten(a, "llm.tools") or None)]
    meta = _maybe_json(a.get("metadata"))
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.update({k: a[k] for k in ("session.id", "user.id") if k in a})
    return usage, params if isinstance(params, dict) else {}, tools or None, meta


def _genai_extras(a: dict) -> tuple[dict, dict, list | None, dict]:
    usage = {k: a[f"gen_ai.usage.{k}"] for k in ("input_tokens", "output_tokens") if f"gen_ai.usage.{k}" in a}
    for k, src in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens")):  # openllmetry
        if f"gen_ai.usage.{src}" in a:
            usage.setdefault(k, a[f"gen_ai.usage.{src}"])
    params = {v: a[k] for k, v in PARAMS.items() if k in a}
    functions = unflatten(a, "llm.request.functions")
    tools = [{"type": "function", "function": {k: _maybe_json(v) for k, v in f.items()}}
             for f in _as_list(functions or None) if isinstance(f, dict)]
    return usage, params, tools or None, {}


def span_row(index: int, span: dict, a: dict) -> dict:
    """A canonical row (see traces.canonical) of a span that is an LLM call."""
    oi = "openinference.span.kind" in a
    req, out = _openinference_conversation(a) if oi else _genai_conversation(a, events(span))
    usage, params, tools, meta = _openinference_extras(a) if oi else _genai_extras(a)
    reply = out[0] if out else {}
    meta = {"otel_trace_id": span.get("traceId"), "span_name": span.get("name"),
            "operation": a.get("gen_ai.operation.name", a.get("llm.request.type")),
            "provider": a.get("gen_ai.provider.name", a.get("gen_ai.system", a.get("llm.provider", a.get("llm.system")))),
            **meta}
    meta.update({k[len("mend.metadata."):]: v for k, v in a.items() if k.startswith("mend.metadata.")})
    span_id = span.get("spanId") or a.get("gen_ai.response.id")
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or a.get("llm.model_name")
    return {
        "line": index, "source_format": "otel",
        "src_id": str(_typed(span_id, (str, int), "`spanId`")) if span_id is not None else None,
        "ts": timestamps.epoch_to_utc(span.get("startTimeUnixNano")),
        "model": _typed(model, str, "the model attribute") if model is not None else None,
        "messages": _json(req), "response": _text(reply.get("content")),
        "tool_calls": _json(reply["tool_calls"]) if reply.get("tool_calls") else None,
        "tools": _json(tools) if tools else None, "params": _json(params) if params else None,
        "usage": _json(usage) if usage else None,
        "metadata": _json({k: v for k, v in meta.items() if v is not None}), "feedback": None,
        "error": None if req else "span is an LLM call but has no prompt messages (is content capture on?)",
        "raw": _raw(span),
    }


def _json(v: Any) -> str:
    try:
        return json.dumps(v, allow_nan=False)
    except ValueError:  # NaN or Infinity, which Python's parser accepts in the file: JSON columns cannot hold them
        raise MalformedSpan("a value is NaN or Infinity, which JSON cannot hold") from None


def _raw(v: Any) -> str:
    """The text kept for a quarantined part (cut as the quarantine table cuts it)."""
    try:
        return json.dumps(v)[:KEEP_CHARS]
    except (RecursionError, ValueError):
        return ""


def _text(content: Any) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", p.get("content", ""))) if isinstance(p, dict) else str(p)
                         for p in content)
    return _json(content)


def bad_row(index: int, raw: str, reason: str, fmt: str = "otel") -> dict:
    keys = ["src_id", "ts", "model", "messages", "response", "tool_calls", "tools", "params", "usage",
            "metadata", "feedback"]
    return {"line": index, "source_format": fmt, **dict.fromkeys(keys), "error": reason, "raw": raw[:KEEP_CHARS]}


def _read_otlp(index: int, span: dict) -> tuple[dict | None, str | None]:
    a = attrs(span)
    reason = skip_reason(span, a)
    return (None, reason) if reason else (span_row(index, span, a), None)


def guarded(index: int, span: Any, read=_read_otlp, fmt: str = "otel",
            noun: str = "span") -> tuple[dict | None, str | None]:
    """read(index, span): (row, None) for an LLM call, (None, why) for a skipped span; a span that breaks it is
    (a quarantined row with the reason, None). Shared by the OTLP reader and the record readers (traces.records),
    whose reasons name their own `noun` (record, observation)."""
    if not isinstance(span, dict):
        return bad_row(index, _raw(span), f"{noun} is not a JSON object", fmt), None
    try:
        return read(index, span)
    except RecursionError:
        return bad_row(index, "", f"{noun} nested too deeply to read", fmt), None
    except MalformedSpan as e:
        return bad_row(index, _raw(span), f"malformed {noun}: {e}", fmt), None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
        # a shape none of the checks above foresaw: the item is quarantined, never the file failed
        return bad_row(index, _raw(span), f"malformed {noun}: {type(e).__name__} while reading it", fmt), None


def export_rows(doc: Any, err: str | None, raw: str, where: str, counter: Iterator[int],
                skipped: Counter) -> Iterator[dict]:
    """The rows of one export request (or one bad row when it is none); `counter` numbers every item read, `where`
    (file line N) goes into the reasons. Shared with the streamed reader (traces.otel_stream)."""
    if not is_export_request(doc):
        why = err or ("export request has no `resourceSpans`" if isinstance(doc, dict)
                      else "export request is not a JSON object")
        yield bad_row(next(counter), raw, f"{why} ({where})")
        return
    yield from span_rows(spans(doc), where, counter, skipped)


def span_rows(items: Iterator[tuple[Any, str | None]], where: str, counter: Iterator[int],
              skipped: Counter) -> Iterator[dict]:
    """(span, why its nesting is broken) pairs -> rows; a span that is not an LLM call counted in `skipped`."""
    for span, broken in items:
        index = next(counter)
        if broken:
            yield bad_row(index, _raw(span), f"malformed export: {broken} ({where})")
            continue
        row, reason = guarded(index, span)
        if row is not None:
            yield row
        else:
            skipped[reason] += 1


def rows(text: str) -> tuple[list[dict], Counter]:
    """(canonical rows of the LLM-call spans and of bad lines, {skip reason: spans skipped})."""
    skipped, counter = Counter(), itertools.count(1)
    out = [row for file_line, doc, err, raw in documents(text)
           for row in export_rows(doc, err, raw, f"file line {file_line}", counter, skipped)]
    return out, skipped
