"""Repair: deterministic, content-preserving fixes that make a response follow its IFEval instructions.

    from curate.synth.repair import repair, compose, content_overlap
    repair("punctuation:no_comma", {}, response, prompt)            # -> str | None
    compose(instruction_ids, kwargs_list, response, prompt)          # -> str | None

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

import collections
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from evals import checks

MIN_OVERLAP = 0.5  # compose's default floor for content_overlap; cuts for "less than" limits go lower

LAYOUTS = ("length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word",
           "detectable_format:multiple_sections", "detectable_format:number_bullet_lists",
           "combination:two_responses")


@dataclass(frozen=True)
class Ctx:
    """What a fix may know besides its own args: the prompt, every id of the prompt, room to leave."""
    prompt: str = ""
    ids: frozenset = frozenset()
    reserve: dict = field(default_factory=dict)  # reducer id -> units to leave for text added later

    def sep(self) -> str:
        # "\n\n" would make a title, postscript or repeated request a paragraph of its own
        return "\n" if "length_constraints:nth_paragraph_first_word" in self.ids else "\n\n"


Fix = Callable[[str, dict, Ctx], Optional[str]]

# ------------------------------------------------------------------ lm-eval's checkers


def _instruction(iid: str, kwargs: dict | None, prompt: str):
    return checks.build_instruction(iid, kwargs, prompt)[0]


def passes(iid: str, kwargs: dict | None, response: str, prompt: str = "") -> bool:
    """lm-eval's strict verdict (as evals.checks.ifeval_check); malformed kwargs count as a failure."""
    try:
        return bool(response.strip()) and bool(_instruction(iid, kwargs, prompt).check_following(response))
    except (ValueError, KeyError, TypeError):  # e.g. repeat_prompt without prompt_to_repeat
        return False


def _args(iid: str, kwargs: dict | None, prompt: str) -> dict | None:
    """The instruction's effective args (lm-eval fills missing ones), so fixes and checker agree."""
    try:
        return _instruction(iid, kwargs, prompt).get_instruction_args() or {}
    except (ValueError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=1)
def _util():
    """lm-eval's instructions_util (count_words, count_sentences, nltk), imported after evals has set up
    the offline NLTK data (building any instruction does that)."""
    checks.build_instruction("punctuation:no_comma", {}, "")
    from lm_eval.tasks.ifeval import instructions_util
    return instructions_util


# ------------------------------------------------------------------ content overlap

_STOPWORDS = frozenset("""a an the and or but so yet if then than of to in on at by for from with without into
over under about as is are was were be been being am do does did have has had it its this that these those
there here i you he she we they me him her us them my your his our their what which who whom when where why
how not no nor can could will would shall should may might must just also very too more most such own
same other each both all any some few only s t""".split())


def _words(text: str) -> list[str]:
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # "1,000" and "1000" are the same number
    return [w for w in re.findall(r"[a-z]+|\d+", text.lower()) if w not in _STOPWORDS]


def _plain(text: str) -> str:
    """The text a JSON wrapping holds (its strings joined), else the text itself."""
    try:
        value = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
    except ValueError:
        return text
    strings = []

    def walk(v):
        if isinstance(v, str):
            strings.append(v)
        elif isinstance(v, dict):
            [walk(x) for x in v.values()]
        elif isinstance(v, list):
            [walk(x) for x in v]
    walk(value)
    return "\n".join(strings)


def content_overlap(source: str, repaired: str) -> float:
    """Share of the source's content words that the repaired text keeps, counted with multiplicity:
    sum over words w of min(count_source(w), count_repaired(w)) / (number of content words in the source).
    Content words: lower-cased runs of letters or of digits, minus a short English stopword list; case,
    commas, markup and JSON escaping do not matter (a JSON-wrapped result is decoded first). Added words
    do not lower it; dropped sentences do. 1.0 when the source has no content words."""
    src = collections.Counter(_words(source))
    if not src:
        return 1.0
    out = collections.Counter(_words(_plain(repaired)))
    return sum(min(n, out[w]) for w, n in src.items()) / sum(src.values())


# ------------------------------------------------------------------ sentences, blocks, frame

_END = re.compile(r"[.!?]+[\"')\]*]*[ \t]+|[ \t]*\n\s*")
_ITEM = re.compile(r"^\s*(?:[*\-+•]|\d+[.)])\s+")  # a list item's marker
_STRUCTURE = re.compile(r"^\s*(?:(?:section|part|paragraph|response|option)\s*\d+\s*[:.]?|[*\-_=~]{3,})\s*$", re.I)
_HEADING = re.compile(r"^\s*#+\s*")
_TITLE_LINE = re.compile(r"^<<[^\n]+>>$")
_PS_LINE = re.compile(r"^\s*p\.\s?(?:p\.\s?)?s\b", re.I)


def _pieces(text: str) -> list[str]:
    """Sentences with their trailing whitespace; "".join(pieces) == text. A line end also ends one."""
    out, start = [], 0
    for m in _END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def _sentences(text: str) -> list[str]:
    return [p.strip() for p in _pieces(text) if p.strip()]


def _join_kept(pieces: list[str], keep: list[bool]) -> str:
    """The kept pieces; a dropped piece's line break moves to the piece before it (paragraphs stay)."""
    out = []
    for piece, kept in zip(pieces, keep):
        if kept:
            out.append(piece)
        elif out and "\n" in piece and "\n" not in out[-1]:
            out[-1] = out[-1].rstrip(" \t") + piece[len(piece.rstrip()):]
    return "".join(out).strip()


def _blocks(body: str) -> list[list[str]]:
    """Paragraphs and list items as lists of sentences; markers, dividers and "Section k" lines dropped,
    a markdown heading kept as the opening words of its block."""
    blocks, cur = [], []
    for line in body.split("\n"):
        item = _ITEM.match(line) and not _STRUCTURE.match(line)
        if not line.strip() or _STRUCTURE.match(line) or item or _HEADING.match(line):
            blocks.append(cur)
            cur = []
        if line.strip() and not _STRUCTURE.match(line):
            text = _ITEM.sub("", _HEADING.sub("", line)).strip()
            cur.append(text + (":" if _HEADING.match(line) and text[-1:].isalnum() else ""))
    blocks.append(cur)
    return [_sentences(" ".join(b)) for b in blocks if b]


def _group(blocks: list[list[str]], n: int) -> list[list[str]] | None:
    """Exactly n groups of sentences, in order: merge the smallest neighbours, split the largest."""
    groups = [list(b) for b in blocks if b]
    if sum(map(len, groups)) < n or (n < 1 and groups):
        return None
    size = lambda g: sum(map(len, g))  # noqa: E731 - characters, so merges keep groups even
    while len(groups) > n:
        i = min(range(len(groups) - 1), key=lambda i: size(groups[i]) + size(groups[i + 1]))
        groups[i:i + 2] = [groups[i] + groups[i + 1]]
    while len(groups) < n:
        i = max(range(len(groups)), key=lambda i: (len(groups[i]), size(groups[i])))
        half = len(groups[i]) // 2
        groups[i:i + 1] = [groups[i][:half], groups[i][half:]]
    return groups


def _frame(text: str) -> tuple[str, str, str]:
    """(title line, body, postscript line): layouts regroup the body only."""
    lines = text.strip().split("\n")
    head = lines.pop(0).strip() if len(lines) > 1 and _TITLE_LINE.match(lines[0].strip()) else ""
    tail = lines.pop().strip() if len(lines) > 1 and _PS_LINE.match(lines[-1]) else ""
    return head, "\n".join(lines).strip(), tail


def _reframe(head: str, body: str, tail: str, sep: str = "\n\n") -> str:
    return sep.join(p for p in (head, body, tail) if p)


# ------------------------------------------------------------------ reductions


def _limit(args: dict, key: str, ctx: Ctx, iid: str) -> int:
    return args[key] - ctx.reserve.get(iid, 0)


def _drop_until(text: str, order: list[int], fits: Callable[[str], bool]) -> str | None:
    """Drop the pieces named by `order`, one at a time, until the text fits."""
    pieces = _pieces(text)
    keep = [True] * len(pieces)
    for i in order:
        if fits(_join_kept(pieces, keep)):
            break
        keep[i] = False
    out = _join_kept(pieces, keep)
    return out if out and fits(out) else None


def _prefix(text: str, fits: Callable[[str], bool]) -> str | None:
    """The longest run of whole sentences from the start that fits."""
    pieces = _pieces(text)
    for k in range(len(pieces), 0, -1):
        out = "".join(pieces[:k]).strip()
        if out and fits(out):
            return out
    return None


def _forbidden(text, args, ctx):
    words = args["forbidden_words"]
    hit = lambda s: any(re.search(r"\b" + re.escape(w) + r"\b", s, re.I) for w in words)  # noqa: E731
    pieces = _pieces(text)
    return _drop_until(text, [i for i, p in enumerate(pieces) if hit(p)], lambda t: not hit(t))


def _keyword_count(text: str, args: dict) -> int:
    return len(re.findall(args["keyword"], text, flags=re.I))  # lm-eval's own count (a regex search)


def _keyword_frequency(text, args, ctx):
    if args["relation"] != "less than":
        return None  # more occurrences need new content
    limit = _limit(args, "frequency", ctx, "keywords:frequency")
    pieces = _pieces(text)
    order = [i for i in reversed(range(len(pieces))) if _keyword_count(pieces[i], args)]
    return _drop_until(text, order, lambda t: _keyword_count(t, args) < limit)


def _letter_count(text: str, args: dict) -> int:
    return text.lower().count(args["letter"])


def _letter_frequency(text, args, ctx):
    if args["let_relation"] != "less than":
        return None
    limit = _limit(args, "let_frequency", ctx, "keywords:letter_frequency")
    pieces = _pieces(text)
    order = sorted(range(len(pieces)), key=lambda i: (-_letter_count(pieces[i], args), -i))
    return _drop_until(text, order, lambda t: _letter_count(t, args) < limit)


# "; " and ", but/so/yet " join clauses; ", and " is left alone: it also closes lists ("A, B, and C")
_SPLITTABLE = re.compile(r"(?<=\w\w);\s+(\w)|(?<=\w\w),\s+(?=(?:but|so|yet)\s)(\w)")


def _split_one(text: str) -> str | None:
    m = _SPLITTABLE.search(text)
    if not m:
        return None
    letter = m.group(1) or m.group(2)
    return text[:m.start()] + ". " + letter.upper() + text[m.end():]


def _number_sentences(text, args, ctx):
    count = _util().count_sentences
    if args["relation"] == "less than":
        limit = _limit(args, "num_sentences", ctx, "length_constraints:number_sentences")
        return _prefix(text, lambda t: count(t) < limit)
    while count(text) < args["num_sentences"]:  # "at least": split compound sentences, nothing added
        text = _split_one(text)
        if text is None:
            return None
    return text


def _number_words(text, args, ctx):
    if args["relation"] != "less than":
        return None
    limit = _limit(args, "num_words", ctx, "length_constraints:number_words")
    return _prefix(text, lambda t: _util().count_words(t) < limit)


# how each "less than" reduction measures the text, so compose can reserve room for later additions
MEASURES = {
    "keywords:frequency": _keyword_count,
    "keywords:letter_frequency": _letter_count,
    "length_constraints:number_sentences": lambda t, a: _util().count_sentences(t),
    "length_constraints:number_words": lambda t, a: _util().count_words(t),
}

# ------------------------------------------------------------------ content edits

_STANCE = re.compile(r"^\W*(yes|no|maybe)\s*[,.!:;\-]+\s*", re.I)  # "No one knows" is not a stance


def _constrained(text, args, ctx):
    m = _STANCE.match(text.strip())
    if not m:
        return None
    rest = text.strip()[m.end():]
    return f"My answer is {m.group(1).lower()}." + (" " + rest[:1].upper() + rest[1:] if rest else "")


_PLACEHOLDER_SPANS = (
    re.compile(r"\{\{?\s*([^{}\n]{1,40}?)\s*\}\}?"),
    re.compile(r"(?<!<)<([^<>\n/]{1,40})>(?!>)"),
    re.compile(r"\(((?:your|insert|enter|name of)\b[^()\n]{0,40})\)", re.I),
)


def _placeholders(text, args, ctx):
    for rx in _PLACEHOLDER_SPANS:
        text = rx.sub(lambda m: "[" + re.sub(r"^(?:insert|enter)\s+", "", m.group(1).strip(), flags=re.I) + "]", text)
    return text


def _postscript(text, args, ctx):
    marker = args["postscript_marker"]
    label = marker + ("." if re.fullmatch(r"P\.(?:P\.)?S", marker) else "")  # "P.P.S" -> "P.P.S."
    head, body, tail = _frame(text)
    if tail:  # a postscript with another marker: give it the required one
        return _reframe(head, body, label + " " + _PS_LINE.sub("", tail).lstrip(". "), ctx.sep())
    pieces = _pieces(body)
    real = [i for i, p in enumerate(pieces) if p.strip()]
    if len(real) < 2:
        return None
    last = real[-1]
    moved = _ITEM.sub("", pieces[last]).strip()
    body = _join_kept(pieces, [i != last for i in range(len(pieces))])
    return _reframe(head, body, f"{label} {moved}", ctx.sep())


_OPENER = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great question)\b[\s,.!:;-]*", re.I)


def _title_words(body: str) -> list[str]:
    """A markdown heading's words, else the longest clause of the first sentence of 3+ words (openers
    such as "Sure!" skipped), at most 8 words."""
    heading = re.search(r"^\s*#+\s*(.+)$", body, re.M)
    sentences = [_OPENER.sub("", s) for s in _sentences(_ITEM.sub("", _HEADING.sub("", body)))]
    first = heading.group(1) if heading else next((s for s in sentences if len(s.split()) >= 3), "")
    clauses = [c.strip(" *#\"'<>") for c in re.split(r"[,;:.!?()\[\]<>]", first)]
    return max(clauses, key=lambda c: len(c.split()), default="").split()[:8]


def _title(text, args, ctx):
    words = _title_words(_frame(text)[1])
    if not words:
        return None
    title = " ".join(words)
    return f"<<{title[:1].upper() + title[1:]}>>" + ctx.sep() + text.strip()


# ------------------------------------------------------------------ layouts


def _regrouped(text: str, n: int, render: Callable[[list[str]], str], sep: str = "\n\n") -> str | None:
    head, body, tail = _frame(text)
    groups = _group(_blocks(body), n)
    if groups is None:
        return None
    return _reframe(head, render([" ".join(g) for g in groups]), tail, sep)


def _paragraphs(text, args, ctx):
    return _regrouped(text, args["num_paragraphs"], "\n\n***\n\n".join)


def _sections(text, args, ctx):
    spl = args["section_spliter"]
    return _regrouped(text, args["num_sections"],
                      lambda gs: "\n\n".join(f"{spl} {i}\n{g}" for i, g in enumerate(gs, 1)))


def _bullets(text, args, ctx):
    return _regrouped(text, args["num_bullets"], lambda gs: "\n".join("* " + g for g in gs))


def _first_word(sentence: str) -> str:
    """The first word as lm-eval's ParagraphFirstWordCheck reads it."""
    word = sentence.split()[0].lstrip("'").lstrip('"') if sentence.split() else ""
    return re.split(r"[.,?!'\"]", word)[0].lower()


def _split_blocks(blocks: list[list[str]], j: int) -> tuple[list, list]:
    """The blocks before and from flat sentence index j (the block holding j is cut there)."""
    before, after, seen = [], [], 0
    for b in blocks:
        cut = max(0, min(len(b), j - seen))
        before.append(b[:cut])
        after.append(b[cut:])
        seen += len(b)
    return before, after


def _nth_paragraph(text, args, ctx):
    n, nth, word = args["num_paragraphs"], args["nth_paragraph"], args["first_word"]
    head, body, tail = _frame(text)
    blocks = _blocks(body)
    flat = [s for b in blocks for s in b]
    fits = [j for j, s in enumerate(flat) if _first_word(s) == word
            and (j == 0 if nth == 1 else j >= nth - 1) and len(flat) - j >= n - nth + 1]
    if not fits:
        return None  # no sentence of the response starts with the word: prepending it would not be fluent
    before, after = _split_blocks(blocks, fits[0])
    groups = (_group(before, nth - 1) or []) + (_group(after, n - nth + 1) or [])
    body = "\n\n".join(" ".join(g) for g in groups)
    return _reframe(head, body, tail, "\n")  # title and postscript stay inside the first/last paragraph


_DIVIDER = re.compile(r"^\s*\*{3,}\s*$", re.M)  # asterisks, as asked; "---" is a markdown rule
_SECOND = re.compile(r"^\W*(?:response|answer|option|version|alternative)\s*#?\s*(?:2|two|b)\b", re.I | re.M)


def _two_answers(parts: list[str]) -> bool:
    """Two distinct parts of comparable length (a sign-off after a divider is not a second answer)."""
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        return False
    a, b = (len(p.split()) for p in parts)
    return min(a, b) >= 0.3 * max(a, b)


def _two_responses(text, args, ctx):
    parts = [p.strip() for p in _DIVIDER.split(text) if p.strip()]
    if len(parts) != 2:
        m = _SECOND.search(text)
        parts = [text[:m.start()].strip(), text[m.start():].strip()] if m else []
    if not _two_answers(parts):
        return None  # one answer only: halving it would not be two responses
    return parts[0] + "\n******\n" + parts[1]


def join_responses(first: str, second: str) -> str | None:
    """Two separate samples as one two_responses answer (None when they are the same text)."""
    a, b = first.strip().replace("******", "***"), second.strip().replace("******", "***")
    return a + "\n******\n" + b if a and b and a != b else None


# ------------------------------------------------------------------ inline additions


def _highlightable(piece: str) -> bool:
    core = _ITEM.sub("", piece).strip()
    return bool(re.search(r"[A-Za-z]", core)) and "*" not in core and not _STRUCTURE.match(core)


def _wrap(piece: str, line_start: bool) -> str:
    marker = _ITEM.match(piece)
    lead = marker.group(0) if marker else ""
    core = piece[len(lead):].rstrip()
    # at a line start "*x" is a bullet to lm-eval, and "* *x*" reads as an empty highlight "* *"
    star = "**" if line_start else "*"
    return lead + star + core + star + piece[len(lead) + len(core):]


def _highlights(text, args, ctx):
    need = args["num_highlights"]
    head, body, tail = _frame(text)
    pieces = _pieces(body)
    spots = [i for i, p in enumerate(pieces) if _highlightable(p)]
    inline = [i for i in spots if i and not pieces[i - 1].endswith("\n")]
    spots = inline if len(inline) >= need else spots  # plain *x* where the text allows
    if len(spots) < need:
        return None
    for k in range(need):  # spread over the text
        i = spots[k * len(spots) // need]
        pieces[i] = _wrap(pieces[i], i == 0 or pieces[i - 1].endswith("\n"))
    return _reframe(head, "".join(pieces), tail, ctx.sep())


def _end_phrase(text, args, ctx):
    body = text.rstrip()
    last = body.split("\n")[-1]
    join = "\n" if _ITEM.match(last) or _STRUCTURE.match(last) else " "  # not inside a list item
    return body + join + args["end_phrase"].strip()


def _repeat(text, args, ctx):
    request = (args.get("prompt_to_repeat") or "").strip()
    return request + ctx.sep() + text.strip() if request else None


# ------------------------------------------------------------------ case and punctuation


def _no_comma(text, args, ctx):
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r",(?=\s)", "", text)  # "a, b" -> "a b"
    return text.replace(",", " ")


def _capital_words(text: str) -> int:
    return sum(w.isupper() for w in _util().nltk.word_tokenize(text))  # lm-eval's count


def _capital_frequency(text, args, ctx):
    n = args["capital_frequency"]
    if args["capital_relation"] == "less than":  # acronyms, the last first, as words ("NASA" -> "Nasa")
        for m in reversed(list(re.finditer(r"\b[A-Z]{2,}\b", text))):
            if _capital_words(text) < n:
                break
            text = text[:m.start()] + m.group(0).capitalize() + text[m.end():]
        return text
    ranked = [w for w, _ in collections.Counter(w for w in re.findall(r"[A-Za-z]{4,}", text.lower())
                                                 if w not in _STOPWORDS).most_common()]
    for word in ranked:  # key terms, most frequent first, every occurrence
        if _capital_words(text) >= n:
            break
        text = re.sub(r"\b" + word + r"\b", word.upper(), text, flags=re.I)
    return text


# ------------------------------------------------------------------ wrappers


def _json(text, args, ctx):
    value = text.strip()
    if value.isupper():  # json escapes line breaks as "\n", whose lower-case n would fail english_capital
        value = " ".join(value.split())
    if "startend:quotation" in ctx.ids:
        return json.dumps(value, ensure_ascii=False)  # a JSON string literal is quoted too
    key = "ANSWER" if value.isupper() else "answer"
    return json.dumps({key: value}, ensure_ascii=False, indent=2)


def _quote(text, args, ctx):
    t = text.strip()
    first = t.split("\n")[0]
    if _ITEM.match(first) or _STRUCTURE.match(first) or re.match(r"\s*(?:section|part)\s*\d", first, re.I):
        return '"\n' + t + '\n"'  # a quote glued to "* item" would hide the item from the bullet count
    return '"' + t + '"'


# ------------------------------------------------------------------ registry and composition

FIXES: dict[str, Fix] = {
    "keywords:forbidden_words": _forbidden,
    "keywords:frequency": _keyword_frequency,
    "keywords:letter_frequency": _letter_frequency,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_words": _number_words,
    "detectable_format:constrained_response": _constrained,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:title": _title,
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:number_bullet_lists": _bullets,
    "combination:two_responses": _two_responses,
    "detectable_format:number_highlighted_sections": _highlights,
    "startend:end_checker": _end_phrase,
    "combination:repeat_prompt": _repeat,
    "punctuation:no_comma": _no_comma,
    "change_case:capital_word_frequency": _capital_frequency,
    "change_case:english_lowercase": lambda t, a, c: t.lower(),
    "change_case:english_capital": lambda t, a, c: t.upper(),
    "detectable_format:json_format": _json,
    "startend:quotation": _quote,
}
ORDER = tuple(FIXES)  # the order fixes run in (see the module docstring for why)
NO_REPAIR = ("language:response_language", "keywords:existence")  # plus some "at least" counts (docstring)


def conflict(specs: list[tuple[str, dict]], prompt: str = "") -> str | None:
    """Why these instructions cannot be repaired together (None when they may be)."""
    args = {iid: _args(iid, kw, prompt) or {} for iid, kw in specs}  # as lm-eval fills them
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
            args = _args(iid, kw, ctx.prompt)
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
        args = _args(iid, kw, prompt)
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
