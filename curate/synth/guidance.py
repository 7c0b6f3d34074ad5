"""Guidance for a weak teacher: steer sampling toward what a check demands (used by `curate synth`).

Measured with the 135M model as its own teacher: unguided best-of-8 sampling never produced an
all-lowercase, all-capitals or quotation-wrapped answer. A check can be guided with what the OpenAI
API offers: `logit_bias` banning the tokens the check forbids (transformers serve maps it to
`sequence_bias`, vLLM and OpenAI accept it), a system message restating the constraint and few-shot
demonstrations from already-verified examples. Guided candidates are verified like any other and must
also pass the quality filter (evals/quality.py, run on every candidate): banning tokens can push a small
model into emoji runs and letter soup.
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

BAN = -100.0  # the OpenAI API's floor; transformers serve wants floats for sequence_bias

# check id -> (token predicate to ban, system message); the predicate sees the token's decoded text
RULES = {
    "change_case:english_lowercase": (
        lambda t: any(c.isupper() for c in t),
        "Write your entire answer in English using only lowercase letters. Never use a capital letter."),
    "change_case:english_capital": (
        lambda t: any(c.islower() for c in t),
        "WRITE YOUR ENTIRE ANSWER IN ENGLISH USING ONLY CAPITAL LETTERS."),
    "punctuation:no_comma": (
        lambda t: "," in t or "\uff0c" in t,
        "Do not use any commas anywhere in your answer."),
    "startend:quotation": (
        None, 'Wrap your entire answer in double quotation marks: start with " and end with ".'),
}


def steerable(check_id: str) -> bool:
    """Whether guidance can force this check with a token ban (what makes even a weak teacher reliable)."""
    return RULES.get(check_id, (None, ""))[0] is not None


@functools.lru_cache(maxsize=8)
def banned_token_ids(tokenizer_folder: str, check_id: str) -> tuple[int, ...]:
    """Token ids whose text the check forbids (special tokens stay allowed, or the model could not stop)."""
    pred = RULES.get(check_id, (None, ""))[0]
    if pred is None:
        return ()
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_folder)
    special = set(tok.all_special_ids)
    vocab = tok.get_vocab()
    return tuple(sorted(i for t, i in vocab.items()
                        if i not in special and pred(tok.convert_tokens_to_string([t]))))


def logit_bias(check_ids, tokenizer_folder=None) -> dict:
    """{token id: BAN} for every token a steerable check among check_ids forbids (curate.synth.constraints' transformers
    dialect); tokenizer_folder None: the configured teacher's (default_tokenizer_folder). {} when none applies."""
    steer = [c for c in check_ids if steerable(c)]
    folder = (tokenizer_folder or default_tokenizer_folder()) if steer else None
    if folder is None:
        return {}
    banned = set().union(*(banned_token_ids(str(folder), c) for c in steer))
    return {str(i): BAN for i in sorted(banned)}


def default_tokenizer_folder() -> Path | None:
    """teacher_tokenizer, else the local teacher model's HF folder; None for a remote teacher or a bare .gguf."""
    from traces import settings as settings_mod
    s = settings_mod.load("curate")
    if s.teacher_tokenizer:
        return Path(s.teacher_tokenizer)
    if s.teacher_url != "local" or s.teacher_model.endswith(".gguf"):
        return None
    from curate.synth.teacher import model_folder
    return model_folder(s.teacher_model)


def guide_for(check_id: str, s, tokenizer_folder: Path | None, cluster_id: str | None = None) -> dict:
    """The guidance for a cluster's check: logit_bias (when the teacher's tokenizer is known), a system
    message, few-shot demos from verified examples of the same check."""
    folder = tokenizer_folder or (Path(s.teacher_tokenizer) if getattr(s, "teacher_tokenizer", "") else None)
    guide = {"check_id": check_id, "min_alpha": s.fluency_min_alpha}
    if folder is not None:
        ids = banned_token_ids(str(folder), check_id)
        if ids:
            guide["logit_bias"] = {str(i): BAN for i in ids}
    system = RULES.get(check_id, (None, ""))[1]
    if system:
        guide["system"] = system
    demos = few_shot(check_id, s.guidance_few_shot)
    if demos:
        guide["few_shot"] = demos
    return guide


def few_shot(check_id: str, n: int) -> list[list[str]]:
    """Up to n (prompt, response) pairs of verified examples whose metadata names this check."""
    if n <= 0:
        return []
    from traces import store
    with store.connect() as con:
        rows = con.execute("""
            SELECT prompt, response FROM examples
            WHERE status IN ('verified', 'pending_review', 'accepted')
              AND list_contains(json_extract_string(metadata, '$.instruction_id_list[*]'), ?)
            ORDER BY length(response), example_id LIMIT ?""", [check_id, n]).fetchall()
    return [[r[0], r[1]] for r in rows]


def guided_messages(p, guide: dict) -> list[dict]:
    """System constraint first, then demonstrations as earlier turns, then the prompt's own messages."""
    msgs = [m for m in p.messages if m.get("role") != "system"]
    system = " ".join(x for x in [*(m["content"] for m in p.messages if m.get("role") == "system"),
                                  guide.get("system") or ""] if x)
    out = [{"role": "system", "content": system}] if system else []
    for prompt, response in guide.get("few_shot") or []:
        out += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    return out + msgs


def record(guide: dict) -> dict:
    """How an example was produced, small enough to store on every row."""
    return {"check_id": guide.get("check_id"), "logit_bias_tokens": len(guide.get("logit_bias") or {}),
            "system": guide.get("system"), "few_shot": len(guide.get("few_shot") or [])}


def describe(guide: dict) -> str:
    return json.dumps(record(guide))
