"""Every check type: pass/fail, scores and the human-readable reasons."""
import json
import sys
import textwrap

import pytest

from evals import checks, ifeval
from evals.checks import CheckResult, run_check, verify_instructions


def rc(name, response, args=None, trace=None):
    return run_check(name, response, args or {}, trace or {"prompt": "p"})


# ------------------------------------------------------------------ IFEval (lm-eval's checkers)

def test_ifeval_ids_are_lm_evals():
    from lm_eval.tasks.ifeval import instructions_registry
    assert set(ifeval.INSTRUCTION_IDS) == set(instructions_registry.INSTRUCTION_DICT)
    assert all(i in checks.REGISTRY for i in ifeval.INSTRUCTION_IDS)


NO_COMMA_SENTENCE = "In your entire response, refrain from the use of any commas."


def test_bridge_strips_instructions_and_recovers_the_base_request():
    md = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
    prompt = f"Write a story   about a detective. {NO_COMMA_SENTENCE}"
    assert ifeval.strip_instructions(prompt, md) == ("Write a story about a detective.", True)
    assert ifeval.base_request(prompt, md) == "Write a story about a detective."
    assert ifeval.base_request(prompt, {**md, "base_request": "B"}) == "B"  # the writer's own base text wins
    # a sentence that is not there, an unknown id, no instructions: no guess where the request ends
    assert ifeval.strip_instructions("Write without commas.", md) == ("Write without commas.", False)
    assert ifeval.base_request("Write without commas.", md) is None
    unknown = {"instruction_id_list": ["my:check"], "kwargs": [{}]}
    assert ifeval.strip_instructions(prompt, unknown) == (prompt, False)
    assert ifeval.base_request(prompt, {}) is None


def test_bridge_builders_are_seeded_and_leave_global_random_alone():
    import random
    random.seed(7)
    before = random.getstate()
    a = ifeval.fresh_instruction("keywords:existence", "Write a poem.", "seed-1")
    assert random.getstate() == before
    assert a == ifeval.fresh_instruction("keywords:existence", "Write a poem.", "seed-1")
    assert {str(ifeval.fresh_instruction("keywords:existence", "x", f"s{i}")) for i in range(5)} != {str(a)}
    desc, kwargs = a
    assert ifeval.build_instruction("keywords:existence", kwargs, "")[1] == desc  # the kwargs rebuild it
    assert ifeval.fresh_instruction("my_check", "x", "s") is None
    repeat = ifeval.fresh_instruction("combination:repeat_prompt", "Say hi.", "s")
    assert repeat[1] == {"prompt_to_repeat": "Say hi."}


def test_bridge_conflicts_and_docs_come_from_lm_eval():
    from lm_eval.tasks.ifeval import instructions_registry
    assert ifeval.registry() is instructions_registry.INSTRUCTION_DICT
    assert ifeval.conflicts()["detectable_format:json_format"] == set(
        instructions_registry.INSTRUCTION_CONFLICTS["detectable_format:json_format"])
    docs = ifeval.instruction_docs()
    assert set(docs) == set(ifeval.INSTRUCTION_IDS)
    assert docs["punctuation:no_comma"] == "Checks the response for no commas."


def test_ifeval_strict_and_reason():
    r = rc("punctuation:no_comma", "one, two, three")
    assert (r.passed, r.passed_loose, r.score) == (False, False, 0.0)
    assert "refrain from the use of any commas" in r.reason and "found: 2 comma(s)" in r.reason
    ok = rc("punctuation:no_comma", "no commas here")
    assert ok.passed and ok.passed_loose and ok.score == 1.0 and "passed" in ok.reason


def test_ifeval_loose_drops_first_line_and_stars():
    response = "Sure, here it is:\nall lowercase text here"
    r = rc("change_case:english_lowercase", response)
    assert r.passed is False and r.passed_loose is True
    assert "failed strict, passed loose" in r.reason and "uppercase letter" in r.reason


def test_ifeval_kwargs_none_filtered_and_words_reason():
    args = {"relation": "at least", "num_words": 5, "keywords": None, "end_phrase": None}
    r = rc("length_constraints:number_words", "just three words", args)
    assert not r.passed and "Answer with at least 5 words" in r.reason and "found: 3 words" in r.reason


def test_ifeval_empty_response_fails_with_reason():
    r = rc("punctuation:no_comma", "   ")
    assert not r.passed and not r.passed_loose and "empty response" in r.reason


@pytest.mark.parametrize("iid,kwargs,response", [
    ("keywords:existence", {"keywords": ["river", "stone"]}, "a river but no rock"),
    ("keywords:forbidden_words", {"forbidden_words": ["bad"]}, "this is bad"),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "The end."),
    ("detectable_format:title", {}, "no title"),
    ("change_case:english_capital", {}, "not capitals"),
])
def test_ifeval_failures_say_what_was_found(iid, kwargs, response):
    r = rc(iid, response, kwargs)
    assert not r.passed and "required:" in r.reason and "found:" in r.reason


def test_ifeval_matches_lm_eval_utils_on_varied_cases():
    from lm_eval.tasks.ifeval import utils
    cases = [
        (["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}], "Title line\nno commas and lowercase"),
        (["length_constraints:number_words"], [{"relation": "less than", "num_words": 4}], "**a b c**\nd e"),
        (["detectable_format:number_bullet_lists"], [{"num_bullets": 2}], "Intro\n* one\n* two\nOutro"),
        (["startend:quotation"], [{}], '"quoted"'),
        (["detectable_content:postscript"], [{"postscript_marker": "P.S."}], "Hi\nP.S. bye"),
        (["combination:repeat_prompt"], [{"prompt_to_repeat": "Say hi"}], "Say hi then hello"),
    ]
    for ids, kwargs, response in cases:
        inp = utils.InputExample(key=0, instruction_id_list=ids, prompt="Say hi", kwargs=kwargs)
        ref = utils.process_results({"key": 0, "instruction_id_list": ids, "prompt": "Say hi", "kwargs": kwargs},
                                    [response])
        ours = verify_instructions(inp.prompt, response, {"instruction_id_list": ids, "kwargs": kwargs})
        assert [r.passed for _, r in ours] == ref["inst_level_strict_acc"], ids
        assert [r.passed_loose for _, r in ours] == ref["inst_level_loose_acc"], ids


# ------------------------------------------------------------------ generic assertions

@pytest.mark.parametrize("name,args,response,passed,reason_part", [
    ("contains", {"text": "Sources:"}, "text\nSources: x", True, "found 'Sources:'"),
    ("contains", {"text": ["a", "zzz"]}, "a b", False, "required 'zzz'; not found"),
    ("contains", {"text": "HELLO", "case_sensitive": False}, "hello", True, "found"),
    ("not_contains", {"text": ["as an AI"]}, "As an AI model", True, "none of"),
    ("not_contains", {"text": "AI", "case_sensitive": False}, "an ai", False, "forbidden 'AI' found"),
    ("regex", {"pattern": r"\d{3}-\d{4}"}, "call 555-1234", True, "matched '555-1234'"),
    ("regex", {"pattern": "^yes$", "flags": "i", "mode": "fullmatch"}, "YES", True, "must match"),
    ("regex", {"pattern": "sorry", "negate": True}, "I am sorry", False, "must not match"),
    ("equals", {"text": "42"}, " 42\n", True, "required '42'"),
    ("equals", {"text": "42"}, "43", False, "found '43'"),
    ("starts_with", {"text": "Dear"}, "Dear Sam", True, "required 'Dear'"),
    ("starts_with", {"text": "Dear"}, "Hi Sam", False, "starts with 'Hi Sam'"),
    ("ends_with", {"text": "Thanks."}, "Bye. Thanks.", True, "required 'Thanks.'"),
    ("ends_with", {"text": "Thanks."}, "Bye.", False, "ends with 'Bye.'"),
    ("max_words", {"n": 3}, "one two three", True, "at most 3 words; found 3"),
    ("max_words", {"n": 2}, "one two three", False, "found 3"),
    ("valid_json", {}, '{"a": 1}', True, "parsed a JSON dict"),
    ("valid_json", {}, '{"a": 1', False, "invalid JSON at line 1"),
    ("valid_json", {"allow_fences": True}, '```json\n[1, 2]\n```', True, "JSON list"),
    ("valid_json", {}, '```json\n[1, 2]\n```', False, "invalid JSON"),
])
def test_generic_checks(name, args, response, passed, reason_part):
    r = rc(name, response, args)
    assert r.passed is passed and r.score == (1.0 if passed else 0.0)
    assert reason_part in r.reason, r.reason
    assert r.reason.startswith(name)


SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name"]}


def test_json_schema():
    assert rc("json_schema", '{"name": "Ann", "age": 3}', {"schema": SCHEMA}).passed
    bad = rc("json_schema", '{"age": -1}', {"schema": SCHEMA})
    assert not bad.passed and "'name' is a required property" in bad.reason and "age: -1 is less than" in bad.reason
    assert "invalid JSON" in rc("json_schema", "nope", {"schema": SCHEMA}).reason


def test_json_schema_from_request_or_not_applicable():
    trace = {"params": json.dumps({"response_format": {"type": "json_schema",
                                                       "json_schema": {"name": "p", "schema": SCHEMA}}})}
    assert not rc("json_schema", '{"age": 1}', {}, trace).passed
    assert rc("json_schema", '{"x": 1}', {}, {"params": {"response_format": {"type": "json_object"}}}) is None


# ------------------------------------------------------------------ tool calls

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}}]


def call(name, arguments):
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


@pytest.mark.parametrize("calls,passed,reason_part", [
    ([call("get_weather", '{"city": "Oslo"}')], True, "1 valid call(s): get_weather"),
    ([call("get_time", "{}")], False, "'get_time' is not among the offered tools (get_weather)"),
    ([call("get_weather", '{"town": "Oslo"}')], False, "'city' is a required property"),
    ([call("get_weather", "{oops")], False, "arguments are not a JSON object"),
    ([], False, "no tool call"),
])
def test_tool_calls(calls, passed, reason_part):
    trace = {"tools": json.dumps(TOOLS), "tool_calls": json.dumps(calls)}
    r = rc("tool_calls", "", {}, trace)
    assert r.passed is passed and reason_part in r.reason, r.reason


def test_tool_calls_required_name_and_text_calls():
    trace = {"tools": TOOLS, "tool_calls": [call("get_weather", '{"city": "Oslo"}')]}
    assert not rc("tool_calls", "", {"name": "other"}, trace).passed
    text = 'ok <tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}</tool_call>'
    assert rc("tool_calls", text, {}, {"tools": TOOLS, "tool_calls": None}).passed


# ------------------------------------------------------------------ judge (a real local HTTP endpoint)

def test_judge_records_model_score_and_reason(monkeypatch):
    from openai_stub import OpenAIStub
    from evals import checks_judge
    with OpenAIStub(models=("judge-1",)) as stub:
        stub.push('{"score": 8, "reason": "clear and correct"}', 'Score: 3. Rambles.')
        monkeypatch.setenv("MEND_EVALS_JUDGE_BASE_URL", stub.base_url)
        monkeypatch.setenv("MEND_EVALS_JUDGE_MODEL", "judge-1")
        checks_judge._CLIENTS.clear()
        good = rc("judge", "Paris.", {"rubric": "Correct capital."}, {"prompt": "Capital of France?"})
        bad = rc("judge", "Hmm.", {"rubric": "Correct capital."}, {"prompt": "Capital of Italy?"})
        again = rc("judge", "Paris.", {"rubric": "Correct capital."}, {"prompt": "Capital of France?"})
        assert stub.count == 2  # the repeated request came from the llm_calls cache
        assert "Capital of France?" in stub.requests[0]["messages"][1]["content"]
    assert good.passed and good.score == 0.8 and "8/10" in good.reason and "clear and correct" in good.reason
    assert good.details["judge_model"] == "judge-1" and good.details["judge_endpoint"] == stub.base_url
    assert not bad.passed and bad.score == pytest.approx(0.3)
    assert again == good


def test_judge_without_endpoint_is_a_clear_error():
    from evals.checks_judge import JudgeNotConfigured, judge_client
    with pytest.raises(JudgeNotConfigured, match="judge_base_url"):
        judge_client()


# ------------------------------------------------------------------ user checks, registry, curate's verifier

def test_user_check_module_registers(tmp_path, monkeypatch):
    (tmp_path / "team_checks.py").write_text(textwrap.dedent('''
        from evals.checks import CheckResult, register

        @register("polite")
        def polite(response, args, trace):
            ok = "please" in response.lower()
            return CheckResult(ok, float(ok), "polite: " + ("said please" if ok else "no 'please' found"))
    '''))
    monkeypatch.setenv("MEND_HOME", str(tmp_path))
    monkeypatch.setenv("MEND_EVALS_CHECK_MODULES", '["team_checks"]')
    try:
        assert checks.load_check_modules() == ["team_checks"]
        assert rc("polite", "Please sit.").passed and rc("polite", "Sit.").reason == "polite: no 'please' found"
    finally:
        checks.REGISTRY.pop("polite", None)
        sys.modules.pop("team_checks", None)


def test_missing_check_module_is_clear():
    with pytest.raises(checks.UnknownCheck, match="no_such_module"):
        checks.load_check_modules(["no_such_module"])


def test_unknown_check_names_known_ones():
    with pytest.raises(checks.UnknownCheck, match="unknown check 'nope'.*valid_json"):
        checks.get("nope")


def test_verify_instructions_for_curate():
    meta = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}],
            "checks": [{"check": "max_words", "args": {"n": 3}}]}
    out = verify_instructions("Describe x.", "a, b c d", meta)
    assert [(c, r.passed) for c, r in out] == [("punctuation:no_comma", False), ("max_words", False)]
    assert all(isinstance(r, CheckResult) for _, r in out)
    assert verify_instructions("p", "x", None) == []


def test_unknown_check_named_by_a_trace_is_a_failed_result():
    out = verify_instructions("p", "x", {"instruction_id_list": ["made:up"], "kwargs": [{}]})
    assert out[0][0] == "made:up" and not out[0][1].passed and "unknown check 'made:up'" in out[0][1].reason
