"""Layout repairs (curate.synth.repair): the response's own blocks (paragraphs, list items) regrouped into exactly N
paragraphs, sections or bullets, a paragraph boundary placed before a sentence that already starts with a required
word, and two answers divided (or two samples joined) with lm-eval's "******". One layout per response: a second
regrouping would undo the first (curate.synth.repair.conflict).
"""
from __future__ import annotations

import re
from typing import Callable

from curate.synth.repair_text import HEADING, ITEM, STRUCTURE, frame, reframe, sentences_of

# ------------------------------------------------------------------ blocks

def _blocks(body: str) -> list[list[str]]:
    """Paragraphs and list items as lists of sentences; markers, dividers and "Section k" lines dropped,
    a markdown heading kept as the opening words of its block."""
    blocks, cur = [], []
    for line in body.split("\n"):
        item = ITEM.match(line) and not STRUCTURE.match(line)
        if not line.strip() or STRUCTURE.match(line) or item or HEADING.match(line):
            blocks.append(cur)
            cur = []
        if line.strip() and not STRUCTURE.match(line):
            text = ITEM.sub("", HEADING.sub("", line)).strip()
            cur.append(text + (":" if HEADING.match(line) and text[-1:].isalnum() else ""))
    blocks.append(cur)
    return [sentences_of(" ".join(b)) for b in blocks if b]


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

# ------------------------------------------------------------------ layouts


def _regrouped(text: str, n: int, render: Callable[[list[str]], str], sep: str = "\n\n") -> str | None:
    head, body, tail = frame(text)
    groups = _group(_blocks(body), n)
    if groups is None:
        return None
    return reframe(head, render([" ".join(g) for g in groups]), tail, sep)


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
    head, body, tail = frame(text)
    blocks = _blocks(body)
    flat = [s for b in blocks for s in b]
    fits = [j for j, s in enumerate(flat) if _first_word(s) == word
            and (j == 0 if nth == 1 else j >= nth - 1) and len(flat) - j >= n - nth + 1]
    if not fits:
        return None  # no sentence of the response starts with the word: prepending it would not be fluent
    before, after = _split_blocks(blocks, fits[0])
    groups = (_group(before, nth - 1) or []) + (_group(after, n - nth + 1) or [])
    body = "\n\n".join(" ".join(g) for g in groups)
    return reframe(head, body, tail, "\n")  # title and postscript stay inside the first/last paragraph


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


LAYOUT_FIXES = {
    "length_constraints:number_paragraphs": _paragraphs,
    "length_constraints:nth_paragraph_first_word": _nth_paragraph,
    "detectable_format:multiple_sections": _sections,
    "detectable_format:number_bullet_lists": _bullets,
    "combination:two_responses": _two_responses,
}
LAYOUTS = tuple(LAYOUT_FIXES)
