"""Arize Phoenix spans as JSON -> canonical rows (see traces.canonical), read as OpenInference spans (traces.otel).

Phoenix hands its spans out in its own JSON, not OTLP. Its REST API (`GET /v1/projects/{project}/spans`, what
the phoenix clients' `get_spans` and `px span list --format raw` return) answers `{"data": [span, ...],
"next_cursor": ...}`, a span being
    {"id": "U3BhbjoxMg==", "name": "ChatCompletion", "context": {"trace_id": "…", "span_id": "…"},
     "span_kind": "LLM", "parent_id": "…", "start_time": "2025-06-04T10:15:02.120+00:00", "end_time": "…",
     "status_code": "OK", "status_message": "", "events": [...],
     "attributes": {"llm.model_name": "gpt-4o-mini", "llm.input_messages.0.message.role": "user", ...}}
with the attributes flattened to dotted keys and `openinference.span.kind` moved out to `span_kind`. Phoenix's
older span JSON (phoenix.trace.span_json_encoder, one span per line) has the same fields with the attributes
nested (`{"llm": {"input_messages": [{"message": {"role": "user", ...}}]}}`). A file may hold such spans one per
line (JSONL), as a JSON array, or the API's answer, pretty-printed or not (traces.readers.paged_records).

Nested attributes are flattened first (lists of objects by index, as Phoenix's own `flatten` does), then the
span is an OpenInference span like any other: messages, tool calls, model, token counts, invocation parameters
and tools come from traces.otel.span_row. `source_line` is the line where the span starts; the span id is
`context.span_id`, the time `start_time`. Spans of another kind (CHAIN, TOOL, RETRIEVER, ...) are skipped,
counted per reason; a record that is not a span or breaks its shape is quarantined with the reason.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from traces import otel, records, timestamps

FORMAT = "phoenix"


def is_span(doc: Any) -> bool:
    context = doc.get("context") if isinstance(doc, dict) else None
    return isinstance(context, dict) and "span_id" in context and ("span_kind" in doc or "attributes" in doc)


def is_document(doc: Any) -> bool:
    """A Phoenix span, a JSON array that starts with one, or the REST API's answer (even an empty page)."""
    if isinstance(doc, list):
        return bool(doc) and is_span(doc[0])
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        return "next_cursor" in doc or is_document(doc["data"])
    return is_span(doc)


def flatten(value: Any, prefix: str = "", out: dict | None = None) -> dict:
    """Nested attributes -> dotted keys; a list of objects is indexed (`llm.input_messages.0.message.role`), other
    lists are values (`tag.tags`). Keys already dotted (the REST API's) come out as they are."""
    out = {} if out is None else out
    if isinstance(value, dict) and (value or not prefix):
        for key, item in value.items():
            flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for i, item in enumerate(value):
            flatten(item, f"{prefix}.{i}", out)
    else:
        out[prefix] = value
    return out


def _read(line: int, span: dict) -> tuple[dict | None, str | None]:
    """(row, None) for an LLM span, (None, why) for another kind; MalformedSpan where the shape is broken."""
    if not is_span(span):
        raise otel.MalformedSpan("not a Phoenix span: no `context` object with a `span_id`")
    attributes = otel._typed(span.get("attributes") or {}, dict, "`attributes`")
    a = flatten(attributes)
    kind = span.get("span_kind")
    a.setdefault("openinference.span.kind", kind if kind is not None else "UNKNOWN")  # the REST API moves it out
    span_id = span["context"]["span_id"]
    as_otlp = {"spanId": otel._typed(span_id, str, "`context.span_id`") if span_id is not None else None,
               "traceId": span["context"].get("trace_id"), "name": span.get("name")}
    reason = otel.skip_reason(as_otlp, a)
    if reason:
        return None, reason
    row = otel.span_row(line, as_otlp, a)
    row.update(source_format=FORMAT, ts=timestamps.parse(span.get("start_time")))
    return row, None


def rows(items: Iterable[tuple[int, str]]) -> tuple[list[dict], Counter]:
    """(line, JSON text) records -> (canonical rows of LLM spans and of bad records, {skip reason: spans})."""
    return records.rows(records.decoded(items), _read, FORMAT, "span")
