"""Generic assertions and the tool-call check, registered in evals.checks.REGISTRY.

Arguments (suite YAML `args:`):
  contains / not_contains: text (a string or a list: all must / none may appear), case_sensitive (true)
  regex: pattern, flags ("i", "m", "s" letters), mode ("search" | "fullmatch"), negate (false)
  equals / starts_with / ends_with: text, strip (true), case_sensitive (true)
  max_words: n (words are whitespace-separated tokens)
  valid_json: allow_fences (false: a ```json fenced block counts only when true)
  json_schema: schema (else the request's response_format.json_schema.schema; no schema -> not applicable)
  tool_calls: required (true: at least one call), name (the function that must be called, optional)
  fluent: no arguments; the quality filter (evals/quality.py) keeps the answer: no loops, letter soup, runs,
    leaked chat turns or another language than asked (what the gate's degeneration guard counts)
"""
from __future__ import annotations

import json
import re

from evals.checks import CheckResult, register


def _ok(passed: bool, reason: str) -> CheckResult:
    return CheckResult(bool(passed), 1.0 if passed else 0.0, reason)


def _short(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[:n] + "...")


def _texts(args: dict) -> list[str]:
    text = args.get("text")
    if text is None:
        raise ValueError("argument 'text' is required")
    return [text] if isinstance(text, str) else [str(t) for t in text]


def _fold(s: str, args: dict) -> str:
    return s if args.get("case_sensitive", True) else s.lower()


@register("contains")
def contains(response, args, trace):
    missing = [t for t in _texts(args) if _fold(t, args) not in _fold(response, args)]
    if missing:
        return _ok(False, f"contains: required {', '.join(map(_short, missing))}; not found in the response")
    return _ok(True, f"contains: found {', '.join(map(_short, _texts(args)))}")


@register("not_contains")
def not_contains(response, args, trace):
    present = [t for t in _texts(args) if _fold(t, args) in _fold(response, args)]
    if present:
        return _ok(False, f"not_contains: forbidden {', '.join(map(_short, present))} found in the response")
    return _ok(True, f"not_contains: none of {', '.join(map(_short, _texts(args)))} found")


_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL}


@register("regex")
def regex(response, args, trace):
    flags = 0
    for letter in args.get("flags", ""):
        flags |= _FLAGS[letter]
    pattern = re.compile(args["pattern"], flags)
    fullmatch = args.get("mode", "search") == "fullmatch"
    match = pattern.fullmatch(response) if fullmatch else pattern.search(response)
    passed = (match is None) if args.get("negate") else (match is not None)
    how = "must not match" if args.get("negate") else "must match"
    found = f"matched {_short(match.group(0))}" if match else "no match"
    return _ok(passed, f"regex: {how} /{args['pattern']}/{args.get('flags', '')}; {found}")


def _prep(text: str, args: dict) -> str:
    text = text.strip() if args.get("strip", True) else text
    return _fold(text, args)


@register("equals", vouches=True)  # the answer is fixed: nothing else is left to vouch for
def equals(response, args, trace):
    want = args["text"]
    passed = _prep(response, args) == _prep(want, args)
    return _ok(passed, f"equals: required {_short(want)}; found {_short(response)}")


@register("starts_with")
def starts_with(response, args, trace):
    want = args["text"]
    passed = _prep(response, args).startswith(_prep(want, args))
    return _ok(passed, f"starts_with: required {_short(want)}; starts with {_short(response.strip()[:len(want) + 10])}")


@register("ends_with")
def ends_with(response, args, trace):
    want = args["text"]
    passed = _prep(response, args).endswith(_prep(want, args))
    return _ok(passed, f"ends_with: required {_short(want)}; ends with {_short(response.strip()[-len(want) - 10:])}")


@register("max_words")
def max_words(response, args, trace):
    n, found = int(args["n"]), len(response.split())
    return _ok(found <= n, f"max_words: at most {n} words; found {found}")


def _strip_fences(text: str) -> str:
    m = re.fullmatch(r"\s*```(?:json)?\s*\n(.*?)\n?```\s*", text, re.DOTALL)
    return m.group(1) if m else text


def _parse_json(response: str, args: dict):
    """(value, None) or (None, error text)."""
    text = _strip_fences(response) if args.get("allow_fences") else response
    try:
        return json.loads(text), None
    except json.JSONDecodeError as e:
        return None, f"invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"


@register("valid_json")
def valid_json(response, args, trace):
    value, error = _parse_json(response, args)
    if error:
        return _ok(False, f"valid_json: {error}")
    return _ok(True, f"valid_json: parsed a JSON {type(value).__name__}")


def _request_schema(trace: dict):
    fmt = (_as_obj(trace.get("params")) or {}).get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("schema")


def _schema_errors(value, schema) -> list[str]:
    import jsonschema
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    errors = sorted(cls(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


@register("json_schema")
def json_schema(response, args, trace):
    schema = args.get("schema") or _request_schema(trace)
    if schema is None:
        return None  # nothing to validate against on this trace
    value, error = _parse_json(response, args)
    if error:
        return _ok(False, f"json_schema: {error}")
    errors = _schema_errors(value, schema)
    if errors:
        return _ok(False, f"json_schema: {len(errors)} violation(s): {'; '.join(errors[:3])}")
    return _ok(True, "json_schema: the JSON matches the schema")


# ---------------------------------------------------------------- tool calls

def _as_obj(value):
    """DuckDB JSON columns arrive as strings; accept both."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return None
    return value


_TOOL_CALL_TAG = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def calls_from_text(text: str) -> list[dict]:
    """Tool calls written as text (`<tool_call>{"name":..., "arguments":...}</tool_call>`, the way chat
    templates such as SmolLM2's render them) -> OpenAI tool_calls; used for regenerated responses."""
    calls = []
    for i, body in enumerate(_TOOL_CALL_TAG.findall(text or "")):
        obj = _as_obj(body)
        if not isinstance(obj, dict):
            calls.append({"id": f"text_{i}", "type": "function", "function": {"name": None, "arguments": body}})
            continue
        arguments = obj.get("arguments", obj.get("parameters", {}))
        calls.append({"id": f"text_{i}", "type": "function", "function": {
            "name": obj.get("name"), "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}})
    return calls


def _offered(tools) -> dict[str, dict]:
    """name -> JSON Schema of the parameters, for each function the request offered."""
    out = {}
    for tool in _as_obj(tools) or []:
        fn = tool.get("function", tool) if isinstance(tool, dict) else {}
        if fn.get("name"):
            out[fn["name"]] = fn.get("parameters") or {"type": "object"}
    return out


def _call_problem(call, offered: dict) -> str | None:
    fn = call.get("function") if isinstance(call, dict) else None
    if not isinstance(fn, dict) or not fn.get("name"):
        return "a call without a function name"
    name = fn["name"]
    if name not in offered:
        return f"{name!r} is not among the offered tools ({', '.join(offered) or 'none'})"
    arguments = fn.get("arguments", "{}")
    args = _as_obj(arguments) if isinstance(arguments, str) else arguments
    if not isinstance(args, dict):
        return f"{name}: arguments are not a JSON object: {_short(str(arguments))}"
    errors = _schema_errors(args, offered[name])
    return f"{name}: arguments violate the schema: {'; '.join(errors[:3])}" if errors else None


@register("tool_calls")
def tool_calls(response, args, trace):
    calls = _as_obj(trace.get("tool_calls"))
    if calls is None and trace.get("tool_calls") is not None:
        return _ok(False, "tool_calls: the tool_calls field is not valid JSON")
    calls = calls or calls_from_text(response)
    offered = _offered(trace.get("tools"))
    if not calls:
        required = args.get("required", True)
        return _ok(not required, "tool_calls: no tool call in the response" + ("" if required else " (none required)"))
    problems = [p for p in (_call_problem(c, offered) for c in calls) if p]
    want = args.get("name")
    names = [(c.get("function") or {}).get("name") for c in calls if isinstance(c, dict)]
    if want and want not in names:
        problems.append(f"required a call to {want!r}; called {', '.join(map(str, names))}")
    if problems:
        return _ok(False, f"tool_calls: {'; '.join(problems)}")
    return _ok(True, f"tool_calls: {len(calls)} valid call(s): {', '.join(map(str, names))}")


@register("fluent")
def fluent(response, args, trace):
    from evals.quality import fluency
    from traces.store import json_value
    ok, why = fluency(response or "", trace.get("prompt") or "", json_value(trace.get("metadata")) or {})
    return _ok(ok, "fluent: the quality filter keeps it" if ok else f"fluent: {why}")
