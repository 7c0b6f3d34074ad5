"""The text a repair works on (curate.synth.repair): lm-eval's checker as the fixes call it, the content overlap a
repair must keep, and the response cut into sentence pieces and framed (title line, body, postscript line).

    from curate.synth.repair_text import passes, content_overlap, pieces_of, frame
"""
from __future__ import annotations

import collections
import functools
import json
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

from evals import checks


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


def instruction_args(iid: str, kwargs: dict | None, prompt: str) -> dict | None:
    """The instruction's effective args (lm-eval fills missing ones), so fixes and checker agree."""
    try:
        return _instruction(iid, kwargs, prompt).get_instruction_args() or {}
    except (ValueError, KeyError, TypeError):
        return None


@functools.lru_cache(maxsize=1)
def lm_util():
    """lm-eval's instructions_util (count_words, count_sentences, nltk), imported after evals has set up
    the offline NLTK data (building any instruction does that)."""
    checks.build_instruction("punctuation:no_comma", {}, "")
    from lm_eval.tasks.ifeval import instructions_util
    return instructions_util


# ------------------------------------------------------------------ content overlap

STOPWORDS = frozenset("""a an the and or but so yet if then than of to in on at by for from with without into
over under about as is are was were be been being am do does did have has had it its this that these those
there here i you he she we they me him her us them my your his our their what which who whom when where why
how not no nor can could will would shall should may might must just also very too more most such own
same other each both all any some few only s t""".split())


def _words(text: str) -> list[str]:
    text = re.sub(r"(?<=\d),(?=\d)", "", text)  # "1,000" and "1000" are the same number
    return [w for w in re.findall(r"[a-z]+|\d+", text.lower()) if w not in STOPWORDS]


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

# ------------------------------------------------------------------ sentence pieces and the frame

_END = re.compile(r"[.!?]+[\"')\]*]*[ \t]+|[ \t]*\n\s*")
ITEM = re.compile(r"^\s*(?:[*\-+•]|\d+[.)])\s+")  # a list item's marker
STRUCTURE = re.compile(r"^\s*(?:(?:section|part|paragraph|response|option)\s*\d+\s*[:.]?|[*\-_=~]{3,})\s*$", re.I)
HEADING = re.compile(r"^\s*#+\s*")
_TITLE_LINE = re.compile(r"^<<[^\n]+>>$")
PS_LINE = re.compile(r"^\s*p\.\s?(?:p\.\s?)?s\b", re.I)


def pieces_of(text: str) -> list[str]:
    """Sentences with their trailing whitespace; "".join(pieces) == text. A line end also ends one."""
    out, start = [], 0
    for m in _END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return out


def sentences_of(text: str) -> list[str]:
    return [p.strip() for p in pieces_of(text) if p.strip()]


def join_kept(pieces: list[str], keep: list[bool]) -> str:
    """The kept pieces; a dropped piece's line break moves to the piece before it (paragraphs stay)."""
    out = []
    for piece, kept in zip(pieces, keep):
        if kept:
            out.append(piece)
        elif out and "\n" in piece and "\n" not in out[-1]:
            out[-1] = out[-1].rstrip(" \t") + piece[len(piece.rstrip()):]
    return "".join(out).strip()


def frame(text: str) -> tuple[str, str, str]:
    """(title line, body, postscript line): layouts regroup the body only."""
    lines = text.strip().split("\n")
    head = lines.pop(0).strip() if len(lines) > 1 and _TITLE_LINE.match(lines[0].strip()) else ""
    tail = lines.pop().strip() if len(lines) > 1 and PS_LINE.match(lines[-1]) else ""
    return head, "\n".join(lines).strip(), tail


def reframe(head: str, body: str, tail: str, sep: str = "\n\n") -> str:
    return sep.join(p for p in (head, body, tail) if p)
