"""Repair: deterministic, content-preserving fixes that make a response follow its IFEval instructions.

    from curate.synth.repair import repair, compose, content_overlap
    repair("punctuation:no_comma", {}, response, prompt)            # -> str | None
    compose(instruction_ids, kwargs_list, response, prompt)          # -> str | None

The fixes live by concern: curate.synth.repair_surface (text edits: reductions, additions, case, wrappers),
curate.synth.repair_layout (regroupings) and curate.synth.repair_text (the checker, content overlap, sentence
pieces); this module registers them in their order and composes them.

No teacher call: a repair rewrites a fluent response (a teacher sample, or a failing production response
from the seed split) only in ways that keep its content: change case, drop commas, regroup its own
sentences into paragraphs/sections/bullets, wrap it, move its last sentence into a postscript, add the
required phrase or the repeated request. A result is returned only when EVERY instruction's lm-eval
checker passes (strict, `INSTRUCTION_DICT[id]` -> `build_description(**kwargs)` -> `check_following`,
through `evals.checks.build_instruction`) and `content_overlap(source, result) >= min_overlap`.
None means "no honest repair"; the caller samples or revises instead.

Repaired (lm-eval instruction id -> what is done):
- change_case:english_lowercase / english_capital: the whole text lower- / upper-cased.
- change_case:capital_word_frequency: "at least N": every occurrence of the response's most frequent
  content words upper-cased (consistent emphasis of its key terms) until N; "less than N": acronyms
  written as capitalized words. The pronoun "I" counts as a capital word and is never changed.
- punctuation:no_comma: commas dropped ("1,000" -> "1000", ", " -> " ").
- startend:quotation: wrapped in double quotes (on their own lines when the text opens with a list item).
- startend:end_checker: the end phrase appended to the last line.
- detectable_content:postscript: the last sentence moved into a line starting
  with the marker (an existing postscript with the wrong marker gets the right one).
- detectable_format:title: <<a markdown heading, else the longest clause of the first sentence of 3+
  words (openers such as "Sure!" skipped), at most 8 words>> on its own line.
- detectable_content:number_placeholders: placeholder-like spans ({name}, <name>, (your name)) become
  [name]; nothing is invented, so a response without such spans is not repaired.
- detectable_format:number_highlighted_sections: N of the response's sentences, spread out, wrapped in
  *...* (in **...** at the start of a line, where lm-eval's bullet counter would take "*x" for a bullet).
- length_constraints:number_paragraphs / detectable_format:multiple_sections /
  detectable_format:number_bullet_lists: the response's blocks (paragraphs, list items) regrouped into
  exactly N groups, merging the smallest neighbours or splitting the largest at a sentence boundary;
  rendered with "***" dividers, "Section k" headers, or "* " items. Needs at least N sentences.
- length_constraints:nth_paragraph_first_word: the same regrouping into N "\\n\\n" paragraphs, with a
  boundary placed before a sentence of the response that already starts with the word (none: no repair).
- combination:two_responses: a response that already holds two answers of comparable length (split by a
  line of asterisks such as "***", or headed "Response 2"/"Option 2"...) gets lm-eval's "******" divider.
  Two separate samples of the same prompt are joined with `join_responses` (curate.strategies.joined_samples,
  when synthesis has two failing samples of a two-responses prompt: k >= 2).
- combination:repeat_prompt: the kwargs' prompt_to_repeat, then the response.
- detectable_format:json_format: {"answer": text} (a JSON string literal when quotation is also asked).
- detectable_format:constrained_response: a response opening with "Yes,"/"No."/"Maybe!" gets
  "My answer is yes." in front of the rest of it.
- keywords:forbidden_words: sentences using a forbidden word are dropped.
- keywords:frequency / keywords:letter_frequency, "less than": sentences holding the keyword (the latest
  first) / the most letters are dropped until the count is below the limit.
- length_constraints:number_sentences / number_words, "less than": cut after the last whole sentence that
  fits. number_sentences "at least": sentences split at "; " and ", and/but/so/yet " until enough.

No honest repair (None unless the response already passes): language:response_language (translation is
not a deterministic edit), keywords:existence and keywords:frequency / letter_frequency / number_words
"at least" (they need new content; appending a list of the required words would teach keyword stuffing).

Does not compose (`conflict()` names the reason; the final verification would refuse them anyway):
- english_lowercase with english_capital, with capital_word_frequency "at least", with
  constrained_response (its options are matched case-sensitively: "My answer is yes."), and with
  multiple_sections whose splitter has capitals ("Section"); english_capital with capital_word_frequency
  "less than", constrained_response, and a splitter with lowercase letters.
- no_comma with repeat_prompt or end_checker when the prompt to repeat / the end phrase holds a comma.
- quotation with repeat_prompt (the response must open with both the request and '"'); json_format with
  repeat_prompt, end_checker, number_bullet_lists, nth_paragraph_first_word, two_responses (they need
  text before or after the JSON, or real lines, which a JSON value escapes).
- two of the layouts (number_paragraphs, nth_paragraph_first_word, multiple_sections, number_bullet_lists,
  two_responses): one regrouping undoes the other; two_responses with number_paragraphs is even
  contradictory in lm-eval (it reads "******" as two "***" dividers with an empty paragraph between).
- title with nth_paragraph_first_word for paragraph 1 (the title would be that paragraph's first word).
Composes through the order (ORDER): reductions first (they see the added text through a second pass
that reserves room for it), then postscript and title, the layout (which keeps a leading title line
and a trailing postscript line out of the regrouping), highlights and the end phrase, the repeated
request, case and commas (after every addition, so added text is lower-cased and comma-free too), and
the wrappers last (JSON, quotes). Case changes compose with repeat_prompt and end_checker because
lm-eval compares those case-insensitively.
"""
from __future__ import annotations

from curate.synth.repair_layout import LAYOUT_FIXES, LAYOUTS, join_responses  # noqa: F401 (join_responses: public)
from curate.synth.repair_surface import ADDITIONS, CASE_AND_COMMAS, CONTENT_EDITS, MEASURES, REDUCTIONS, WRAPPERS
from curate.synth.repair_text import Ctx, Fix, content_overlap, instruction_args, passes

MIN_OVERLAP = 0.5  # compose's default floor for content_overlap; cuts for "less than" limits go lower

# ------------------------------------------------------------------ registry and composition

FIXES: dict[str, Fix] = {**REDUCTIONS, **CONTENT_EDITS, **LAYOUT_FIXES, **ADDITIONS, **CASE_AND_COMMAS, **WRAPPERS}
ORDER = tuple(FIXES)  # the order fixes run in (see the module docstring for why)
NO_REPAIR = ("language:response_language", "keywords:existence")  # plus some "at least" counts (docstring)


def conflict(specs: list[tuple[str, dict]], prompt: str = "") -> str | None:
    """Why these instructions cannot be repaired together (None when they may be)."""
    args = {iid: instruction_args(iid, kw, prompt) or {} for iid, kw in specs}  # as lm-eval fills them
    ids = set(args)
    for reason, test in _CONFLICTS:
        if test(ids, args):
            return reason
    return None


def _has(ids, *wanted):
    return all(w in ids for w in wanted)


def _arg(args, iid, key):
    return str((args.get(iid) or {}).get(key) or "")


_LOWER, _UPPER = "change_case:english_lowercase", "change_case:english_capital"
_CAPS, _SECTIONS = "change_case:capital_word_frequency", "detectable_format:multiple_sections"
_CONFLICTS = (
    ("lowercase and all capitals", lambda i, a: _has(i, _LOWER, _UPPER)),
    ("lowercase and 'at least' capital words",
     lambda i, a: _has(i, _LOWER, _CAPS) and _arg(a, _CAPS, "capital_relation") == "at least"),
    ("all capitals and 'less than' capital words",
     lambda i, a: _has(i, _UPPER, _CAPS) and _arg(a, _CAPS, "capital_relation") == "less than"),
    ("a case change and constrained_response (its options are matched case-sensitively)",
     lambda i, a: "detectable_format:constrained_response" in i and bool(i & {_LOWER, _UPPER})),
    ("lowercase and a section splitter with capitals",
     lambda i, a: _has(i, _LOWER, _SECTIONS) and not _arg(a, _SECTIONS, "section_spliter").islower()),
    ("all capitals and a section splitter with lowercase letters",
     lambda i, a: _has(i, _UPPER, _SECTIONS) and not _arg(a, _SECTIONS, "section_spliter").isupper()),
    ("no_comma and a prompt to repeat holding a comma",
     lambda i, a: _has(i, "punctuation:no_comma", "combination:repeat_prompt")
     and "," in _arg(a, "combination:repeat_prompt", "prompt_to_repeat")),
    ("no_comma and an end phrase holding a comma",
     lambda i, a: _has(i, "punctuation:no_comma", "startend:end_checker")
     and "," in _arg(a, "startend:end_checker", "end_phrase")),
    ("quotation and repeat_prompt (both want the response's first characters)",
     lambda i, a: _has(i, "startend:quotation", "combination:repeat_prompt")),
    ("json_format and an instruction that needs text around the JSON or real lines",
     lambda i, a: "detectable_format:json_format" in i and bool(i & {
         "combination:repeat_prompt", "startend:end_checker", "detectable_format:number_bullet_lists",
         "length_constraints:nth_paragraph_first_word", "combination:two_responses"})),
    ("two layouts (one regrouping undoes the other)", lambda i, a: len(i & set(LAYOUTS)) > 1),
    ("title and a required first word of paragraph 1",
     lambda i, a: _has(i, "detectable_format:title", "length_constraints:nth_paragraph_first_word")
     and _arg(a, "length_constraints:nth_paragraph_first_word", "nth_paragraph") == "1"),
)


def _all_pass(specs, text: str, prompt: str) -> bool:
    return all(passes(iid, kw, text, prompt) for iid, kw in specs)


def _apply(specs, text: str, ctx: Ctx) -> tuple[str | None, str]:
    """Run the fixes in ORDER; each only where its check fails (or room must be reserved).
    Returns (result, the text after the reductions)."""
    reduced = text
    for iid, kw in sorted(specs, key=lambda s: ORDER.index(s[0]) if s[0] in FIXES else len(ORDER)):
        if iid in FIXES and (ctx.reserve.get(iid) or not passes(iid, kw, text, ctx.prompt)):
            args = instruction_args(iid, kw, ctx.prompt)
            text = FIXES[iid](text, args, ctx) if args is not None else None
            if text is None:
                return None, reduced
        if iid in MEASURES or iid in ("keywords:forbidden_words",):
            reduced = text
    return text, reduced


def _reserve(specs, final: str, reduced: str, prompt: str) -> dict:
    """Units that text added after the reductions took (e.g. the end phrase's words)."""
    out = {}
    for iid, kw in specs:
        args = instruction_args(iid, kw, prompt)
        if iid in MEASURES and args and not passes(iid, kw, final, prompt):
            out[iid] = max(1, MEASURES[iid](final, args) - MEASURES[iid](reduced, args))
    return out


def compose(instruction_ids, kwargs_list, response: str, prompt: str = "",
            min_overlap: float = MIN_OVERLAP) -> str | None:
    """The response repaired for every instruction of its prompt, or None: a result passes every
    instruction's lm-eval checker and keeps content_overlap(response, result) >= min_overlap."""
    kwargs_list = list(kwargs_list or [{}] * len(instruction_ids))
    specs = list(zip(instruction_ids, [kw or {} for kw in kwargs_list]))
    if _all_pass(specs, response, prompt):
        return response
    if conflict(specs, prompt) or any(iid not in FIXES and not passes(iid, kw, response, prompt) for iid, kw in specs):
        return None
    ctx = Ctx(prompt, frozenset(instruction_ids))
    text, reduced = _apply(specs, response, ctx)
    if text is not None and not _all_pass(specs, text, prompt):
        reserve = _reserve(specs, text, reduced, prompt)  # second pass: leave room for the additions
        text = _apply(specs, response, Ctx(prompt, ctx.ids, reserve))[0] if reserve else None
    if text is None or not _all_pass(specs, text, prompt):
        return None
    return text if content_overlap(response, text) >= min_overlap else None


def repair(instruction_id: str, kwargs: dict | None, response: str, prompt: str = "",
           min_overlap: float = MIN_OVERLAP) -> str | None:
    """One instruction's repair (compose with a single instruction): a passing text or None."""
    return compose([instruction_id], [kwargs or {}], response, prompt, min_overlap)
