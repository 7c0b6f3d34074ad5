"""Surface repairs (curate.synth.repair): fixes that edit the response's text and keep its layout. Reductions drop
or cut sentences for "less than" limits (MEASURES says how each one counts, so compose can reserve room); content
edits state the stance, bracket placeholders, move the last sentence into a postscript or add a title; inline
additions wrap highlights and add the end phrase or the repeated request; then case and commas; the wrappers
(JSON, quotes) last. Each group is a dict
{instruction id: fix} in the order compose runs it (curate.synth.repair.FIXES).
"""
from __future__ import annotations

import collections
import json
import re
from typing import Callable

from curate.synth.repair_text import (HEADING, ITEM, PS_LINE, STOPWORDS, STRUCTURE, Ctx, frame, join_kept, lm_util,
                                      pieces_of, reframe, sentences_of)


# ------------------------------------------------------------------ reductions


def _limit(args: dict, key: str, ctx: Ctx, iid: str) -> int:
    return args[key] - ctx.reserve.get(iid, 0)


def _drop_until(text: str, order: list[int], fits: Callable[[str], bool]) -> str | None:
    """Drop the pieces named by `order`, one at a time, until the text fits."""
    pieces = pieces_of(text)
    keep = [True] * len(pieces)
    for i in order:
        if fits(join_kept(pieces, keep)):
            break
        keep[i] = False
    out = join_kept(pieces, keep)
    return out if out and fits(out) else None


def _prefix(text: str, fits: Callable[[str], bool]) -> str | None:
    """The longest run of whole sentences from the start that fits."""
    pieces = pieces_of(text)
    for k in range(len(pieces), 0, -1):
        out = "".join(pieces[:k]).strip()
        if out and fits(out):
            return out
    return None


def _forbidden(text, args, ctx):
    words = args["forbidden_words"]
    hit = lambda s: any(re.search(r"\b" + re.escape(w) + r"\b", s, re.I) for w in words)  # noqa: E731
    pieces = pieces_of(text)
    return _drop_until(text, [i for i, p in enumerate(pieces) if hit(p)], lambda t: not hit(t))


def _keyword_count(text: str, args: dict) -> int:
    return len(re.findall(args["keyword"], text, flags=re.I))  # lm-eval's own count (a regex search)


def _keyword_frequency(text, args, ctx):
    if args["relation"] != "less than":
        return None  # more occurrences need new content
    limit = _limit(args, "frequency", ctx, "keywords:frequency")
    pieces = pieces_of(text)
    order = [i for i in reversed(range(len(pieces))) if _keyword_count(pieces[i], args)]
    return _drop_until(text, order, lambda t: _keyword_count(t, args) < limit)


def _letter_count(text: str, args: dict) -> int:
    return text.lower().count(args["letter"])


def _letter_frequency(text, args, ctx):
    if args["let_relation"] != "less than":
        return None
    limit = _limit(args, "let_frequency", ctx, "keywords:letter_frequency")
    pieces = pieces_of(text)
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
    count = lm_util().count_sentences
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
    return _prefix(text, lambda t: lm_util().count_words(t) < limit)


# how each "less than" reduction measures the text, so compose can reserve room for later additions
MEASURES = {
    "keywords:frequency": _keyword_count,
    "keywords:letter_frequency": _letter_count,
    "length_constraints:number_sentences": lambda t, a: lm_util().count_sentences(t),
    "length_constraints:number_words": lambda t, a: lm_util().count_words(t),
}


REDUCTIONS = {
    "keywords:forbidden_words": _forbidden,
    "keywords:frequency": _keyword_frequency,
    "keywords:letter_frequency": _letter_frequency,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_words": _number_words,
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
    head, body, tail = frame(text)
    if tail:  # a postscript with another marker: give it the required one
        return reframe(head, body, label + " " + PS_LINE.sub("", tail).lstrip(". "), ctx.sep())
    pieces = pieces_of(body)
    real = [i for i, p in enumerate(pieces) if p.strip()]
    if len(real) < 2:
        return None
    last = real[-1]
    moved = ITEM.sub("", pieces[last]).strip()
    body = join_kept(pieces, [i != last for i in range(len(pieces))])
    return reframe(head, body, f"{label} {moved}", ctx.sep())


_OPENER = re.compile(r"^(?:sure|certainly|of course|okay|ok|absolutely|great question)\b[\s,.!:;-]*", re.I)


def _title_words(body: str) -> list[str]:
    """A markdown heading's words, else the longest clause of the first sentence of 3+ words (openers
    such as "Sure!" skipped), at most 8 words."""
    heading = re.search(r"^\s*#+\s*(.+)$", body, re.M)
    sentences = [_OPENER.sub("", s) for s in sentences_of(ITEM.sub("", HEADING.sub("", body)))]
    first = heading.group(1) if heading else next((s for s in sentences if len(s.split()) >= 3), "")
    clauses = [c.strip(" *#\"'<>") for c in re.split(r"[,;:.!?()\[\]<>]", first)]
    return max(clauses, key=lambda c: len(c.split()), default="").split()[:8]


def _title(text, args, ctx):
    words = _title_words(frame(text)[1])
    if not words:
        return None
    title = " ".join(words)
    return f"<<{title[:1].upper() + title[1:]}>>" + ctx.sep() + text.strip()


CONTENT_EDITS = {
    "detectable_format:constrained_response": _constrained,
    "detectable_content:number_placeholders": _placeholders,
    "detectable_content:postscript": _postscript,
    "detectable_format:title": _title,
}

# ------------------------------------------------------------------ inline additions


def _highlightable(piece: str) -> bool:
    core = ITEM.sub("", piece).strip()
    return bool(re.search(r"[A-Za-z]", core)) and "*" not in core and not STRUCTURE.match(core)


def _wrap(piece: str, line_start: bool) -> str:
    marker = ITEM.match(piece)
    lead = marker.group(0) if marker else ""
    core = piece[len(lead):].rstrip()
    # at a line start "*x" is a bullet to lm-eval, and "* *x*" reads as an empty highlight "* *"
    star = "**" if line_start else "*"
    return lead + star + core + star + piece[len(lead) + len(core):]


def _highlights(text, args, ctx):
    need = args["num_highlights"]
    head, body, tail = frame(text)
    pieces = pieces_of(body)
    spots = [i for i, p in enumerate(pieces) if _highlightable(p)]
    inline = [i for i in spots if i and not pieces[i - 1].endswith("\n")]
    spots = inline if len(inline) >= need else spots  # plain *x* where the text allows
    if len(spots) < need:
        return None
    for k in range(need):  # spread over the text
        i = spots[k * len(spots) // need]
        pieces[i] = _wrap(pieces[i], i == 0 or pieces[i - 1].endswith("\n"))
    return reframe(head, "".join(pieces), tail, ctx.sep())


def _end_phrase(text, args, ctx):
    body = text.rstrip()
    last = body.split("\n")[-1]
    join = "\n" if ITEM.match(last) or STRUCTURE.match(last) else " "  # not inside a list item
    return body + join + args["end_phrase"].strip()


def _repeat(text, args, ctx):
    request = (args.get("prompt_to_repeat") or "").strip()
    return request + ctx.sep() + text.strip() if request else None


ADDITIONS = {
    "detectable_format:number_highlighted_sections": _highlights,
    "startend:end_checker": _end_phrase,
    "combination:repeat_prompt": _repeat,
}

# ------------------------------------------------------------------ case and punctuation


def _no_comma(text, args, ctx):
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r",(?=\s)", "", text)  # "a, b" -> "a b"
    return text.replace(",", " ")


def _capital_words(text: str) -> int:
    return sum(w.isupper() for w in lm_util().nltk.word_tokenize(text))  # lm-eval's count


def _capital_frequency(text, args, ctx):
    n = args["capital_frequency"]
    if args["capital_relation"] == "less than":  # acronyms, the last first, as words ("NASA" -> "Nasa")
        for m in reversed(list(re.finditer(r"\b[A-Z]{2,}\b", text))):
            if _capital_words(text) < n:
                break
            text = text[:m.start()] + m.group(0).capitalize() + text[m.end():]
        return text
    ranked = [w for w, _ in collections.Counter(w for w in re.findall(r"[A-Za-z]{4,}", text.lower())
                                                 if w not in STOPWORDS).most_common()]
    for word in ranked:  # key terms, most frequent first, every occurrence
        if _capital_words(text) >= n:
            break
        text = re.sub(r"\b" + word + r"\b", word.upper(), text, flags=re.I)
    return text


CASE_AND_COMMAS = {
    "punctuation:no_comma": _no_comma,
    "change_case:capital_word_frequency": _capital_frequency,
    "change_case:english_lowercase": lambda t, a, c: t.lower(),
    "change_case:english_capital": lambda t, a, c: t.upper(),
}

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
    if ITEM.match(first) or STRUCTURE.match(first) or re.match(r"\s*(?:section|part)\s*\d", first, re.I):
        return '"\n' + t + '\n"'  # a quote glued to "* item" would hide the item from the bullet count
    return '"' + t + '"'


WRAPPERS = {
    "detectable_format:json_format": _json,
    "startend:quotation": _quote,
}
