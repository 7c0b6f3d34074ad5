"""A store whose export has every kind of row the output formats handle: accepted examples with preference pairs
(one whose seed request offered tools), and replayed passing traffic with tool calls and tool results (one of them
a tool result without its call); plus the OpenAI fine-tuning formats' fields as JSON schemas."""
import json

from builders.synth import candidate, prompts, seed_store

from traces import store

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}},
         {"type": "web_search"}]  # a built-in tool: no place in the fine-tuning format
TOOL_TURNS = [
    {"role": "developer", "content": "You can look up the weather."},
    {"role": "user", "content": "What is the weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    {"role": "user", "content": "And in Lyon? Answer without commas."},
]
LOGGED_CALLS = [{"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\": \"Lyon\"}"}}]
ORPHAN_RESULT = [{"role": "user", "content": "Draft a short email to a colleague."},
                 {"role": "tool", "tool_call_id": "call_9", "content": "nothing"},
                 {"role": "user", "content": "Thanks for covering my shift."}]


def build_store() -> dict:
    """t1, t2 fail c1's check; two accepted examples (one for t1's own prompt, one composed from t2's base) with 3
    pairs; t3 (a tool conversation, tools offered, a logged tool call) and t4 (a tool result without its call) are
    passing seed traffic, replayed."""
    seed_store()
    with store.connect() as con:
        con.execute("UPDATE traces SET messages = json(messages)")
    own, composed = prompts()
    rows = {"good": candidate(own, "Dear landlord when will the dishwasher be repaired", "h1", "accepted"),
            "bad": candidate(own, "Dear landlord, when will it be fixed?", "h2"),
            "cgood": candidate(composed, "The small fox found a lantern and slept well", "h4", "accepted"),
            "cbad": candidate(composed, "The fox, being small, was afraid.", "h5")}
    with store.connect() as con:
        con.execute("UPDATE traces SET tools = ?::JSON WHERE trace_id = 't1'", [json.dumps(TOOLS)])
        con.execute("UPDATE traces SET messages = ?::JSON, tools = ?::JSON, tool_calls = ?::JSON, "
                    "response = 'It is 16C in Lyon' WHERE trace_id = 't3'",
                    [json.dumps(TOOL_TURNS), json.dumps(TOOLS), json.dumps(LOGGED_CALLS)])
        con.execute("UPDATE traces SET messages = ?::JSON WHERE trace_id = 't4'", [json.dumps(ORPHAN_RESULT)])
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, split, status, started_at,
                       finished_at) VALUES ('logged', 'if', '1', 'logged', 'all', 'complete', now(), now())""")
        con.executemany("INSERT INTO results (run_id, trace_id, check_idx, check_id, passed) VALUES (?, ?, 0, 'x', ?)",
                        [("logged", "t1", False), ("logged", "t2", False), ("logged", "t3", True),
                         ("logged", "t4", True)])
    return rows


# ---------- the OpenAI fine-tuning formats' fields (platform.openai.com/docs/api-reference/fine-tuning/input) ----

_TEXT = {"type": "string"}
_PARTS = {"type": "array", "minItems": 1, "items": {
    "type": "object", "required": ["type", "text"], "additionalProperties": False,
    "properties": {"type": {"const": "text"}, "text": _TEXT}}}
_CONTENT = {"anyOf": [_TEXT, _PARTS]}
_TOOL_CALL = {"type": "object", "required": ["id", "type", "function"], "additionalProperties": False, "properties": {
    "id": _TEXT, "type": {"const": "function"},
    "function": {"type": "object", "required": ["name", "arguments"], "additionalProperties": False,
                 "properties": {"name": _TEXT, "arguments": _TEXT}}}}


def _message(role, required=(), **props):
    return {"type": "object", "required": ["role", *required], "additionalProperties": False,
            "properties": {"role": {"const": role}, **props}}


ASSISTANT = _message("assistant", content={"anyOf": [_CONTENT, {"type": "null"}]}, name=_TEXT, refusal=_TEXT,
                     tool_calls={"type": "array", "minItems": 1, "items": _TOOL_CALL}, weight={"enum": [0, 1]})
ASSISTANT["anyOf"] = [{"required": ["tool_calls"]},
                      {"required": ["content"], "properties": {"content": {"not": {"type": "null"}}}}]
MESSAGE = {"oneOf": [_message("system", ["content"], content=_CONTENT, name=_TEXT),
                     _message("user", ["content"], content=_CONTENT, name=_TEXT),
                     ASSISTANT,
                     _message("tool", ["content", "tool_call_id"], content=_CONTENT, tool_call_id=_TEXT)]}
TOOL = {"type": "object", "required": ["type", "function"], "additionalProperties": False, "properties": {
    "type": {"const": "function"},
    "function": {"type": "object", "required": ["name"], "additionalProperties": False, "properties": {
        "name": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}, "description": _TEXT,
        "parameters": {"type": "object"}, "strict": {"type": ["boolean", "null"]}}}}}
MESSAGES = {"type": "array", "minItems": 1, "items": MESSAGE}
TOOLS_FIELD = {"type": "array", "minItems": 1, "items": TOOL}
# supervised: messages and tools, nothing else (the format also has parallel_tool_calls and functions: not written)
SUPERVISED = {"type": "object", "required": ["messages"], "additionalProperties": False,
              "properties": {"messages": MESSAGES, "tools": TOOLS_FIELD}}
ONE_ANSWER = {"type": "array", "minItems": 1, "maxItems": 1, "items": ASSISTANT}
PREFERENCE = {"type": "object", "required": ["input", "preferred_output", "non_preferred_output"],
              "additionalProperties": False, "properties": {
                  "input": {"type": "object", "required": ["messages"], "additionalProperties": False,
                            "properties": {"messages": MESSAGES, "tools": TOOLS_FIELD}},
                  "preferred_output": ONE_ANSWER, "non_preferred_output": ONE_ANSWER}}


def sequence_problems(messages: list, final: str) -> list[str]:
    """What the API checks beyond the fields: an assistant turn to learn from (a supervised line ends with it), each
    tool result right after the assistant turn whose call it answers."""
    problems, calls = [], None
    for i, m in enumerate(messages):
        if m["role"] == "tool":
            if calls is None or m["tool_call_id"] not in calls:
                problems.append(f"messages[{i}]: tool result without its call")
            continue
        calls = {c["id"] for c in m.get("tool_calls", [])} if m["role"] == "assistant" else None
    if final == "assistant" and messages[-1]["role"] != "assistant":
        problems.append("does not end with the assistant's answer")
    if final == "prompt" and messages[-1]["role"] not in ("user", "tool"):
        problems.append("the prompt does not end with a user turn or a tool result")
    return problems
