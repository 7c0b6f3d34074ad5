"""curate.synth.constraints: every grammar accepts a text that passes its lm-eval check and rejects one that fails it
(as GBNF, read by a small GBNF reader below, and as the regex form, with python `re`); texts drawn at random from
each grammar pass every check it claims (the grammar is honest); composition and its refusals; the dialects as
each server expects them, sent through evals.client to the stub server, and cached on."""
import json
import random
import re
import re._constants as C
import re._parser as sre

import jsonschema
import pytest
from openai_stub import OpenAIStub

from curate.synth.constraints import MAX_CHARS, Constraint, constraint_for, dialect, request_extras
from curate.synth.repair import passes
from evals.client import Client, request_hash

# ------------------------------------------------------------------ a small GBNF reader (single-rule grammars)

_GBNF_TOKEN = re.compile(r'\s+|"((?:\\.|[^"\\])*)"|(\[(?:\\.|[^\]\\])*\])|(\{\d+(?:,\d*)?\})|([()|?*+])')
_LIT_ESC = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def gbnf_regex(grammar: str) -> str:
    """A one-rule GBNF grammar (`root ::= ...` of literals, classes, groups, alternatives, repetitions) as a
    python regex; anything else (a rule reference, a second rule) fails loudly."""
    head, sep, body = grammar.partition("::=")
    assert sep and head.strip() == "root", grammar[:80]
    out, pos = [], 0
    while pos < len(body):
        m = _GBNF_TOKEN.match(body, pos)
        assert m, f"unexpected GBNF at {body[pos:pos + 40]!r}"
        pos = m.end()
        lit, cls, rep, op = m.group(1), m.group(2), m.group(3), m.group(4)
        if lit is not None:
            text = re.sub(r"\\x([0-9A-Fa-f]{2})|\\(.)", lambda e: chr(int(e.group(1), 16)) if e.group(1)
                          else _LIT_ESC[e.group(2)], lit)
            out.append("(?:" + re.escape(text) + ")")
        elif cls is not None:
            out.append(cls)  # \xHH / \uHHHH escapes read the same in python
        elif rep is not None:
            out.append(rep)
        elif op is not None:
            out.append("(?:" if op == "(" else op)
    return "".join(out)


def accepts(c: Constraint, text: str) -> dict:
    got = {"regex": re.fullmatch(c.regex, text) is not None}
    if c.gbnf:
        got["gbnf"] = re.fullmatch(gbnf_regex(c.gbnf), text) is not None
    return got


def check_all(ids, kwargs, text) -> bool:
    return all(passes(i, k, text, "") for i, k in zip(ids, kwargs))


END = {"end_phrase": "Any other questions?"}
TEXT = "The river runs past old museums and quiet cafes where people share bread and cheese in the evening light."

# (ids, kwargs, a text that passes every check, a text that fails one)
CASES = [
    (["punctuation:no_comma"], [{}], TEXT, "Bread, cheese and wine."),
    (["change_case:english_lowercase"], [{}], TEXT.lower(), TEXT),
    (["change_case:english_capital"], [{}], TEXT.upper(), TEXT),
    (["startend:quotation"], [{}], f'"{TEXT}"', f'"{TEXT}'),
    (["startend:end_checker"], [END], f"{TEXT} Any other questions?", f"Any other questions? {TEXT}"),
    (["detectable_format:json_format"], [{}], '{"city": "Paris", "rivers": 1}', "city: Paris"),
    (["detectable_format:number_bullet_lists"], [{"num_bullets": 3}],
     "Here is what to see:\n* the Louvre\n* the Seine\n* the cafes", "* the Louvre\n* the Seine"),
    (["detectable_content:postscript"], [{"postscript_marker": "P.S."}],
     f"{TEXT}\n\nP.S. Bring an umbrella.", f"{TEXT} Bring an umbrella."),
    (["detectable_content:postscript"], [{"postscript_marker": "P.P.S"}],
     f"{TEXT}\n\nP.P.S Bring an umbrella.", f"{TEXT}\n\nPS Bring an umbrella."),
    (["detectable_format:title"], [{}], f"<<Paris at dusk>>\n{TEXT}", f"Paris at dusk\n{TEXT}"),
    (["detectable_format:constrained_response"], [{}], "My answer is maybe. It depends on the season.",
     "Perhaps, it depends."),
    (["combination:repeat_prompt"], [{"prompt_to_repeat": "Describe Paris in two sentences."}],
     f"Describe Paris in two sentences.\n{TEXT}", f"Sure! Describe Paris in two sentences.\n{TEXT}"),
    (["detectable_format:multiple_sections"], [{"section_spliter": "Section", "num_sections": 2}],
     "Section 1\nThe museums.\n\nSection 2\nThe rivers.", "Section 1\nThe museums and the rivers."),
    (["length_constraints:number_paragraphs"], [{"num_paragraphs": 2}],
     "The museums are many.\n\n***\n\nThe rivers are calm.", "The museums are many.\n\nThe rivers are calm."),
    (["change_case:english_lowercase", "startend:end_checker", "startend:quotation"], [{}, END, {}],
     f'"{TEXT.lower()} any other questions?"', f'"{TEXT.lower()} Any other questions?"'),
    (["punctuation:no_comma", "detectable_format:title", "detectable_content:postscript"],
     [{}, {}, {"postscript_marker": "P.S."}],
     f"<<a day in paris>>\n{TEXT}\n\nP.S. Bring shoes.", f"<<a day in paris>>\n{TEXT}\n\nP.S. Bring shoes, hats."),
    (["startend:quotation", "detectable_format:number_bullet_lists"], [{}, {"num_bullets": 2}],
     '"\n* the Louvre\n* the Seine"', '"* the Louvre\n* the Seine"'),
    (["change_case:english_capital", "detectable_format:multiple_sections"],
     [{}, {"section_spliter": "SECTION", "num_sections": 2}],
     f"SECTION 1\n{TEXT.upper()}\n\nSECTION 2\n{TEXT.upper()}", f"SECTION 1\n{TEXT}\n\nSECTION 2\n{TEXT}"),
    (["keywords:existence", "punctuation:no_comma"], [{"keywords": ["river"]}, {}], TEXT, "Bread, cheese."),
    (["detectable_format:number_highlighted_sections"], [{"num_highlights": 2}],
     "See *the Louvre* first, then walk along *the Seine* at dusk.", "See *the Louvre* first, then * *."),
    (["detectable_content:number_placeholders", "punctuation:no_comma"], [{"num_placeholders": 2}, {}],
     "Dear [name] we meet at [address] on Monday.", "Dear [name] we meet on Monday."),
    (["keywords:letter_frequency"], [{"letter": "q", "let_frequency": 2, "let_relation": "less than"}],
     "We buy bread by the river.", "Quite quiet."),
    (["keywords:existence"], [{"keywords": ["river", "bread"]}], "We buy bread by the river.",
     "We buy bread by the lake."),
    (["keywords:frequency", "change_case:english_lowercase"],
     [{"keyword": "Tea", "frequency": 2, "relation": "at least"}, {}], "i drink tea first and then more tea.",
     "i drink tea first."),
    (["length_constraints:nth_paragraph_first_word"],
     [{"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "summer"}],
     "We walked.\n\nSummer came early.\n\nThe end.", "We walked.\n\nWinter came early.\n\nThe end."),
]


@pytest.mark.parametrize("ids,kwargs,good,bad", CASES, ids=["+".join(c[0]) for c in CASES])
def test_grammar_accepts_a_passing_text_and_rejects_a_failing_one(ids, kwargs, good, bad):
    c = constraint_for(ids, kwargs)
    assert c is not None
    assert check_all(ids, kwargs, good) and not check_all(ids, kwargs, bad)  # the fixtures mean what they say
    if c.json_schema:
        jsonschema.validate(json.loads(good), c.json_schema)
        with pytest.raises((jsonschema.ValidationError, json.JSONDecodeError)):
            jsonschema.validate(json.loads(bad), c.json_schema)
        assert c.gbnf is None and c.regex is None
        return
    assert all(accepts(c, good).values()), accepts(c, good)
    assert not any(accepts(c, bad).values()), accepts(c, bad)


def test_the_required_checks_all_have_a_grammar():
    required = ["punctuation:no_comma", "change_case:english_lowercase", "change_case:english_capital",
                "startend:quotation", "startend:end_checker", "detectable_format:json_format",
                "detectable_format:number_bullet_lists", "detectable_content:postscript", "detectable_format:title",
                "detectable_format:constrained_response", "combination:repeat_prompt",
                "detectable_format:multiple_sections", "length_constraints:number_paragraphs",
                "detectable_format:number_highlighted_sections", "keywords:existence",
                "length_constraints:nth_paragraph_first_word"]
    covered = {i for ids, *_ in CASES if len(ids) == 1 for i in ids}
    assert set(required) <= covered


# ------------------------------------------------------------------ honesty: random texts from each grammar pass

WORDS = ("the river runs past old museums and quiet cafes where people share bread cheese and wine under warm "
         "evening light - * *** << >> \" , 3 P.S. Section").split()
FIRST = "abcxyzABCXYZ -*\"<>\t\r,3"


def _member(ch: str, items) -> bool:
    negate, hit = False, False
    for op, av in items:
        if op is C.NEGATE:
            negate = True
        elif op is C.LITERAL:
            hit |= ord(ch) == av
        elif op is C.RANGE:
            hit |= av[0] <= ord(ch) <= av[1]
    return hit != negate


def _free(items, lo: int, hi: int, rng) -> str:
    """Words (English, and tricky tokens) that the class allows, between lo and hi characters."""
    pool = [w for w in WORDS + [w.upper() for w in WORDS] + [w.capitalize() for w in WORDS]
            if all(_member(c, items) for c in w)]
    sep = next((s for s in (" ", "\n") if _member(s, items)), "")
    target = rng.randint(min(hi, max(lo, 60)), min(hi, max(lo, 60) + 160))  # 60+: langdetect needs some words
    out = ""
    while len(out) < target and pool:
        w = rng.choice(pool)
        nxt = (out + sep + w) if out else w
        if len(nxt) > hi:
            break
        out = nxt
    letters = [c for c in "abcXYZ" if _member(c, items)]
    while len(out) < lo:
        out += letters[0]
    return out


def _class(op, av):
    """A one-character node as class items (sre writes [^x] as NOT_LITERAL)."""
    return [(C.NEGATE, None), (C.LITERAL, av)] if op is C.NOT_LITERAL else av


def sample(pattern: str, rng) -> str:
    def walk(seq) -> str:
        out = []
        for op, av in seq:
            if op is C.NOT_LITERAL:
                op, av = C.IN, _class(op, av)
            if op is C.LITERAL:
                out.append(chr(av))
            elif op is C.IN:
                choices = [c for c in FIRST if _member(c, av)]
                out.append(rng.choice(choices))
            elif op is C.SUBPATTERN:
                out.append(walk(av[-1]))
            elif op is C.BRANCH:
                out.append(walk(rng.choice(av[1])))
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT):
                lo, hi, sub = av
                hi = lo + 200 if hi is C.MAXREPEAT else hi
                if len(sub) == 1 and sub[0][0] in (C.IN, C.NOT_LITERAL):
                    out.append(_free(_class(*sub[0]), lo, hi, rng))
                else:
                    out.append("".join(walk(sub) for _ in range(rng.randint(lo, hi))))
            else:
                raise AssertionError(f"sampler: unexpected {op}")
        return "".join(out)
    return walk(sre.parse(pattern))


@pytest.mark.parametrize("ids,kwargs,good,bad", CASES, ids=["+".join(c[0]) for c in CASES])
def test_texts_drawn_from_the_grammar_pass_its_checks(ids, kwargs, good, bad):
    c = constraint_for(ids, kwargs)
    if c.json_schema:
        return
    rng = random.Random("+".join(ids))
    pattern = gbnf_regex(c.gbnf)  # draw from the GBNF that llama.cpp gets
    enforced = c.name.split("+")
    for _ in range(25):
        text = sample(pattern, rng)
        assert re.fullmatch(c.regex, text), text
        for iid in enforced:  # the case checks' other half (langdetect says "en") is the verifier's, not a grammar's
            ok = CASE_PART[iid](text) if iid in CASE_PART else passes(iid, kwargs[ids.index(iid)], text, "")
            assert ok, (iid, text)


CASE_PART = {"change_case:english_lowercase": str.islower, "change_case:english_capital": str.isupper}


# ------------------------------------------------------------------ composition

@pytest.mark.parametrize("ids,kwargs,why", [
    (["change_case:english_lowercase", "change_case:english_capital"], [{}, {}], "both cases"),
    (["change_case:english_lowercase", "detectable_format:multiple_sections"],
     [{}, {"section_spliter": "Section", "num_sections": 2}], "'Section' holds a capital"),
    (["change_case:english_capital", "detectable_format:constrained_response"], [{}, {}], "options are mixed case"),
    (["punctuation:no_comma", "combination:repeat_prompt"], [{}, {"prompt_to_repeat": "Hi, there."}], "comma"),
    (["startend:quotation", "combination:repeat_prompt"], [{}, {"prompt_to_repeat": "Hi there."}], "two starts"),
    (["detectable_format:number_bullet_lists", "length_constraints:number_paragraphs"],
     [{"num_bullets": 2}, {"num_paragraphs": 2}], "two shapes"),
    (["detectable_format:json_format", "change_case:english_lowercase"], [{}, {}], "JSON with a ban"),
    (["length_constraints:number_words", "punctuation:no_comma"],
     [{"relation": "at least", "num_words": 300}, {}], "a length a bound could break"),
    (["keywords:letter_frequency"], [{"letter": "a", "let_frequency": 3, "let_relation": "at least"}],
     "nothing to constrain"),
    (["keywords:frequency"], [{"keyword": "tea", "frequency": 2, "relation": "less than"}], "a ban, not a shape"),
    (["detectable_content:postscript", "length_constraints:nth_paragraph_first_word"],
     [{"postscript_marker": "P.S."}, {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "summer"}],
     "a postscript is another paragraph"),
    (["not:an_instruction"], [{}], "unknown"),
    ([], [], "empty"),
])
def test_refuses_what_one_grammar_cannot_honestly_express(ids, kwargs, why):
    assert constraint_for(ids, kwargs) is None, why


def test_marks_shape_the_body_only_when_nothing_else_does():
    for ids in (["detectable_format:number_bullet_lists", "detectable_content:number_placeholders"],
                ["detectable_content:number_placeholders", "detectable_format:number_bullet_lists"]):
        kwargs = [{"num_bullets": 2} if "bullet" in i else {"num_placeholders": 1} for i in ids]
        assert constraint_for(ids, kwargs).name == "detectable_format:number_bullet_lists"  # placeholders: free
    both = constraint_for(["detectable_format:number_highlighted_sections", "detectable_content:number_placeholders"],
                          [{"num_highlights": 1}, {"num_placeholders": 1}])
    assert both.name.count("+") == 0  # the first mark shapes the body, the other is left to the sample


def test_case_insensitive_literals_follow_the_case_ban():
    c = constraint_for(["startend:end_checker", "change_case:english_lowercase", "detectable_content:postscript",
                        "combination:repeat_prompt"],
                       [END, {}, {"postscript_marker": "P.S."}, {"prompt_to_repeat": "Tell me about Paris."}])
    assert c.regex.startswith("tell me about paris\\.") and "any other questions" in c.regex and "p\\.s\\." in c.regex
    assert c.name == "startend:end_checker+change_case:english_lowercase+detectable_content:postscript+" \
                     "combination:repeat_prompt"


def test_free_text_before_a_required_ending_is_bounded():
    c = constraint_for(["startend:quotation"], [{}])
    assert f"{{1,{MAX_CHARS}}}" in c.gbnf
    assert "{1,120}" in constraint_for(["startend:quotation"], [{}], max_chars=120).gbnf
    assert re.fullmatch(c.regex, '"' + "a" * MAX_CHARS + '"') and not re.fullmatch(c.regex, '"' + "a" * (MAX_CHARS + 1) + '"')
    assert "{" not in constraint_for(["punctuation:no_comma"], [{}]).gbnf  # nothing must follow: unbounded


def test_missing_kwargs_are_filled_as_the_checker_fills_them():
    c = constraint_for(["startend:end_checker"], [{"end_phrase": None}])  # lm-eval draws one, seeded by evals
    from evals.ifeval import build_instruction
    phrase = build_instruction("startend:end_checker", {"end_phrase": None}, "")[0].get_instruction_args()["end_phrase"]
    assert re.escape(phrase).replace("\\ ", " ") in c.regex.replace("\\ ", " ")


# ------------------------------------------------------------------ dialects

NO_COMMA = constraint_for(["punctuation:no_comma"], [{}])
JSON = constraint_for(["detectable_format:json_format"], [{}])


def test_request_extras_per_dialect():
    assert request_extras(NO_COMMA, "llama.cpp") == {"grammar": NO_COMMA.gbnf}
    assert request_extras(JSON, "llama.cpp") == {"json_schema": {"type": "object"}}
    assert request_extras(NO_COMMA, "vllm") == {"structured_outputs": {"regex": NO_COMMA.regex}}
    assert request_extras(JSON, "vllm") == {"structured_outputs": {"json": {"type": "object"}}}
    assert request_extras(NO_COMMA, "vllm-legacy") == {"guided_regex": NO_COMMA.regex}
    assert request_extras(JSON, "vllm-legacy") == {"guided_json": {"type": "object"}}
    assert request_extras(NO_COMMA, "openai") == {}  # OpenAI takes JSON schemas only
    rf = request_extras(JSON, "openai")["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"] == {"type": "object"}
    assert re.fullmatch(r"[A-Za-z0-9_-]+", rf["json_schema"]["name"])
    assert request_extras(NO_COMMA, "none") == {} and request_extras(None, "llama.cpp") == {}
    with pytest.raises(ValueError, match="dialect"):
        request_extras(NO_COMMA, "tgi")


def test_transformers_dialect_is_todays_token_bans(tiny_model_dir):
    bias = request_extras(NO_COMMA, "transformers", tokenizer_folder=tiny_model_dir)["logit_bias"]
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert 50 < len(bias) < 1000 and all(v == -100.0 for v in bias.values())
    assert all("," in tok.decode([int(i)]) or "\uff0c" in tok.decode([int(i)]) for i in list(bias)[:50])
    both = constraint_for(["punctuation:no_comma", "change_case:english_lowercase"], [{}, {}])
    assert len(request_extras(both, "transformers", tokenizer_folder=tiny_model_dir)["logit_bias"]) > 10_000
    title = constraint_for(["detectable_format:title"], [{}])  # no token ban expresses a title
    assert request_extras(title, "transformers", tokenizer_folder=tiny_model_dir) == {}


class _S:
    def __init__(self, **kw):
        self.__dict__.update({"teacher_url": "local", "teacher_backend": "llama.cpp", "teacher_dialect": "auto", **kw})


def test_dialect_auto():
    assert dialect(_S()) == "llama.cpp"
    assert dialect(_S(teacher_backend="transformers")) == "transformers"
    assert dialect(_S(teacher_url="https://api.example.com/v1")) == "none"
    assert dialect(_S(teacher_url="http://10.0.0.5:8000/v1", teacher_dialect="vllm")) == "vllm"
    with pytest.raises(ValueError):
        dialect(_S(teacher_dialect="grammarly"))


@pytest.mark.parametrize("name,constraint,expect", [
    ("llama.cpp", NO_COMMA, lambda b: b["grammar"] == NO_COMMA.gbnf),
    ("llama.cpp", JSON, lambda b: b["json_schema"] == {"type": "object"} and "grammar" not in b),
    ("vllm", NO_COMMA, lambda b: b["structured_outputs"] == {"regex": NO_COMMA.regex}),
    ("vllm-legacy", JSON, lambda b: b["guided_json"] == {"type": "object"}),
    ("openai", JSON, lambda b: b["response_format"]["type"] == "json_schema"),
    ("none", NO_COMMA, lambda b: not {"grammar", "structured_outputs", "response_format", "logit_bias"} & set(b)),
])
def test_dialects_reach_the_server_as_it_expects(name, constraint, expect):
    with OpenAIStub() as stub:
        client = Client(stub.base_url, "stub-model", max_retries=0, timeout_s=5)
        req = {"messages": [{"role": "user", "content": "hi"}], "seed": 0, **request_extras(constraint, name)}
        call = client.complete_many([req])[0]
        assert call.error is None
        body = stub.requests[0]
        assert expect(body), body
        assert body["messages"][0]["content"] == "hi" and body["model"] == "stub-model" and body["seed"] == 0


def test_cache_keys_on_the_constraint():
    lower = constraint_for(["change_case:english_lowercase"], [{}])
    base = {"messages": [{"role": "user", "content": "hi"}], "seed": 0}
    with OpenAIStub() as stub:
        client = Client(stub.base_url, "stub-model", max_retries=0, timeout_s=5)
        a = {**base, **request_extras(NO_COMMA, "llama.cpp")}
        b = {**base, **request_extras(lower, "llama.cpp")}
        first = client.complete_many([a, b])
        assert stub.count == 2 and not any(c.cached for c in first)
        again = client.complete_many([a, b, {**base, "extra_body": {"grammar": NO_COMMA.gbnf}}])
        assert stub.count == 2 and all(c.cached for c in again)  # resumed: nothing repeated, either spelling
        client.complete_many([base])  # the unconstrained request is another call
        assert stub.count == 3
    url = "http://127.0.0.1:1/v1"
    assert request_hash(url, "m", a) != request_hash(url, "m", b) != request_hash(url, "m", base)
    assert request_hash(url, "m", a) == request_hash(url, "m", {**base, "extra_body": {"grammar": NO_COMMA.gbnf}})


def test_keywords_and_marks_are_never_glued_to_a_word():
    """What the 135M teacher wrote when the grammar let a keyword or a mark start anywhere ("andegreele",
    "On[side]relating"): each must stand as a word of its own."""
    kw = constraint_for(["keywords:existence"], [{"keywords": ["degree"]}])
    assert not accepts(kw, "A personal andegreele of freedom.")["regex"]
    assert accepts(kw, "A personal degree of freedom.")["regex"]
    ph = constraint_for(["detectable_content:number_placeholders"], [{"num_placeholders": 2}])
    assert not accepts(ph, "On[side]relating to [it].")["regex"] and not accepts(ph, "do [it]n in a [room].")["regex"]
    assert all(accepts(ph, "Dear [name], we meet at [address].").values())
