"""The quality filter every candidate passes after its checks (`not_fluent: <why>`), whatever strategy made it.

    from evals.quality import fluency, trim_truncated
    text = trim_truncated(call_text, finish_reason)            # a sample cut by the token budget -> whole sentences
    keep, why = fluency(text, prompt, metadata, finish_reason)  # (True, None) or (False, "a run of '!'")

A weak teacher under token bans or at a high temperature writes text that passes a check and must still never
reach training. What the real 135M teacher produced (tests/fixtures/candidates_labelled.jsonl, tested for
precision and recall in tests/test_quality_filter.py), and the rule that catches it:
- too short to be an answer: fewer than 3 words;
- letter soup: few word-like tokens (letters with a vowel, an apostrophe or hyphen at most, punctuation around),
  words glued into long runs ("GREATGRADUAMENTAL_FANCIATING"), mostly numbers and markup (empty bullets), or
  capitalised pseudo-words (a third of the words in capitals where the prompt asked for none), or invented words
  (a quarter of the distinct words of 4+ letters, 5 or more, outside the embedder's English vocabulary);
- character runs: the same character 6+ times ("!!!!!!", emoji runs), markdown rules (---, ===, ***) excepted;
- symbols and emoji: more than 5% of the characters above U+2000 in an answer the prompt wanted in English;
- repetition: 3+ empty list items ("5.", "* "), a line repeated 3+ times or a third of the lines duplicates, the
  same word 4+ times in a row, or fewer than half of the word 3-grams distinct ("lalala lalala, ku ku ku");
- a chat turn leaking into the answer: a line that is only a role name ("user", "assistant") or a template token;
- truncated: the token budget stopped it mid-sentence and no sentence end was left to trim back to;
- another language than the prompt asked for (langdetect's detector, seeded, run by langdetect-rs; English unless
  the prompt carries a language:response_language instruction), judged on 40+ letters only (short texts mislead it).
"""
from __future__ import annotations

import functools
import itertools
import re

MIN_ALPHA = 0.6  # share of word-like tokens below which text is letter soup (settings fluency_min_alpha)
MIN_WORDS = 3
MIN_WORDS_SHARE = 0.3  # words among all whitespace tokens, numbers and markup included
RUN = re.compile(r"(\S)\1{5,}")  # one non-space character 6+ times in a row
RULE_CHARS = "-=*_.#~"  # markdown rules, dividers ("***", "------") and ellipses are not degenerate
_WORDLIKE = re.compile(r"^[A-Za-z]+(?:['\u2019\-_][A-Za-z]+)*$")  # snake_case keys of a JSON answer count
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
_STRIP = "\"'`*#_()[]{}<>.,;:!?-–—…/\\|~"
_SENTENCE_END = re.compile(r"(?:[.!?…][\"')\]*_]*|[\"')\]}>*`]|\n)(?=\s|$)")
_ROLE_LINE = re.compile(r"^\s*(?:user|assistant|system|<\|[a-z_]+\|>|<\|im_(?:start|end)\|>.*)\s*$", re.I | re.M)
# 25+ letters, or WORDS_GLUED_BY_UNDERSCORES; tried only where a letter run starts (the lookbehind): a run that fails
# at its first letter fails at every later one, so the matches are the same at ~1/2.5 of the time
_GLUED = re.compile(r"(?<![A-Za-z])(?:[A-Za-z]{25,}|(?:[A-Za-z]+_){2,}[A-Za-z]+)")
_LETTER = re.compile(r"[^\W\d_]")
_MARKER_LINE = re.compile(r"^\s*(?:p\.?\s?)+s\.?\s*:?\s*$", re.I)  # a bare postscript marker: P.S. / P.P.S


def trim_truncated(text: str, finish_reason: str | None) -> str:
    """A text the token budget stopped ("length") cut back after its last whole sentence or line; other text as is.
    Nothing to cut back to: the text unchanged (fluency() then calls it truncated)."""
    if finish_reason != "length":
        return text
    ends = [m.end() for m in _SENTENCE_END.finditer(text.rstrip())]
    if not ends:
        return text
    kept = text[:ends[-1]].rstrip()
    lines = kept.split("\n")
    if len(lines) > 1 and _MARKER_LINE.match(lines[-1]):  # "P.S." whose text the budget cut: no postscript at all
        kept = "\n".join(lines[:-1]).rstrip()
    return kept


def fluency(text: str, prompt: str = "", metadata: dict | None = None, finish_reason: str | None = None,
            min_alpha: float = MIN_ALPHA) -> tuple[bool, str | None]:
    """(keep, why not): the first rule of the module docstring the text breaks."""
    for rule in (_short, _alpha, _glued, _shouting, _runs, _symbols, _role, _repeated, _truncated, _language, _invented):
        why = rule(text, prompt, metadata or {}, finish_reason, min_alpha)
        if why:
            return False, why
    return True, None


_UNIT = re.compile(r"[^.!?\n]+[.!?…]*[\"')\]]*")  # a sentence, or what a line holds up to its end


def cut_repetition(text: str) -> str | None:
    """The answer up to where it starts repeating itself, in whole sentences: cut before the first sentence (3+
    words) said before, or the second of two dividers in a row; None when nothing repeats or nothing is left.
    Stopping is the fix for a loop: what came before the loop stays as the model wrote it."""
    seen, last_empty = set(), False
    for m in _UNIT.finditer(text):
        norm = " ".join(re.findall(r"[\w']+", m.group().lower()))
        repeated = (len(norm.split()) >= 3 and norm in seen) or (not norm and last_empty)
        if repeated:
            kept = re.sub(r"(?:\n\s*[*\-_=~#]+\s*)+$", "", trim_truncated(text[:m.start()].rstrip(), "length"))
            return kept if kept.strip() and kept != text.rstrip() else None
        if m.group().strip():
            seen.add(norm)
            last_empty = not norm
    return None


def degenerate(text: str, prompt: str = "", metadata: dict | None = None) -> bool:
    """What the gate's degeneration guard and the sweep count: an answer the filter would not keep."""
    return not fluency(text or "", prompt or "", metadata)[0]


_NUMBER = re.compile(r"^[$€£]?[\d.,:/\-%]*\d[\d.,:/\-%]*(?:st|nd|rd|th|am|pm|s)?$", re.I)  # 9:30, 2023-01-01, 4th
_MARKUP = re.compile(r"^(?:[*\-+#>|=~_{}\[\](),`]+(?:json)?|\d+[.)]?)$")  # bullets, rules, headings, JSON braces, fences


_SKIP, _WORD, _OTHER = 0, 1, 2


def _token_kind(t: str) -> int:
    """A whitespace token: _SKIP for markdown structure or a bare number (neither word nor soup), else _WORD when it
    is word-like once punctuation is stripped, else _OTHER (a token of symbols only counts as no word)."""
    stripped = t.strip(_STRIP)
    if _MARKUP.match(t) or _NUMBER.match(stripped):
        return _SKIP
    return _WORD if _WORDLIKE.match(stripped) and _VOWEL.search(stripped) else _OTHER


# the same tokens recur from answer to answer, and three regexes per token were most of _alpha's time; long tokens
# (rare) are not cached, so the cache stays small
_cached_kind = functools.lru_cache(maxsize=1 << 16)(_token_kind)


def _short(text, prompt, md, finish, min_alpha):
    n = len(text.split())
    return f"only {n} word(s)" if n < MIN_WORDS else None


def _alpha(text, prompt, md, finish, min_alpha):
    kinds = [_cached_kind(t) if len(t) <= 64 else _token_kind(t) for t in text.split()]
    raw = len(kinds)  # numbers and markup included: a list of empty bullets or numbers is no answer
    n_tokens, words = raw - kinds.count(_SKIP), kinds.count(_WORD)
    if not n_tokens:
        return "no words"
    if words / n_tokens < min_alpha:
        return f"{words / n_tokens:.0%} word-like tokens (< {min_alpha:.0%})"
    if raw >= 10 and words / raw < MIN_WORDS_SHARE:
        return f"mostly numbers and markup ({words} words in {raw} tokens)"
    return None


_QUOTED_KEYS = re.compile(r"\[[^\]\n]*\]|`[^`\n]*`")  # placeholders and code spans: names, not words
_QUOTED = re.compile(r"\[[^\]\n]*\]|\{[^}\n]*\}|\"[^\"\n]*\"|`[^`\n]*`|<[^>\n]*>")


def _glued(text, prompt, md, finish, min_alpha):
    # placeholders ([mentor_name_city]), JSON keys and code spans hold snake_case names on purpose
    words = [m.group() for m in _GLUED.finditer(_QUOTED.sub(" ", text)) if "http" not in m.group().lower()]
    return f"glued letters {words[0][:30]!r}" if words else None


_CAPS_OK = ("change_case:english_capital", "change_case:capital_word_frequency")


def _shouting(text, prompt, md, finish, min_alpha):
    """Capitalised pseudo-words ("SANGRACIA LINCONNACIA") where the prompt asked for no capitals."""
    if any(i in _CAPS_OK for i in md.get("instruction_id_list") or []):
        return None
    words = [w for w in re.findall(r"[A-Za-z]{4,}", text)]
    caps = [w for w in words if w.isupper()]
    if len(caps) >= 5 and len(caps) >= 0.3 * len(words):
        return f"{len(caps)} of {len(words)} words in capitals"
    return None


UNKNOWN_SHARE = 0.25  # distinct 4+ letter words outside the vocabulary above which text is invented words
MIN_UNKNOWN = 5  # and at least this many of them: the vocabulary lacks some real words (fennel, latte, json)
_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "ers", "est", "ness", "ment", "ments", "ful", "less", "ion",
             "ions", "ity", "al")


def _invented(text, prompt, md, finish, min_alpha):
    """Invented words ("LEGISLACY CONCET", "covecked by the parakeach"): a quarter of the distinct words of 4+
    letters, and 5 at least, are not English words (vocabulary()), in an answer the prompt wanted in English."""
    if not _asks_english(md):
        return None
    split = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", _QUOTED_KEYS.sub(" ", text))  # camelCase keys are two words
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", split) if len(w) >= 4}
    if len(words) < 6:
        return None
    unknown = sorted(w for w in words if not _known(w))
    share = len(unknown) / len(words)
    return f"invented words ({len(unknown)} of {len(words)}: {', '.join(unknown[:3])})" \
        if share >= UNKNOWN_SHARE and len(unknown) >= MIN_UNKNOWN else None


def _known(word: str) -> bool:
    vocab = vocabulary()
    if word in vocab:
        return True
    for suffix in _SUFFIXES:  # inflections the vocabulary lists only the stem of
        stem = word[:-len(suffix)]
        if word.endswith(suffix) and len(stem) >= 3 and (
                stem in vocab or stem + "e" in vocab or (stem[-1] == stem[-2] and stem[:-1] in vocab)
                or (stem.endswith("i") and stem[:-1] + "y" in vocab)):
            return True
    return False


@functools.lru_cache(maxsize=1)
def vocabulary() -> frozenset:
    """English words: the whole-word entries of the embedder's WordPiece vocabulary (MiniLM, bert-base-uncased's:
    22.5k alphabetic entries), which ships with mend (train.embed), so the filter needs nothing downloaded."""
    import json

    from train.embed import ensure_unzipped
    data = json.loads((ensure_unzipped() / "tokenizer.json").read_text(encoding="utf-8"))
    return frozenset(w for w in data["model"]["vocab"] if w.isalpha())


def _runs(text, prompt, md, finish, min_alpha):
    for m in RUN.finditer(text):
        if m.group(1) not in RULE_CHARS:
            return f"a run of {m.group(1)!r}"
    return None


def _asks_english(md: dict) -> bool:
    return _asked_language(md) == "en"


def _asked_language(md: dict) -> str:
    for iid, kw in zip(md.get("instruction_id_list") or [], md.get("kwargs") or []):
        if iid == "language:response_language" and (kw or {}).get("language"):
            return kw["language"]
    return "en"


_HIGH = re.compile("[\u2001-\U0010ffff]")  # characters above U+2000


def _symbols(text, prompt, md, finish, min_alpha):
    if not _asks_english(md):
        return None
    share = 0.0 if text.isascii() else len(_HIGH.findall(text)) / max(1, len(text))
    return f"{share:.0%} symbols/emoji" if share > 0.05 else None


def _role(text, prompt, md, finish, min_alpha):
    m = _ROLE_LINE.search(text)
    return f"a chat turn leaked ({m.group().strip()[:20]!r})" if m else None


_EMPTY_ITEM = re.compile(r"^\s*(?:[*\-+•]|\d+[.)]|#+)(?:\s*(?:[*\-+•]|\d+[.)]))*\s*$")  # "* ", "5.", "1. 2."


_DIVIDER = re.compile(r"^\s*([*\-_=~])\1{2,}\s*$")  # "***" between paragraphs (lm-eval's number_paragraphs)


def _repeated(text, prompt, md, finish, min_alpha):
    lines = [ln for ln in text.splitlines() if ln.strip()]
    empty = sum(bool(_EMPTY_ITEM.match(ln)) and not _DIVIDER.match(ln) for ln in lines)
    if empty >= 3:
        return f"{empty} empty list items"
    # dividers with nothing between them: empty paragraphs or sections
    bare = sum(bool(_DIVIDER.match(a) and _DIVIDER.match(b)) for a, b in zip(lines, lines[1:]))
    if bare >= 2:
        return f"{bare + 1} dividers in a row"
    lines = [ln.strip().lower() for ln in text.splitlines() if len(ln.strip()) >= 8]
    if lines:
        top = max(lines.count(ln) for ln in set(lines))
        dup = 1 - len(set(lines)) / len(lines)
        if top >= 3 or (len(lines) >= 4 and dup >= 1 / 3):
            return "repeated lines"
    # lowercasing first finds the same words in ASCII text only ("İ".lower() is "i" and a combining dot)
    words = re.findall(r"[\w']+", text.lower()) if text.isascii() else [w.lower() for w in re.findall(r"[\w']+", text)]
    four = next((a for a, b, c, d in zip(words, words[1:], words[2:], words[3:])
                 if a == b == c == d and not a.isdigit()), None)
    if four is not None:
        return f"the word {four[:20]!r} 4 times in a row"
    grams = list(zip(words, words[1:], words[2:]))
    if len(grams) >= 12 and len(set(grams)) / len(grams) < 0.5:
        return f"repeated phrases ({len(set(grams)) / len(grams):.0%} distinct 3-grams)"
    return None


def _truncated(text, prompt, md, finish, min_alpha):
    # trim_truncated cut a length-stopped text back to its last sentence end or line break; none at all: truncated
    if finish == "length" and not _SENTENCE_END.search(text.rstrip() + " "):
        return "truncated mid-sentence"
    return None


def _language(text, prompt, md, finish, min_alpha):
    asked = _asked_language(md)
    plain = re.sub(r"[`*#_<>\[\]{}\"|]", " ", text).lower()  # markup out; langdetect misreads all-capitals text
    if next(itertools.islice(_LETTER.finditer(plain), 39, None), None) is None:  # < 40 letters: counted up to 40
        return None
    found = _detect(plain)
    if found is None:
        return None
    lang, prob = found
    if lang.split("-")[0] != asked.split("-")[0] and prob >= 0.8:
        return f"language {lang} ({prob:.0%}), asked {asked}"
    return None


def _detect(text: str) -> tuple[str, float] | None:
    try:
        detector = _detector_factory().create()
        detector.append(text)
        best = detector.get_probabilities()[0]
        return best.lang, best.prob
    except Exception:  # LangDetectException on text without features
        return None


@functools.lru_cache(maxsize=1)
def _detector_factory():
    """langdetect run by langdetect-rs, its port to Rust: the same language and probability to the last bit at ~1/30
    of the time (langdetect was 93% of a logged run's scoring). fastText's bundled model, py3langid, CLD2 and lingua
    changed 2.7-4.4% of the decisions (measured in tests/test_quality_language.py). Profiles compiled in, nothing to
    download; its own factory with a fixed seed (the walk is random otherwise): the global one is lm-eval's."""
    from langdetect_rs import PROFILES_DIRECTORY, DetectorFactory
    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.seed = 0
    return factory
