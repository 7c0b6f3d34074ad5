"""curate.synth.repair: each repair passes lm-eval's checker on IFEval-style kwargs and keeps the source's content;
repairs compose on multi-instruction prompts; what cannot compose comes back as None, never as a failing text."""
import json

import pytest

from curate.synth import repair as rp
from curate.synth import repair_text
from curate.synth.repair import compose, content_overlap, join_responses, repair
from evals.checks import ifeval_check, verify_instructions

SOURCE = """Regular exercise has many benefits for the body and the mind. It strengthens the heart, improves sleep, \
and lowers stress.

Even a short walk each day can make a real difference. Doctors in Canada, Japan, and Brazil recommend about \
150 minutes of moderate activity per week.

Start slowly, choose an activity you enjoy, and keep a simple log. Over time, the habit becomes easier to keep, \
and the habit sticks."""
PROMPT = "Write a short note about why exercise matters."
LETTER = """Dear {recipient name},

Thank you for your interest in the position at <company>. We would like to invite you to an interview on \
(insert date). Please bring a copy of your resume, and let us know if you need anything.

Best regards,
(your name)"""
TWO = """Response 1: Paris is the capital of France, and it sits on the Seine.

Response 2: The capital of France is Paris, a city known for the Louvre and its cafes."""
YES = "Yes, cats are mammals. They have fur, they nurse their young, and they are warm-blooded."
ACRONYMS = "NASA and the ESA launched a probe. The USA funded most of it, and the EU helped. I think it worked."
CLAUSES = "Exercise helps the heart; it also helps the mind. Sleep improves, but only with time. Eat well."

# (instruction id, kwargs as IFEval's data has them, source, least content overlap)
CASES = [
    ("punctuation:no_comma", {}, SOURCE, 1.0),
    ("change_case:english_lowercase", {}, SOURCE, 1.0),
    ("change_case:english_capital", {}, SOURCE, 1.0),
    ("startend:quotation", {}, SOURCE, 1.0),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"}, SOURCE, 1.0),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, SOURCE, 1.0),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, SOURCE, 1.0),
    ("detectable_format:title", {}, SOURCE, 1.0),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, LETTER, 0.9),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 3}, SOURCE, 1.0),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 4}, SOURCE, 1.0),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, SOURCE, 1.0),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 3}, SOURCE, 1.0),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 5}, SOURCE, 1.0),
    ("detectable_format:number_bullet_lists", {"num_bullets": 4}, SOURCE, 1.0),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, SOURCE, 1.0),
    ("detectable_format:json_format", {}, SOURCE, 1.0),
    ("combination:repeat_prompt", {"prompt_to_repeat": PROMPT}, SOURCE, 1.0),
    ("combination:two_responses", {}, TWO, 1.0),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 4, "nth_paragraph": 3, "first_word": "doctors"}, SOURCE, 1.0),
    ("detectable_format:constrained_response", {}, YES, 1.0),
    ("keywords:forbidden_words", {"forbidden_words": ["doctors", "stress"]}, SOURCE, 0.6),
    ("change_case:capital_word_frequency", {"capital_frequency": 3, "capital_relation": "at least"}, SOURCE, 1.0),
    ("change_case:capital_word_frequency", {"capital_frequency": 2, "capital_relation": "less than"}, ACRONYMS, 1.0),
    ("keywords:frequency", {"keyword": "habit", "frequency": 2, "relation": "less than"}, SOURCE, 0.8),
    ("keywords:letter_frequency", {"letter": "z", "let_frequency": 1, "let_relation": "less than"}, SOURCE, 0.7),
    ("length_constraints:number_words", {"num_words": 60, "relation": "less than"}, SOURCE, 0.8),
    ("length_constraints:number_sentences", {"num_sentences": 5, "relation": "less than"}, SOURCE, 0.6),
    ("length_constraints:number_sentences", {"num_sentences": 5, "relation": "at least"}, CLAUSES, 1.0),
]


def checked(iid, kwargs, text, prompt=PROMPT):
    """The project's verifier (lm-eval's checker, strict), independent of curate.repair."""
    return ifeval_check(iid, text, kwargs, prompt).passed


@pytest.mark.parametrize("iid,kwargs,source,least", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_repair_passes_the_checker_and_keeps_content(iid, kwargs, source, least):
    assert not checked(iid, kwargs, source)  # the source fails: the repair has work to do
    out = repair(iid, kwargs, source, PROMPT)
    assert out is not None and out != source
    assert checked(iid, kwargs, out)
    assert content_overlap(source, out) >= least


def test_every_repairable_id_has_a_case_and_every_lm_eval_id_is_accounted_for():
    assert {c[0] for c in CASES} == set(rp.FIXES)
    repair_text.lm_util()  # imports lm-eval with the offline NLTK data
    from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
    assert set(rp.FIXES) | set(rp.NO_REPAIR) == set(INSTRUCTION_DICT)


def test_case_and_comma_repairs_change_nothing_else():
    assert repair("change_case:english_lowercase", {}, SOURCE) == SOURCE.lower()
    assert repair("change_case:english_capital", {}, SOURCE) == SOURCE.upper()
    no_comma = repair("punctuation:no_comma", {}, "It costs 1,000 dollars, not less.")
    assert no_comma == "It costs 1000 dollars not less."


def test_ifeval_kwargs_with_null_keys_as_the_dataset_has_them():
    kwargs = {"num_paragraphs": 3, "end_phrase": None, "keywords": None, "postscript_marker": None}
    out = repair("length_constraints:number_paragraphs", kwargs, SOURCE)
    assert out is not None and out.count("***") == 2 and checked("length_constraints:number_paragraphs", kwargs, out)


def test_json_repair_holds_the_text():
    out = repair("detectable_format:json_format", {}, SOURCE)
    assert json.loads(out) == {"answer": SOURCE}


def test_regrouping_keeps_every_sentence_in_order():
    out = repair("detectable_format:number_bullet_lists", {"num_bullets": 4}, SOURCE)
    items = [line[2:] for line in out.splitlines()]
    assert all(line.startswith("* ") for line in out.splitlines())
    assert " ".join(items) == " ".join(SOURCE.split())


def test_title_comes_from_the_text_not_from_an_opener():
    out = repair("detectable_format:title", {}, "Sure! Here are three tips for better sleep:\n\n* Keep a schedule.")
    assert out.startswith("<<Here are three tips for better sleep>>\n")
    assert repair("detectable_format:title", {}, "# Sleep well\nKeep a schedule.").startswith("<<Sleep well>>")


def test_postscript_moves_the_last_sentence_instead_of_inventing_one():
    out = repair("detectable_content:postscript", {"postscript_marker": "P.S."}, SOURCE)
    assert out.splitlines()[-1] == "P.S. Over time, the habit becomes easier to keep, and the habit sticks."
    retag = repair("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hello there.\nP.S. Bye now.")
    assert retag == "Hello there.\n\nP.P.S. Bye now."


@pytest.mark.parametrize("iid,kwargs,source", [
    ("keywords:existence", {"keywords": ["banana", "kiwi"]}, SOURCE),
    ("language:response_language", {"language": "fr"}, SOURCE),
    ("length_constraints:number_words", {"num_words": 500, "relation": "at least"}, SOURCE),
    ("keywords:frequency", {"keyword": "banana", "frequency": 3, "relation": "at least"}, SOURCE),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 5, "let_relation": "at least"}, SOURCE),
    ("combination:two_responses", {}, SOURCE),  # one answer: halving it is not two responses
    ("combination:two_responses", {}, "Paris is the capital of France. It sits on the Seine and is known for the "
                                      "Louvre, its cafes and its long history.\n***\nHope this helps!"),  # a sign-off
    ("detectable_format:constrained_response", {}, "No one knows for sure. Scientists disagree."),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 3, "nth_paragraph": 1, "first_word": "banana"}, SOURCE),  # prepending it would pass
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, SOURCE),  # nothing to turn into one
    ("combination:repeat_prompt", {}, SOURCE),  # no prompt_to_repeat: nothing to repeat or to check
])
def test_no_honest_repair_is_none(iid, kwargs, source):
    assert repair(iid, kwargs, source, PROMPT) is None


def test_a_passing_response_comes_back_unchanged():
    assert repair("keywords:existence", {"keywords": ["exercise", "heart"]}, SOURCE) == SOURCE
    assert compose(["detectable_format:title"], [{}], "<<Hi>>\nHello.") == "<<Hi>>\nHello."


def test_content_floor_refuses_a_cut_that_loses_most_of_the_text():
    kwargs = {"num_words": 15, "relation": "less than"}
    assert repair("length_constraints:number_words", kwargs, SOURCE) is None
    cut = repair("length_constraints:number_words", kwargs, SOURCE, min_overlap=0.0)
    assert cut == "Regular exercise has many benefits for the body and the mind."


# ------------------------------------------------------------------ composition

COMPOSABLE = [
    (["punctuation:no_comma", "change_case:english_lowercase", "startend:end_checker", "detectable_content:postscript"],
     [{}, {}, {"end_phrase": "Any other questions?"}, {"postscript_marker": "P.S."}]),
    (["detectable_format:title", "length_constraints:number_paragraphs", "startend:quotation",
      "change_case:english_capital"], [{}, {"num_paragraphs": 3}, {}, {}]),
    (["detectable_format:number_bullet_lists", "detectable_content:postscript", "punctuation:no_comma",
      "detectable_format:number_highlighted_sections"],
     [{"num_bullets": 4}, {"postscript_marker": "P.P.S"}, {}, {"num_highlights": 2}]),
    (["combination:repeat_prompt", "change_case:english_lowercase"], [{"prompt_to_repeat": PROMPT}, {}]),
    (["detectable_format:json_format", "punctuation:no_comma", "change_case:english_lowercase"], [{}, {}, {}]),
    (["detectable_format:json_format", "startend:quotation", "change_case:english_capital"], [{}, {}, {}]),
    (["detectable_format:multiple_sections", "detectable_format:title",
      "detectable_format:number_highlighted_sections"],
     [{"section_spliter": "SECTION", "num_sections": 2}, {}, {"num_highlights": 2}]),
    (["length_constraints:nth_paragraph_first_word", "detectable_content:postscript", "startend:end_checker",
      "detectable_format:title"],
     [{"num_paragraphs": 3, "nth_paragraph": 2, "first_word": "even"}, {"postscript_marker": "P.S."},
      {"end_phrase": "Peace!"}, {}]),
    (["keywords:forbidden_words", "detectable_format:number_bullet_lists", "startend:quotation"],
     [{"forbidden_words": ["brazil"]}, {"num_bullets": 3}, {}], 0.7),  # one sentence of six dropped
    (["combination:repeat_prompt", "detectable_format:title", "change_case:english_capital",
      "startend:end_checker"],
     [{"prompt_to_repeat": PROMPT}, {}, {}, {"end_phrase": "Is there anything else I can help with?"}]),
]


def metadata(ids, kwargs):
    return {"instruction_id_list": ids, "kwargs": kwargs}


@pytest.mark.parametrize("ids,kwargs,least", [(c[0], c[1], c[2] if len(c) > 2 else 0.95) for c in COMPOSABLE],
                         ids=[str(i) for i in range(len(COMPOSABLE))])
def test_compose_passes_every_instruction(ids, kwargs, least):
    out = compose(ids, kwargs, SOURCE, PROMPT)
    assert out is not None
    results = verify_instructions(PROMPT, out, metadata(ids, kwargs))
    assert [iid for iid, r in results if not r.passed] == []
    assert content_overlap(SOURCE, out) >= least


def test_reductions_leave_room_for_what_is_added_after_them():
    ids = ["length_constraints:number_words", "startend:end_checker", "combination:repeat_prompt"]
    kwargs = [{"num_words": 70, "relation": "less than"}, {"end_phrase": "Is there anything else I can help with?"},
              {"prompt_to_repeat": PROMPT}]
    out = compose(ids, kwargs, SOURCE, PROMPT)
    assert out is not None and out.startswith(PROMPT)
    assert all(r.passed for _, r in verify_instructions(PROMPT, out, metadata(ids, kwargs)))


NOT_COMPOSABLE = [
    (["change_case:english_lowercase", "change_case:capital_word_frequency"],
     [{}, {"capital_frequency": 3, "capital_relation": "at least"}]),
    (["combination:two_responses", "length_constraints:number_paragraphs"], [{}, {"num_paragraphs": 2}]),
    (["punctuation:no_comma", "combination:repeat_prompt"], [{}, {"prompt_to_repeat": "Write a note, please."}]),
    (["startend:quotation", "combination:repeat_prompt"], [{}, {"prompt_to_repeat": PROMPT}]),
    (["change_case:english_lowercase", "detectable_format:multiple_sections"],
     [{}, {"section_spliter": "Section", "num_sections": 2}]),
    (["detectable_format:json_format", "detectable_format:number_bullet_lists"], [{}, {"num_bullets": 3}]),
    (["change_case:english_capital", "detectable_format:constrained_response"], [{}, {}]),
    # the word limit is over after the end phrase, so this one also reaches the second, reserving pass
    (["length_constraints:number_words", "startend:end_checker", "punctuation:no_comma"],
     [{"num_words": 60, "relation": "less than"}, {"end_phrase": "Let me know, okay?"}, {}]),
]


@pytest.mark.parametrize("ids,kwargs", NOT_COMPOSABLE, ids=[str(i) for i in range(len(NOT_COMPOSABLE))])
def test_non_composable_is_none(ids, kwargs):
    source = YES if "detectable_format:constrained_response" in ids else TWO if "combination:two_responses" in ids \
        else SOURCE
    assert rp.conflict(list(zip(ids, kwargs)), PROMPT)  # named, with its reason
    assert compose(ids, kwargs, source, PROMPT) is None


@pytest.mark.parametrize("ids,kwargs", NOT_COMPOSABLE, ids=[str(i) for i in range(len(NOT_COMPOSABLE))])
def test_final_verification_refuses_them_without_the_conflict_table(ids, kwargs, monkeypatch):
    monkeypatch.setattr(rp, "conflict", lambda specs, prompt="": None)
    source = YES if "detectable_format:constrained_response" in ids else TWO if "combination:two_responses" in ids \
        else SOURCE
    assert compose(ids, kwargs, source, PROMPT) is None


def test_a_composable_case_is_not_flagged_as_conflict():
    assert all(rp.conflict(list(zip(c[0], c[1])), PROMPT) is None for c in COMPOSABLE)


# ------------------------------------------------------------------ content overlap and helpers

def test_content_overlap_measure():
    assert content_overlap(SOURCE, SOURCE) == 1.0
    assert content_overlap(SOURCE, SOURCE.upper().replace(",", "")) == 1.0  # case and commas do not count
    assert content_overlap("red apples and green pears", "red apples") == pytest.approx(0.5)
    assert content_overlap("apples apples pears", "apples pears") == pytest.approx(2 / 3)  # multiplicity
    assert content_overlap(SOURCE, json.dumps({"answer": SOURCE})) == 1.0  # JSON escaping decoded
    assert content_overlap("the and of", "") == 1.0  # no content words to lose


def test_join_responses():
    assert join_responses("Paris.", "It is Paris.") == "Paris.\n******\nIt is Paris."
    assert join_responses("Same.", " Same. ") is None
    joined = join_responses("A.", "B.")
    assert checked("combination:two_responses", {}, joined)
