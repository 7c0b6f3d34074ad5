"""lm-eval's IFEval checkers that call langdetect (response_language, english_capital, english_lowercase) run on
langdetect-rs as mend imports them (evals.ifeval.modules()); their outcomes must be the ones plain langdetect gives
with the same seed. The reference runs in a fresh process (this file as a script): lm-eval's module as lm-eval imports
it, on langdetect 1.0.9 itself, seeded 0.

Measured before the switch on 21,708 texts (see evals/ifeval.py): all identical. These texts include ones whose
language flips with the seed (seed 1 instead of 0 changes 330 of those 21,708), so a reference run with another seed,
or an unseeded one, fails here.
"""
import json
import subprocess
import sys
from pathlib import Path

from builders import sample_traffic  # stdlib only: safe in the reference process too

ROOT = Path(__file__).resolve().parent.parent
SEED = 0
LANGUAGES = ("en", "fr", "de", "es", "it", "pt")

HANDWRITTEN = [
    "Le marché du village ouvre chaque samedi matin, et les habitants viennent y acheter des légumes frais.",
    "Ich schreibe Ihnen, um zu fragen, wann die Spülmaschine in meiner Wohnung repariert wird.",
    "El río atraviesa la ciudad de norte a sur. En invierno a veces se congela.",
    "No sé si podré venir a la fiesta del sábado porque tengo que trabajar, pero intentaré pasar un rato después de "
    "cenar.",
    "Il treno per Milano parte alle otto e mezza, ma oggi è in ritardo di venti minuti.",
    "The heat pump moves heat from outside air into the house, even on cold days.",
    "ciao bello come va",
    # texts whose language depends on the seed
    "dialogue:",
    "YOUR ANSWER IS YES.",
    "1. **keep a pot of water in it**",
    "WRITE INSTRUCTIONS FOR SETTING UP A NEW WIRELESS PRINTER AT HOME. ANSWER WITH LESS THAN 470 WORDS.",
    "HERE ARE TWO EXAMPLES OF A DOCTOR AND A PATIENT DISCUSSING HEALTHY SLEEP HABITS:\n\nDOCTOR:",
    "stone morning bright, paper market the market garden. river river river city bright slowly light market.",
    # no features: lm-eval counts the instruction as followed
    "", "1234", "😀😀😀", "http://example.com",
]


def texts() -> list[str]:
    """The handwritten texts and the first 60 sample-traffic answers, each also upper- and lowercased."""
    base = HANDWRITTEN + sample_traffic.answers(60)
    return base + [t.upper() for t in base] + [t.lower() for t in base]


def outcomes(registry: dict, langdetect) -> list:
    """Per text: langdetect.detect's answer (or its exception), then each checker's check_following."""
    checkers = [("language:response_language", {"language": lang}) for lang in LANGUAGES]
    checkers += [("change_case:english_capital", {}), ("change_case:english_lowercase", {})]
    built = []
    for iid, kwargs in checkers:
        inst = registry[iid](iid)
        inst.build_description(**kwargs)
        built.append(inst)
    out = []
    for text in texts():
        try:
            found = langdetect.detect(text)
        except langdetect.LangDetectException as e:
            found = f"no language: {e}"
        out.append([found] + [bool(inst.check_following(text)) for inst in built])
    return out


def test_the_checkers_on_langdetect_rs_decide_as_on_langdetect():
    import langdetect_rs

    from evals import ifeval
    registry = ifeval.registry()
    from lm_eval.tasks.ifeval import instructions
    assert instructions.langdetect is langdetect_rs and langdetect_rs.DetectorFactory.seed == SEED
    ours = outcomes(registry, langdetect_rs)
    ref = subprocess.run([sys.executable, __file__, str(SEED)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert ref.returncode == 0, ref.stderr[-2000:]
    theirs = json.loads(ref.stdout)
    differ = [(t[:50], a, b) for t, a, b in zip(texts(), ours, theirs) if a != b]
    assert len(ours) == len(theirs) and differ == []
    # both outcomes of every checker occur, and detection fails on some texts
    for col in range(1, len(ours[0])):
        assert {row[col] for row in ours} == {True, False}, col
    assert any(row[0].startswith("no language") for row in ours)


if __name__ == "__main__":  # the reference: plain langdetect, seeded, under lm-eval's checkers as lm-eval imports them
    sys.path.insert(0, str(ROOT))
    from evals import nltk_offline
    nltk_offline.ensure()  # lm-eval's import wants the punkt data (built offline)
    import langdetect
    from lm_eval.tasks.ifeval import instructions, instructions_registry
    assert instructions.langdetect is langdetect and langdetect.__name__ == "langdetect", instructions.langdetect
    import logging
    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)  # as mend does
    langdetect.DetectorFactory.seed = int(sys.argv[1])
    print(json.dumps(outcomes(instructions_registry.INSTRUCTION_DICT, langdetect)))
