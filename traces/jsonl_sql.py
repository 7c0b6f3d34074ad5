"""Validate and extract a batch of raw JSONL lines in DuckDB (no Python loop per line).

Input: a table `lines(line BIGINT, raw VARCHAR)`. Output (`pre_sql`): one row per non-blank line
with the canonical columns that `traces.canonical` finishes (see there), `error` naming the field
when the line is bad. Two line shapes are accepted, decided per line:

- OpenAI Chat Completions log: request fields (`model`, `messages`, `tools`, sampling params) and
  the response (`choices[0].message`, `usage`, `id`, `created`) either flat in one object, or
  nested as `{"request": {...}, "response": {...}}`; plus optional `metadata` and `feedback`.
- `{"messages": [...]}` (OpenAI fine-tuning / chat JSONL): the last message is the response.

Each line is parsed once: `json_extract(raw, [paths])` returns every field in one pass.
"""
from __future__ import annotations

from traces import scrub

SAMPLING = ["temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "seed", "stop",
            "presence_penalty", "frequency_penalty", "response_format", "tool_choice"]

# name -> JSON paths tried in order (flat log, nested request/response log)
FIELDS = {
    "messages": ["$.messages", "$.request.messages"],
    "choices": ["$.choices", "$.response.choices"],
    "model": ["$.model", "$.response.model", "$.request.model"],
    "id": ["$.id", "$.response.id", "$.trace_id"],
    "tools": ["$.tools", "$.request.tools"],
    "usage": ["$.usage", "$.response.usage"],
    "metadata": ["$.metadata", "$.request.metadata"],
    "feedback": ["$.feedback"],
    "created": ["$.created", "$.response.created"],
    "timestamp": ["$.timestamp"],
    **{p: [f"$.{p}", f"$.request.{p}"] for p in SAMPLING},
}


def _paths() -> tuple[list[str], dict[str, list[int]]]:
    paths, index = [], {}
    for name, ps in FIELDS.items():
        index[name] = []
        for p in ps:
            index[name].append(len(paths) + 1)  # DuckDB lists are 1-based
            paths.append(p)
    return paths, index


def _field(index: dict, name: str) -> str:
    """First non-null JSON value among the field's paths (f is the extracted list)."""
    items = [f"f[{i}]" for i in index[name]]
    return items[0] if len(items) == 1 else f"coalesce({', '.join(items)})"


MACROS = [
    # text of a message content: a string, or the text parts of a list of parts
    """CREATE OR REPLACE TEMP MACRO content_text(c) AS CASE json_type(c)
         WHEN 'VARCHAR' THEN c ->> '$'
         WHEN 'ARRAY' THEN array_to_string(list_transform(
             list_filter(json_extract(c, '$[*]'), lambda p: (p ->> 'type') = 'text'), lambda p: p ->> 'text'), chr(10))
         ELSE NULL END""",
    # JSON null and missing are the same to us
    "CREATE OR REPLACE TEMP MACRO jnull(j) AS CASE WHEN j IS NULL OR json_type(j) = 'NULL' THEN NULL ELSE j END",
]


def pre_sql(scrub_secrets: bool) -> str:
    paths, index = _paths()
    raw = scrub.secrets_sql("raw") if scrub_secrets else "raw"
    path_list = "[" + ", ".join("'" + p + "'" for p in paths) + "]"
    params = ", ".join(f"'{p}', {_field(index, p)}" for p in SAMPLING)
    g = lambda name: _field(index, name)  # noqa: E731
    return f"""
    WITH s AS (
        SELECT line, {raw} AS raw FROM lines WHERE trim(raw) <> ''
    ), e AS (
        SELECT line, raw, ltrim(raw)[1] = '{{' AS is_obj, try(json_extract(raw, {path_list})) AS f FROM s
    ), x AS (
        SELECT line, raw, is_obj, f IS NOT NULL AS ok,
               jnull({g('messages')}) AS msgs, jnull({g('choices')}) AS choices,
               jnull({g('model')}) AS model_j, jnull({g('id')}) AS id_j,
               jnull({g('tools')}) AS tools, jnull({g('usage')}) AS usage,
               jnull({g('metadata')}) AS metadata, jnull({g('feedback')}) AS feedback,
               jnull({g('created')}) AS created, jnull({g('timestamp')}) AS tstamp,
               json_merge_patch('{{}}', json_object({params})) AS params
        FROM e
    ), y AS (
        SELECT *, choices IS NOT NULL AS is_chat,
               CASE WHEN choices IS NOT NULL THEN json_extract(choices, '$[0].message')
                    WHEN json_type(msgs) = 'ARRAY' THEN json_extract(msgs, '$[' || (json_array_length(msgs) - 1) || ']')
               END AS reply
        FROM x
    )
    SELECT line,
        CASE WHEN is_chat THEN 'openai_chat' ELSE 'messages' END AS source_format,
        CASE json_type(id_j) WHEN 'VARCHAR' THEN id_j ->> '$' WHEN 'BIGINT' THEN id_j::VARCHAR
                             WHEN 'UBIGINT' THEN id_j::VARCHAR END AS src_id,
        coalesce(CASE WHEN json_type(created) IN ('BIGINT', 'UBIGINT', 'DOUBLE')
                      THEN to_timestamp(created::DOUBLE)::TIMESTAMP END,
                 try_cast(tstamp ->> '$' AS TIMESTAMP)) AS ts,
        model_j ->> '$' AS model,
        CASE WHEN is_chat THEN msgs::VARCHAR
             WHEN json_type(msgs) = 'ARRAY' THEN to_json(list_slice(json_extract(msgs, '$[*]'), 1, -2))::VARCHAR
        END AS messages,
        content_text(reply -> 'content') AS response,
        jnull(reply -> 'tool_calls')::VARCHAR AS tool_calls,
        tools::VARCHAR AS tools,
        CASE WHEN params = '{{}}' THEN NULL ELSE params::VARCHAR END AS params,
        usage::VARCHAR AS usage, metadata::VARCHAR AS metadata, feedback::VARCHAR AS feedback,
        CASE
            WHEN NOT is_obj AND ok THEN 'line is not a JSON object'
            WHEN NOT ok THEN 'invalid JSON'
            WHEN msgs IS NULL THEN 'missing field `messages`'
            WHEN json_type(msgs) <> 'ARRAY' THEN 'field `messages` must be an array, got ' || json_type(msgs)
            WHEN is_chat AND json_type(choices) <> 'ARRAY' THEN 'field `choices` must be an array, got ' || json_type(choices)
            WHEN is_chat AND json_array_length(choices) = 0 THEN 'empty response: `choices` is empty'
            WHEN is_chat AND json_type(reply) IS DISTINCT FROM 'OBJECT' THEN 'field `choices[0].message` must be an object'
            WHEN NOT is_chat AND json_array_length(msgs) < 2 THEN
                 'field `messages` needs a prompt and a final assistant reply (no `choices` given)'
            WHEN NOT is_chat AND json_type(reply) <> 'OBJECT' THEN 'field `messages[-1]` must be an object'
            WHEN NOT is_chat AND (reply ->> 'role') IS DISTINCT FROM 'assistant' THEN
                 'field `messages[-1].role` must be "assistant" (the response), got ' || coalesce(reply ->> 'role', 'none')
            WHEN json_type(reply, '$.content') NOT IN ('VARCHAR', 'ARRAY', 'NULL') THEN
                 'field `' || CASE WHEN is_chat THEN 'choices[0].message' ELSE 'messages[-1]' END ||
                 '.content` must be a string or a list of parts, got ' || json_type(reply, '$.content')
            WHEN model_j IS NOT NULL AND json_type(model_j) <> 'VARCHAR' THEN
                 'field `model` must be a string, got ' || json_type(model_j)
        END AS error,
        raw
    FROM y
    """
