"""The quality filter's rules were made faster without changing an outcome (evals/quality.py: a cached token kind in
_alpha, _GLUED tried where a letter run starts, _symbols by a regex or not at all on ASCII, _repeated's words and
4-in-a-row, the language rule's letters counted up to its floor only). The rules as they were before are kept here as
the reference; each rule's own output (not only the first rule that fires) must be the same.

Measured before the change on 13,531 (text, prompt, metadata, finish reason) cases (sample traffic with its own
metadata, trimmed, French asked, upper- and lowercased, its loose variants and prompts; the labelled candidates; 2,000
of the benchmark's answers; IFEval's prompts; prose in four languages; edge cases): every rule's output, fluency(),
cut_repetition() and trim_truncated() identical; fluency() on the benchmark's answers ~380 -> ~280 us.
"""
import random
import re

import pytest
from builders import sample_traffic

from evals import checks, quality

q = quality


# ------------------------------------------------------------------ the rules before the speed-ups (the reference)

def old_alpha(text, prompt, md, finish, min_alpha):
    tokens = [t.strip(q._STRIP) for t in text.split()
              if not (q._MARKUP.match(t) or q._NUMBER.match(t.strip(q._STRIP)))]
    if not tokens:
        return "no words"
    words = sum(bool(q._WORDLIKE.match(t) and q._VOWEL.search(t)) for t in tokens)
    if words / len(tokens) < min_alpha:
        return f"{words / len(tokens):.0%} word-like tokens (< {min_alpha:.0%})"
    raw = len(text.split())
    if raw >= 10 and words / raw < q.MIN_WORDS_SHARE:
        return f"mostly numbers and markup ({words} words in {raw} tokens)"
    return None


OLD_GLUED = re.compile(r"[A-Za-z]{25,}|(?:[A-Za-z]+_){2,}[A-Za-z]+")


def old_glued(text, prompt, md, finish, min_alpha):
    words = [m.group() for m in OLD_GLUED.finditer(q._QUOTED.sub(" ", text)) if "http" not in m.group().lower()]
    return f"glued letters {words[0][:30]!r}" if words else None


def old_symbols(text, prompt, md, finish, min_alpha):
    if not q._asks_english(md):
        return None
    share = sum(ord(c) > 0x2000 for c in text) / max(1, len(text))
    return f"{share:.0%} symbols/emoji" if share > 0.05 else None


def old_words_rules(text):
    """_repeated's last two rules, on its words, as they were."""
    words = [w.lower() for w in re.findall(r"[\w']+", text)]
    for i in range(len(words) - 3):
        if words[i] == words[i + 1] == words[i + 2] == words[i + 3] and not words[i].isdigit():
            return f"the word {words[i][:20]!r} 4 times in a row"
    grams = list(zip(words, words[1:], words[2:]))
    if len(grams) >= 12 and len(set(grams)) / len(grams) < 0.5:
        return f"repeated phrases ({len(set(grams)) / len(grams):.0%} distinct 3-grams)"
    return None


def words_rules(text):
    """_repeated's words rules alone: the line rules before them answer nothing on a one-line text."""
    return q._repeated(" ".join(text.split()), "", {}, None, q.MIN_ALPHA)


def old_language_floor(text):
    return len(q._LETTER.findall(re.sub(r"[`*#_<>\[\]{}\"|]", " ", text).lower())) >= 40


def language_floor(text, monkeypatch):
    """Whether the language rule asks the detector (it returns None below the floor without asking)."""
    asked = []
    monkeypatch.setattr(quality, "_detect", lambda plain: asked.append(plain))
    quality._language(text, "", {}, None, q.MIN_ALPHA)
    return bool(asked)


# ------------------------------------------------------------------ the texts

def traffic() -> list[str]:
    out = []
    for a in sample_traffic.answers(1000):
        out += [a, a.upper(), a.lower()] + checks._distinct(checks.loose_variants(a))
    return out


def random_texts(n=3000, seed=0) -> list[str]:
    """Strings built to hit each rule's edges: letter runs near 25, underscores, non-ASCII letters whose lowercase is
    longer ("İ"), symbols above U+2000, repeated words, numbers and markup."""
    rng = random.Random(seed)
    pieces = ["a", "b", "Ab", "_", " ", "  ", "\n", "x" * 12, "word", "WORD", "İ", "ß", "é", "😀", "—", "\u2001", "*",
              "- ", "1.", "42", "the ", "the the the the ", "'", "http", "[key_name]", "`code_span_x`", "ÄÖ"]
    return ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus():
    return traffic() + random_texts()


ENGLISH = {}
FRENCH = {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "fr"}]}


@pytest.mark.parametrize("new, old", [(q._alpha, old_alpha), (q._glued, old_glued), (q._symbols, old_symbols)])
def test_each_rule_answers_as_before(new, old, corpus):
    for md in (ENGLISH, FRENCH):
        differ = [t[:60] for t in corpus if new(t, "", md, None, q.MIN_ALPHA) != old(t, "", md, None, q.MIN_ALPHA)]
        assert differ == []


def test_repeated_words_rules_answer_as_before(corpus):
    assert [t[:60] for t in corpus if words_rules(t) != old_words_rules(" ".join(t.split()))] == []
    assert words_rules("İİ İİ İİ İİ") == old_words_rules("İİ İİ İİ İİ") is not None  # non-ASCII: lowered per word


def test_the_language_floor_is_where_it_was(corpus, monkeypatch):
    edge = ["a" * 39, "a" * 40, "A" * 39 + "1", "é" * 40, "_" * 80 + "a" * 39]
    assert [t[:60] for t in corpus + edge if language_floor(t, monkeypatch) != old_language_floor(t)] == []
    assert [language_floor(t, monkeypatch) for t in edge] == [False, True, False, True, False]


def test_the_glued_pattern_finds_the_same_matches():
    texts = random_texts(20000, seed=1) + ["a_b_c", "1_ab_cd_ef", "x" * 30, "Ab" * 13 + "_c_d", "ab_cd"]
    for t in texts:
        assert [(m.start(), m.group()) for m in q._GLUED.finditer(t)] == \
            [(m.start(), m.group()) for m in OLD_GLUED.finditer(t)], t
