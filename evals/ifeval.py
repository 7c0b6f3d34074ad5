"""The one bridge to lm-evaluation-harness's IFEval module (`lm_eval/tasks/ifeval/`).

Everything mend knows about IFEval instructions goes through here:
- the registry: `INSTRUCTION_IDS` (without importing lm-eval), `registry()` (INSTRUCTION_DICT) and
  `conflicts()` (INSTRUCTION_CONFLICTS, made symmetric by the callers that need it);
- builders: `build_instruction` rebuilds an instruction from logged kwargs (the checks, stripping);
  `new_instruction` draws fresh arguments (sample traffic, synthesis), `fresh_instruction` does so seeded;
  `seeded_random` seeds the global `random` that lm-eval's builders draw from;
- descriptions: `instruction_docs()`, the first docstring paragraph of each instruction class;
- stripping: `strip_instructions` / `base_request`, a prompt without its instruction sentences.
Scoring (strict and loose verdicts, reasons) stays in evals/checks.py.

lm-eval is imported lazily and once (`modules()`): it takes 2-3 s (it pulls in `datasets`), and its
IFEval module wants NLTK's punkt data, which evals/nltk_offline.py builds offline first.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import logging
import random
from pathlib import Path

from evals import nltk_offline

# The IFEval instruction ids lm-eval registers (lm_eval.tasks.ifeval.instructions_registry.INSTRUCTION_DICT).
# Listed here so registering the checks does not import lm-eval; tests/test_checks.py asserts it equals lm-eval's.
INSTRUCTION_IDS = (
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title", "combination:two_responses",
    "combination:repeat_prompt", "startend:end_checker", "change_case:capital_word_frequency",
    "change_case:english_capital", "change_case:english_lowercase", "punctuation:no_comma",
    "startend:quotation",
)

# ------------------------------------------------------------------ the registry


@functools.cache
def modules():
    """(instructions_registry, instructions_util), imported once with offline NLTK data, the checkers' langdetect
    calls on langdetect-rs, seeded."""
    nltk_offline.ensure()  # lm-eval's IFEval module looks for punkt_tab at import and would download it
    import langdetect_rs
    from lm_eval.tasks.ifeval import instructions, instructions_registry, instructions_util
    # lm-eval's response_language, english_capital and english_lowercase checkers call `langdetect.detect` (~2-10 ms);
    # langdetect-rs, its Rust port (seeded by ensure() like langdetect), gives the same language at ~1/30 of the time.
    # Measured in two fresh processes, seed 0, on 21,708 texts (sample traffic, its loose variants and prompts, the
    # bench's answers, IFEval's prompts, prose in 14 languages, edge cases, each also upper- and lowercased): every
    # detect() result and all 347,328 checker outcomes identical (tests/test_ifeval_langdetect.py keeps checking).
    # Only lm-eval's module global is repointed: its code is untouched, `import langdetect` still gives langdetect.
    instructions.langdetect = langdetect_rs
    # lm-eval logs an ERROR with the whole response when langdetect finds no letters in it (and counts the
    # language instruction as followed); in a run over thousands of traces that buries the terminal
    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)
    return instructions_registry, instructions_util


def registry() -> dict:
    """lm-eval's INSTRUCTION_DICT: instruction id -> checker class."""
    return modules()[0].INSTRUCTION_DICT


def conflicts() -> dict[str, set[str]]:
    """lm-eval's INSTRUCTION_CONFLICTS as sets (listed one way only there: json_format conflicts with most)."""
    return {k: set(v) for k, v in modules()[0].INSTRUCTION_CONFLICTS.items()}


def util():
    """lm-eval's instructions_util (count_words, count_sentences, ...)."""
    return modules()[1]


# ------------------------------------------------------------------ builders

@contextlib.contextmanager
def seeded_random(seed: str):
    """Seed the global `random` (lm-eval's builders draw from it) and restore its state afterwards."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def build_instruction(instruction_id: str, kwargs: dict | None, prompt: str):
    """Exactly as lm-eval's utils.test_instruction_following_*: drop falsy kwargs, build, and
    rebuild with the prompt for instructions that take one. Returns (instruction, description)."""
    instruction = registry()[instruction_id](instruction_id)
    kwargs = {k: v for k, v in (kwargs or {}).items() if v}
    # lm-eval fills missing or invalid kwargs at random from the global `random` (e.g. letter_frequency with
    # letter "#" in IFEval keys 1122 and 1129), so the reference itself is not reproducible there; mend seeds
    # the draw from the instruction and its kwargs (same verdict every run).
    with seeded_random(f"{instruction_id}|{sorted(kwargs.items())}"):
        description = instruction.build_description(**kwargs)
        args = instruction.get_instruction_args()
        if args and "prompt" in args:
            description = instruction.build_description(prompt=prompt)
    return instruction, description


def new_instruction(instruction_id: str, base: str) -> tuple[str, dict]:
    """A new (description, kwargs) from the instruction's own builder, arguments drawn from the global `random`
    (callers seed it); repeat_prompt repeats `base`. kwargs keep what the checker needs to rebuild it."""
    inst = registry()[instruction_id](instruction_id)
    args = {"prompt_to_repeat": base} if instruction_id == "combination:repeat_prompt" else {}
    description = inst.build_description(**args)
    kwargs = {k: v for k, v in (inst.get_instruction_args() or {}).items() if v is not None}
    return description, kwargs


def fresh_instruction(instruction_id: str, base: str, rng_seed: str) -> tuple[str, dict] | None:
    """new_instruction with the draw seeded by rng_seed; None if `instruction_id` is not an IFEval id."""
    if instruction_id not in registry():
        return None
    with seeded_random(rng_seed):
        return new_instruction(instruction_id, base)


def instruction_specs(metadata: dict | None) -> list[tuple[str, dict]]:
    """The (instruction id, kwargs) pairs that IFEval-style metadata names, in order."""
    metadata = metadata or {}
    ids = metadata.get("instruction_id_list") or []
    kwargs = metadata.get("kwargs") or [{}] * len(ids)
    if len(kwargs) != len(ids):
        raise ValueError(f"metadata has {len(ids)} instruction ids but {len(kwargs)} kwargs entries")
    return [(iid, kw or {}) for iid, kw in zip(ids, kwargs)]


# ------------------------------------------------------------------ stripping instructions from a prompt

def strip_instructions(prompt: str, metadata: dict | None) -> tuple[str, bool]:
    """The prompt with each instruction's description (rebuilt from its kwargs) cut out, whitespace
    collapsed; the flag says whether every description was found. Unknown ids or malformed kwargs: (prompt,
    False). Synthesis needs all of them found to reuse the request; clustering takes what it gets."""
    text = prompt
    try:
        found = True
        for iid, kwargs in instruction_specs(metadata):
            desc = build_instruction(iid, kwargs, prompt)[1]
            found = found and desc in text
            text = text.replace(desc, " ")
    except Exception:  # unknown instruction id or malformed kwargs (lm-eval raises ValueError, KeyError, ...)
        return prompt, False
    return " ".join(text.split()), found


def base_request(prompt: str, metadata: dict | None) -> str | None:
    """The request without its verifiable instructions: metadata's own base text if the writer kept one
    (`base_request`, `base_prompt`), else the stripped prompt. None when the metadata names no instruction,
    or a description cannot be rebuilt or found (an unknown id): do not guess where the request ends."""
    md = metadata or {}
    for key in ("base_request", "base_prompt"):
        if md.get(key):
            return md[key]
    if not md.get("instruction_id_list"):
        return None
    text, found = strip_instructions(prompt, md)
    return text if found and text else None


# ------------------------------------------------------------------ descriptions

@functools.cache
def instruction_docs() -> dict[str, str]:
    """instruction id -> first docstring paragraph of its lm-eval class; {} if lm-eval is missing or restructured.

    Read from lm-eval's source with `ast` rather than imported: importing the IFEval module
    loads nltk and langdetect and probes for downloads (seconds), too slow for every redraw of the review.
    """
    try:
        spec = importlib.util.find_spec("lm_eval")
        folder = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "ifeval"
        docs = _class_docs(folder / "instructions.py")
        return {iid: docs.get(cls, "") for iid, cls in _registry_classes(folder / "instructions_registry.py").items()}
    except Exception:  # lm-eval missing or restructured: callers fall back to the bare id
        return {}


def _class_docs(path: Path) -> dict[str, str]:
    tree = ast.parse(path.read_text())
    return {node.name: " ".join((ast.get_docstring(node) or "").split("\n\n")[0].split())
            for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}


def _registry_classes(path: Path) -> dict[str, str]:
    """INSTRUCTION_DICT's keys (`_PUNCTUATION + "no_comma"`) evaluated -> class names."""
    consts, out = {}, {}
    for node in ast.parse(path.read_text()).body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            consts[name] = value.value
        elif name == "INSTRUCTION_DICT" and isinstance(value, ast.Dict):
            for key, cls in zip(value.keys, value.values):
                key_str = _const_str(key, consts)
                if key_str and isinstance(cls, ast.Attribute):
                    out[key_str] = cls.attr
    return out


def _const_str(node, consts: dict) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left, consts), _const_str(node.right, consts)
        return left + right if left is not None and right is not None else None
    return None
