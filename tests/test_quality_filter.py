"""The quality filter (evals.quality) on real candidates of the 135M teacher, labelled by reading them
(tests/fixtures/candidates_labelled.jsonl; tests/fixtures/README.md says how they were made), and on one small case
per rule.

Measured on the fixture (80 candidates, 40 labelled degenerate), with the filter applied the way synthesis applies it
(trim a length-cut text to its last whole sentence, then fluency()): on the degenerate class precision 1.00 (31 of 31
flagged are degenerate), recall 0.78 (31 of 40). The floors asserted below leave a little room. The thresholds were
chosen while looking at this fixture, so these are not held-out figures; on the 1,000 logged answers of
examples/traffic (the same model, greedy) the filter flags 247, read through by kind: mostly repetition loops.
What it misses is fluent-looking: a placeholder dump, word salad of real words, pseudo-Latin, numbers in a
list, hyphenated letter soup, a made-up JSON config cut mid-structure; capitalised soup where the prompt asked for
capitals is caught only when it invents enough words outside the vocabulary (evals.quality.vocabulary).
"""
import json
from pathlib import Path

import pytest

from evals.quality import fluency, trim_truncated

FIXTURE = Path(__file__).parent / "fixtures" / "candidates_labelled.jsonl"
PRECISION, RECALL = 0.95, 0.75  # asserted floors (measured: 1.00 and 0.78, see the docstring)


def judged():
    rows = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = []
    for r in rows:
        text = trim_truncated(r["response"], r["finish_reason"])
        keep, why = fluency(text, r["prompt"], r["metadata"], r["finish_reason"])
        out.append((r, keep, why))
    return out


def test_fixture_is_real_labelled_and_large_enough():
    rows = [r for r, _, _ in judged()]
    assert len(rows) >= 60 and {r["label"] for r in rows} == {"fluent", "degenerate"}
    assert sum(r["label"] == "degenerate" for r in rows) >= 20 and sum(r["label"] == "fluent" for r in rows) >= 20
    assert all(r["response"] and r["finish_reason"] in ("stop", "length") for r in rows)


def test_precision_and_recall_on_degenerate_candidates():
    results = judged()
    flagged = [(r, why) for r, keep, why in results if not keep]
    true_pos = [r for r, _ in flagged if r["label"] == "degenerate"]
    degenerate = [r for r, _, _ in results if r["label"] == "degenerate"]
    precision = len(true_pos) / max(1, len(flagged))
    recall = len(true_pos) / max(1, len(degenerate))
    wrong = [(r["id"], why) for r, why in flagged if r["label"] == "fluent"]
    missed = [r["id"] for r in degenerate if r not in true_pos]
    assert precision >= PRECISION, f"precision {precision:.2f}; fluent text dropped: {wrong}"
    assert recall >= RECALL, f"recall {recall:.2f}; degenerate text kept: {missed}"


@pytest.mark.parametrize("text, why", [
    ("ok sure", "only 2 word(s)"),
    ("x1 :: 12 ++ 44 ;; zz ok", "word-like"),
    ("GREATGRADUAMENTAL_FANCIATING_OFFICER said hello to the whole town.", "glued letters"),
    ("Dear SANGRACIA LINCONNACIA, please share with SUBCULTURASION AUTOGENESIS SEATUBA ANIMALEUS today.", "capitals"),
    ("What a lovely day it is!!!!!!!! Really lovely.", "a run of '!'"),
    ("I love this answer so much 🎄🎁💖 truly 🎄🎁 a gift 💖💖 ok", "symbols/emoji"),
    ("Here is the list:\n1.\n2.\n3.\n4.\nThat is all for now.", "empty list items"),
    ("The cat sat.\nThe cat sat.\nThe cat sat.\nThe dog ran.", "repeated lines"),
    ("it was fine and then ku ku ku ku went the bird.", "4 times in a row"),
    ("Here is a note for you.\nuser\nWhat else can you do?", "a chat turn leaked"),
    ("der schnelle braune fuchs springt über den faulen hund und rennt dann in den wald.", "language de"),
])
def test_each_rule(text, why):
    keep, reason = fluency(text)
    assert not keep and why in reason, reason


def test_fluent_text_lists_json_and_asked_languages_pass():
    assert fluency("The heat pump moves heat from outside air into the house, even on cold days.") == (True, None)
    assert fluency("* Cost savings of commuting\n* Increased flexibility\n* Better work-life balance")[0]
    assert fluency('```json\n{"title": "A quiet morning", "author": "Ana Lopez"}\n```')[0]
    # lm-eval's paragraph dividers are not empty list items; dividers with nothing between them are
    paragraphs = "\n\n***\n\n".join(f"Paragraph {w} of the answer, a whole sentence." for w in "abcd")
    assert fluency(paragraphs) == (True, None)
    assert "dividers in a row" in fluency("One short answer here.\n***\n***\n***\nThe end of it.")[1]
    md = {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": "de"}]}
    assert fluency("der schnelle braune fuchs springt über den faulen hund und rennt dann in den wald.", "", md)[0]
    assert fluency("WE ARE HAVING A PARTY ON SATURDAY NIGHT AT OUR FLAT, SO PLEASE KNOCK IF IT GETS LOUD.", "",
                   {"instruction_id_list": ["change_case:english_capital"], "kwargs": [{}]})[0]


def test_a_length_cut_sample_is_trimmed_or_called_truncated():
    assert trim_truncated("One whole sentence. And a cut one that goes", "length") == "One whole sentence."
    assert trim_truncated("Kept as it is, no cut", "stop") == "Kept as it is, no cut"
    assert trim_truncated("Thanks for reading.\n\nP.S. If you", "length") == "Thanks for reading."
    keep, why = fluency("a long answer that the budget cut before any sentence could end", finish_reason="length")
    assert not keep and "truncated" in why
