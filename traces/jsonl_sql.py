"""Validate and extract a batch of raw JSONL lines in DuckDB (no Python loop per line).

Input: a table `lines(line BIGINT, raw VARCHAR)`. Output (`checked_sql`): the temp table `checked`,
one row per non-blank line with the canonical columns, the prompt, and `error` naming the field
when the line is bad (see traces.canonical, which stores it). Two line shapes are accepted, decided per line:

- OpenAI Chat Completions log: request fields (`model`, `messages`, `tools`, sampling params) and
  the response (`choices[0].message`, `usage`, `id`, `created`) either flat in one object, or
  nested as `{"request": {...}, "response": {...}}`; plus optional `metadata` and `feedback`.
- `{"messages": [...]}` (OpenAI fine-tuning / chat JSONL): the last message is the response.

Each line is parsed twice in all: `json_extract_string(raw, [paths])` and `json_type(raw, [paths])`
return every field's text and JSON type in one pass each (re-parsing extracted values was 5x slower).
"""
from __future__ import annotations

from traces import scrub, timestamps

SAMPLING = ["temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
            "presence_penalty", "frequency_penalty", "response_format", "tool_choice"]

# name -> JSON paths tried in order (flat log first, then the nested request/response log)
FIELDS = {
    "messages": ["$.messages", "$.request.messages"],
    "choices": ["$.choices", "$.response.choices"],
    "choice0": ["$.choices[0]", "$.response.choices[0]"],
    "reply": ["$.choices[0].message", "$.response.choices[0].message"],
    "reply_content": ["$.choices[0].message.content", "$.response.choices[0].message.content"],
    "reply_tool_calls": ["$.choices[0].message.tool_calls", "$.response.choices[0].message.tool_calls"],
    # the request's last message (chat logs) and, for {"messages"} lines, the last two
    "last_role": ["$.messages[#-1].role", "$.request.messages[#-1].role"],
    "last_content": ["$.messages[#-1].content", "$.request.messages[#-1].content"],
    "last_tool_calls": ["$.messages[#-1].tool_calls"],
    "prev_role": ["$.messages[#-2].role"],
    "prev_content": ["$.messages[#-2].content"],
    "model": ["$.model", "$.response.model", "$.request.model"],
    "id": ["$.id", "$.response.id", "$.trace_id"],
    "tools": ["$.tools", "$.request.tools"],
    "usage": ["$.usage", "$.response.usage"],
    "metadata": ["$.metadata", "$.request.metadata"],
    "feedback": ["$.feedback"],
    "created": ["$.created", "$.response.created"],
    "timestamp": ["$.timestamp"],
    "request": ["$.request"],
    **{p: [f"$.{p}"] for p in SAMPLING},
}
# fields whose JSON type is needed but whose text is not: serializing them (~1 KB of choices per
# line) cost more than parsing the line, so they stay out of the values list (v) and their v is NULL
TYPE_ONLY = {"choices", "choice0", "reply"}


def _paths() -> list[str]:
    return [p for ps in FIELDS.values() for p in ps]


def _value_paths() -> list[str]:
    return [p if name not in TYPE_ONLY else "$.__mend_never__" for name, ps in FIELDS.items() for p in ps]


def _pick(name: str, paths: list[str]) -> tuple[str, str]:
    """(value, type) of the first path of `name` present: v/t are the per-line lists of all paths."""
    idx = [paths.index(p) + 1 for p in FIELDS[name]]  # DuckDB lists are 1-based
    if len(idx) == 1:
        return f"v[{idx[0]}]", f"t[{idx[0]}]"
    first = " ".join(f"WHEN t[{i}] IS NOT NULL AND t[{i}] <> 'NULL' THEN {i}" for i in idx)
    return f"v[coalesce(CASE {first} END, {idx[0]})]", f"t[coalesce(CASE {first} END, {idx[0]})]"


MACROS = [
    # text of a message content (JSON): a string, or the text parts of a list of parts
    """CREATE OR REPLACE TEMP MACRO content_text(c) AS CASE json_type(c)
         WHEN 'VARCHAR' THEN c ->> '$'
         WHEN 'ARRAY' THEN array_to_string(list_transform(
             list_filter(json_extract(c, '$[*]'), lambda p: (p ->> 'type') = 'text'), lambda p: p ->> 'text'), chr(10))
         ELSE NULL END""",
    # the same, from a value and its JSON type as json_extract_string / json_type give them
    """CREATE OR REPLACE TEMP MACRO typed_text(v, t) AS CASE t
         WHEN 'VARCHAR' THEN v WHEN 'ARRAY' THEN content_text(v::JSON) ELSE NULL END""",
    # last user message's text, the slow general way (when it is not simply the last message)
    """CREATE OR REPLACE TEMP MACRO last_user_text(msgs) AS content_text(
         list_filter(json_extract(msgs, '$[*]'), lambda m: (m ->> 'role') = 'user')[-1] -> 'content')""",
    "CREATE OR REPLACE TEMP MACRO jnull(j) AS CASE WHEN j IS NULL OR json_type(j) = 'NULL' THEN NULL ELSE j END",
    *timestamps.MACROS,
    # a time from a JSON value and its type: epoch number (unit by magnitude) or ISO string (offset -> UTC)
    """CREATE OR REPLACE TEMP MACRO typed_ts(v, t) AS CASE
         WHEN t IN ('BIGINT', 'UBIGINT', 'DOUBLE') THEN try(epoch_ts(v::DOUBLE)) WHEN t = 'VARCHAR' THEN iso_ts(v) END""",
]


# A JSON encoder may write "/" as "\/" (or any character as \uXXXX), which would split a token the
# scrubber must see whole: such lines are decoded and re-serialized (compact) first; an invalid one
# only gets "\/" undone. Lines without a backslash escape skip this (no third parse).
DECODED_RAW = ("(CASE WHEN contains(raw, '\\/') OR contains(raw, '\\u') "
               "THEN coalesce(try(json(raw))::VARCHAR, replace(raw, '\\/', '/')) ELSE raw END)")


def checked_sql(scrub_secrets: bool) -> str:
    """`lines` -> the `checked` table (canonical columns + prompt + error), two parses per line.

    json_extract_string / json_type with a list of paths parse a line once each and return every
    field's text and JSON type; everything below works on those lists, not on re-parsed JSON.
    """
    paths = _paths()
    # Arrow strings keep their newline (traces.readers._split); JSON ignores it, and DuckDB's trim with
    # a character set is ~30x slower than the JSON parse, so it is only stripped from quarantined lines
    raw = scrub.secrets_sql(DECODED_RAW) if scrub_secrets else "raw"
    plist = "[" + ", ".join("'" + p + "'" for p in paths) + "]"
    vlist = "[" + ", ".join("'" + p + "'" for p in _value_paths()) + "]"
    f = {name: _pick(name, paths) for name in FIELDS}
    V = {k: v for k, (v, _) in f.items()}  # noqa: N806
    T = {k: t for k, (_, t) in f.items()}  # noqa: N806
    params = ", ".join(f"'{p}', CASE WHEN {T[p]} = 'VARCHAR' THEN to_json({V[p]}) ELSE {V[p]}::JSON END"
                       for p in SAMPLING)
    return f"""
    CREATE OR REPLACE TEMP TABLE checked AS
    -- raw is kept for quarantined lines only: copying every 1 KB line into the table cost 25% of the time
    SELECT * REPLACE (CASE WHEN error IS NOT NULL THEN raw END AS raw) FROM (
    WITH s AS (
        -- blank lines (whitespace only) are not read; only a line that starts with whitespace pays for the trim
        SELECT line, {raw} AS raw FROM lines WHERE raw NOT IN ('', chr(10), chr(13), chr(13) || chr(10))
            AND (ascii(raw) NOT IN (9, 13, 32) OR trim(raw, ' ' || chr(9) || chr(10) || chr(13)) <> '')
    ), e AS (
        SELECT line, raw, (starts_with(raw, '{{') OR starts_with(ltrim(raw), '{{')) AS is_obj,
               try(json_extract_string(raw, {vlist})) AS v, try(json_type(raw, {plist})) AS t
        FROM s
    ), x AS (
        SELECT line, raw, is_obj, v IS NOT NULL AS ok,
               {T['choices']} IS NOT NULL AND {T['choices']} <> 'NULL' AS is_chat,
               {V['messages']} AS msgs, {T['messages']} AS msgs_t,
               CASE WHEN {T['messages']} = 'ARRAY' THEN json_array_length({V['messages']}) END AS n_msgs,
               CASE WHEN {T['messages']} = 'ARRAY' THEN len(list_filter(json_type({V['messages']}, '$[*].role'),
                    lambda r: r = 'VARCHAR')) END AS n_roles,
               {T['choices']} AS choices_t, {T['choice0']} IS NOT NULL AS has_choice0,
               {T['reply']} AS reply_t,
               {V['reply_content']} AS rc, {T['reply_content']} AS rc_t,
               {V['reply_tool_calls']} AS rtc, {T['reply_tool_calls']} AS rtc_t,
               {V['last_role']} AS last_role, {V['last_content']} AS lc, {T['last_content']} AS lc_t,
               {V['last_tool_calls']} AS ltc, {T['last_tool_calls']} AS ltc_t,
               {V['prev_role']} AS prev_role, {V['prev_content']} AS pc, {T['prev_content']} AS pc_t,
               {V['model']} AS model, {T['model']} AS model_t,
               CASE WHEN {T['id']} IN ('VARCHAR', 'BIGINT', 'UBIGINT') THEN {V['id']} END AS src_id,
               {V['tools']} AS tools, {T['tools']} AS tools_t, {V['usage']} AS usage, {T['usage']} AS usage_t,
               {V['metadata']} AS metadata, {T['metadata']} AS metadata_t,
               {V['feedback']} AS feedback, {T['feedback']} AS feedback_t,
               coalesce(typed_ts({V['created']}, {T['created']}), typed_ts({V['timestamp']}, {T['timestamp']})) AS ts,
               CASE WHEN {T['request']} = 'OBJECT' THEN json_merge_patch({V['request']},
                        '{{"messages": null, "tools": null, "model": null, "metadata": null}}')
                    ELSE json_merge_patch('{{}}', json_object({params})) END AS params
        FROM e
    ), y AS (
        SELECT *,
            CASE WHEN is_chat THEN typed_text(rc, rc_t) ELSE typed_text(lc, lc_t) END AS response,
            CASE WHEN is_chat THEN (CASE WHEN rtc_t = 'NULL' THEN NULL ELSE rtc END)
                 ELSE (CASE WHEN ltc_t = 'NULL' THEN NULL ELSE ltc END) END AS tool_calls,
            CASE WHEN is_chat THEN (CASE WHEN last_role = 'user' AND lc_t = 'VARCHAR' THEN lc
                                         WHEN msgs_t = 'ARRAY' THEN last_user_text(msgs::JSON) END)
                 ELSE (CASE WHEN prev_role = 'user' AND pc_t = 'VARCHAR' THEN pc
                            WHEN msgs_t = 'ARRAY' AND n_msgs >= 2
                            THEN last_user_text(to_json(list_slice(json_extract(msgs, '$[*]'), 1, -2))) END)
            END AS prompt
        FROM x
    )
    SELECT line,
        CASE WHEN is_chat THEN 'openai_chat' ELSE 'messages' END AS source_format,
        src_id, ts, model,
        CASE WHEN is_chat THEN msgs
             WHEN msgs_t = 'ARRAY' AND n_msgs >= 2 THEN to_json(list_slice(json_extract(msgs, '$[*]'), 1, -2))::VARCHAR
        END AS messages,
        prompt, response, tool_calls,
        CASE WHEN tools_t = 'ARRAY' THEN tools END AS tools,
        CASE WHEN params = '{{}}' THEN NULL ELSE params::VARCHAR END AS params,
        CASE WHEN usage_t = 'OBJECT' THEN usage END AS usage,
        CASE WHEN metadata_t = 'OBJECT' THEN metadata END AS metadata,
        CASE WHEN feedback_t = 'OBJECT' THEN feedback END AS feedback,
        CASE
            WHEN NOT is_obj AND ok THEN 'line is not a JSON object'
            WHEN NOT ok THEN 'invalid JSON'
            WHEN msgs_t IS NULL OR msgs_t = 'NULL' THEN 'missing field `messages`'
            WHEN msgs_t <> 'ARRAY' THEN 'field `messages` must be an array, got ' || msgs_t
            WHEN n_roles <> n_msgs THEN 'field `messages[].role` must be a string in every message'
            WHEN is_chat AND choices_t <> 'ARRAY' THEN 'field `choices` must be an array, got ' || choices_t
            WHEN is_chat AND NOT has_choice0 THEN 'empty response: `choices` is empty'
            WHEN is_chat AND reply_t IS DISTINCT FROM 'OBJECT' THEN 'field `choices[0].message` must be an object'
            WHEN NOT is_chat AND n_msgs < 2 THEN
                 'field `messages` needs a prompt and a final assistant reply (no `choices` given)'
            WHEN NOT is_chat AND last_role IS DISTINCT FROM 'assistant' THEN
                 'field `messages[-1].role` must be "assistant" (the response), got ' || coalesce(last_role, 'none')
            WHEN (CASE WHEN is_chat THEN rc_t ELSE lc_t END) NOT IN ('VARCHAR', 'ARRAY', 'NULL') THEN
                 'field `' || CASE WHEN is_chat THEN 'choices[0].message' ELSE 'messages[-1]' END ||
                 '.content` must be a string or a list of parts, got ' || CASE WHEN is_chat THEN rc_t ELSE lc_t END
            WHEN prompt IS NULL OR trim(prompt) = '' THEN 'field `messages` has no user message with text'
            WHEN tool_calls IS NOT NULL AND json_type(tool_calls) <> 'ARRAY' THEN 'field `tool_calls` must be an array'
            WHEN trim(coalesce(response, '')) = '' AND coalesce(json_array_length(tool_calls), 0) = 0 THEN
                 'empty response: no content and no tool_calls'
            WHEN model_t NOT IN ('VARCHAR', 'NULL') THEN 'field `model` must be a string, got ' || model_t
            WHEN tools_t NOT IN ('ARRAY', 'NULL') THEN 'field `tools` must be an array, got ' || tools_t
            WHEN metadata_t NOT IN ('OBJECT', 'NULL') THEN 'field `metadata` must be an object, got ' || metadata_t
            WHEN feedback_t NOT IN ('OBJECT', 'NULL') THEN 'field `feedback` must be an object, got ' || feedback_t
            WHEN usage_t NOT IN ('OBJECT', 'NULL') THEN 'field `usage` must be an object, got ' || usage_t
        END AS error,
        raw
    FROM y)
    """
