"""simonw/llm's `llm logs --json` -> canonical rows (see traces.canonical), one trace per logged response.

`llm logs --json` prints a JSON array of the rows of its `responses` table joined with `conversations`:
    {"id": "01jx…", "model": "gpt-4o-mini", "resolved_model": null, "prompt": "…", "system": "…",
     "prompt_json": {"messages": [...]}, "options_json": {"temperature": 0.2}, "response": "…",
     "response_json": {...}, "conversation_id": "01jx…", "duration_ms": 1234,
     "datetime_utc": "2025-06-04T10:15:02.123456", "input_tokens": 12, "output_tokens": 40, "token_details": null,
     "conversation_name": "…", "conversation_model": "gpt-4o-mini", "schema_json": null,
     "prompt_fragments": [], "system_fragments": [], "tools": [], "tool_calls": [], "tool_results": [],
     "attachments": [{"id": "…", "type": "image/jpeg", "path": "…", "url": null, "content_length": null}]}
(older versions write fewer keys; `jq -c '.[]'` makes it one record per line: both are read).

A multi-turn conversation is one trace per response, each with the turns before it as messages: `prompt_json`'s
`messages` when the model plugin logged the request there (llm's OpenAI models log the whole request, system
message and earlier turns included), else the conversation rebuilt from the records of the same
`conversation_id` in the same file that came before it (by `datetime_utc`, then `id`): the system prompt, each
earlier prompt and response, then this prompt. Earlier turns not in the file (`llm logs` shows the last 3 unless
`-n 0`) are not in the trace. Prompt and system fragments are in the trace only through `prompt_json` (`llm logs
--json` cuts their text unless `--expand`). A record that breaks this shape is quarantined with the field at fault.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Iterable

from traces import otel, records, timestamps

FORMAT = "llm_logs"
KEYS = {"conversation_id", "datetime_utc", "response"}  # columns every version of `llm logs --json` writes


def is_record(doc: Any) -> bool:
    return isinstance(doc, dict) and KEYS <= doc.keys() and not {"messages", "choices"} & doc.keys()


def is_document(doc: Any) -> bool:
    """A `llm logs --json` record, or a JSON array that starts with one."""
    return bool(doc) and is_record(doc[0]) if isinstance(doc, list) else is_record(doc)


def _text(rec: dict, key: str) -> str | None:
    value = rec.get(key)
    return otel._typed(value, str, f"`{key}`") if value is not None else None


def _turn_order(rec: dict) -> tuple[str, str]:
    return str(rec.get("datetime_utc")), str(rec.get("id"))


def _conversations(items: list[records.Decoded]) -> dict[str, list[dict]]:
    """conversation_id -> its records in this file, oldest first."""
    by_id = defaultdict(list)
    for _, _, doc, err in items:
        if err is None and isinstance(doc, dict) and isinstance(doc.get("conversation_id"), str):
            by_id[doc["conversation_id"]].append(doc)
    return {cid: sorted(recs, key=_turn_order) for cid, recs in by_id.items()}


def _rebuilt(rec: dict, earlier: list[dict]) -> list[dict]:
    """The request as llm's chat models send it: the system prompt, the earlier turns, this prompt."""
    system, prompt = _text(rec, "system"), _text(rec, "prompt")
    messages = [{"role": "system", "content": system}] if system else []
    for turn in earlier:
        if isinstance(turn.get("prompt"), str) and isinstance(turn.get("response"), str):
            messages += [{"role": "user", "content": turn["prompt"]},
                         {"role": "assistant", "content": turn["response"]}]
    return messages + ([{"role": "user", "content": prompt}] if prompt is not None else [])


def _messages(rec: dict, earlier: list[dict]) -> list[dict]:
    logged = otel._maybe_json(rec.get("prompt_json"))
    if isinstance(logged, dict) and "messages" in logged:
        return otel._as_messages(otel._typed(logged["messages"], list, "`prompt_json.messages`"), "user")
    return _rebuilt(rec, earlier)


def _tool_calls(rec: dict) -> list[dict] | None:
    calls = otel._typed(rec.get("tool_calls") or [], list, "`tool_calls`")
    return [otel.tool_call({**tc, "id": tc.get("tool_call_id")} if isinstance(tc, dict) else tc)
            for tc in calls] or None


def _tools(rec: dict) -> list[dict] | None:
    tools = otel._typed(rec.get("tools") or [], list, "`tools`")
    return [{"type": "function", "function": {"name": t.get("name"), "description": t.get("description"),
                                              "parameters": t.get("input_schema")}}
            if isinstance(t, dict) else t for t in tools] or None


def _metadata(rec: dict) -> dict:
    keys = ("conversation_id", "conversation_name", "duration_ms", "model", "resolved_model")
    meta = {k if k != "model" else "requested_model": rec.get(k) for k in keys}
    attachments = otel._typed(rec.get("attachments") or [], list, "`attachments`")
    if attachments:  # the text of the trace is not all the model saw
        meta["attachments"] = [{k: a.get(k) for k in ("type", "path", "url")} if isinstance(a, dict) else a
                               for a in attachments]
    return {k: v for k, v in meta.items() if v is not None}


def _read(line: int, rec: dict, conversations: dict[str, list[dict]]) -> tuple[dict, None]:
    if not is_record(rec):
        needs = ", ".join(f"`{k}`" for k in sorted(KEYS))
        raise otel.MalformedSpan(f"not a `llm logs --json` record: it needs {needs}")
    _text(rec, "prompt"), _text(rec, "system")  # checked whether or not prompt_json stands for them
    turns = conversations.get(_text(rec, "conversation_id"), [])
    earlier = [t for t in turns if _turn_order(t) < _turn_order(rec)]
    options = otel._typed(otel._maybe_json(rec.get("options_json")) or {}, dict, "`options_json`")
    usage = {k: otel._typed(rec[k], int, f"`{k}`") for k in ("input_tokens", "output_tokens")
             if rec.get(k) is not None}
    src_id, model = rec.get("id"), rec.get("resolved_model") or rec.get("model")
    calls, tools = _tool_calls(rec), _tools(rec)
    return {"line": line, "source_format": FORMAT,
            "src_id": str(otel._typed(src_id, (str, int), "`id`")) if src_id is not None else None,
            "ts": timestamps.parse(rec["datetime_utc"]),
            "model": otel._typed(model, str, "`model`") if model is not None else None,
            "messages": otel._json(_messages(rec, earlier)), "response": _text(rec, "response"),
            "tool_calls": otel._json(calls) if calls else None, "tools": otel._json(tools) if tools else None,
            "params": otel._json(options) if options else None, "usage": otel._json(usage) if usage else None,
            "metadata": otel._json(_metadata(rec)), "feedback": None, "error": None, "raw": ""}, None


def rows(items: Iterable[tuple[int, str]]) -> tuple[list[dict], Counter]:
    """(line, JSON text) records -> (canonical rows, {}): every record is an LLM call (none is skipped)."""
    decoded = records.decoded(items)
    conversations = _conversations(decoded)
    return records.rows(decoded, lambda line, rec: _read(line, rec, conversations), FORMAT, "record")
