"""Batched generation with the student: `generate(model, tokenizer, conversations, ...)` -> list[Generation].

    from train.models import load; from train.generate import generate
    model, tok = load("smollm2-135m-instruct")
    gens = generate(model, tok, [[{"role": "user", "content": "Write a haiku."}]], max_new_tokens=64)

Prompts go through the model's chat template (add_generation_prompt=True), are sorted by length and cut into
left-padded batches (less padding, so less wasted compute), then put back in input order. Greedy when
temperature == 0 (deterministic, what evals use); sampling (temperature, top_p, n, seed) otherwise.
`sequence_nll` scores given responses (mean per-token NLL), for the gate's drift guard.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

from traces import progress as progress_mod  # `progress` is generate's flag


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end-of-turn token) or "length" (hit max_new_tokens)


def gen_settings(*, max_new_tokens: int | None = None, temperature: float = 0.0, top_p: float = 1.0, n: int = 1,
                 seed: int = 0, banned_token_ids=None) -> dict:
    """The settings that change generated text; stored with eval runs so the gate only compares like with like."""
    greedy = temperature == 0
    out = {"decoding": "greedy" if greedy else "sample", "max_new_tokens": token_budget(max_new_tokens),
           "chat_template": "model", "stop": "eos"}
    if not greedy:  # seed, temperature and top_p do not change greedy output
        out.update(temperature=float(temperature), top_p=float(top_p), n=int(n), seed=int(seed))
    if banned_token_ids is not None:
        out["banned_tokens"] = len(_banned_list(banned_token_ids))
    return out


def greedy_settings() -> dict:
    """The one definition of greedy evaluation settings (runner, gate, guards): the student's token budget,
    `[tool.mend.train] max_new_tokens`, the budget the logged traffic was generated with, so a gate can reuse it."""
    return gen_settings(temperature=0.0)


def token_budget(max_new_tokens: int | None = None) -> int:
    """The caller's budget, else the one setting of it, `[tool.mend.train] max_new_tokens`."""
    if max_new_tokens is not None:
        return int(max_new_tokens)
    from traces.settings import load
    return load("train").max_new_tokens


def render_prompts(tokenizer, conversations: Sequence[list[dict]]) -> list[list[int]]:
    """Chat-template each conversation (ending with the assistant turn's opening) into token ids."""
    texts = [tokenizer.apply_chat_template(list(c), add_generation_prompt=True, tokenize=False)
             for c in conversations]
    # the template already has its special tokens; a tokenizer adding BOS again would shift the prompt
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def generate(model, tokenizer, conversations, *, max_new_tokens: int | None = None, temperature: float = 0.0,
             top_p: float = 1.0, n: int = 1, seed: int = 0, batch_size: int = 16, progress=True,
             banned_token_ids=None) -> list[Generation]:
    """n generations per conversation, prompt-major: [c0 s0, c0 s1, ..., c1 s0, ...]; max_new_tokens defaults to
    the setting (token_budget)."""
    import torch
    if temperature == 0 and n > 1:
        raise ValueError("greedy decoding (temperature=0) gives n identical samples; set temperature > 0")
    prompts = render_prompts(tokenizer, conversations)
    # rows = (prompt index, sample index); sorted longest first so each batch holds similar lengths
    rows = sorted(((i, s) for i in range(len(prompts)) for s in range(n)), key=lambda r: (-len(prompts[r[0]]), r))
    out: dict[tuple[int, int], Generation] = {}
    config = _generation_config(model, tokenizer, token_budget(max_new_tokens), temperature, top_p)
    processors = _mask_processor(model, banned_token_ids)
    with _progress_bar(progress, len(rows)) as advance, torch.inference_mode():
        for b, start in enumerate(range(0, len(rows), batch_size)):
            batch = rows[start:start + batch_size]
            if temperature > 0:
                torch.manual_seed(seed * 1_000_003 + b)  # reproducible per batch, different per batch
            gens = _generate_batch(model, tokenizer, [prompts[i] for i, _ in batch], config, processors)
            out.update(zip(batch, gens))
            advance(len(batch))
    return [out[(i, s)] for i in range(len(prompts)) for s in range(n)]


def _generate_batch(model, tokenizer, prompts: list[list[int]], config, processors) -> list[Generation]:
    input_ids, attention_mask = left_pad(prompts, tokenizer.pad_token_id, model.device)
    seqs = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                          logits_processor=processors)
    new = seqs[:, input_ids.shape[1]:].tolist()
    stops = set(_as_list(config.eos_token_id))
    return [_finish(tokenizer, toks, len(p), stops) for toks, p in zip(new, prompts)]


def _finish(tokenizer, toks: list[int], prompt_len: int, stops: set[int]) -> Generation:
    """Cut at the first stop token (the pad token is also the stop token, so padding follows it)."""
    end = next((k for k, t in enumerate(toks) if t in stops), None)
    kept = toks if end is None else toks[:end]
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(text=text, prompt_tokens=prompt_len, completion_tokens=len(toks) if end is None else end + 1,
                      finish_reason="length" if end is None else "stop")


def left_pad(prompts: list[list[int]], pad_id: int, device):
    import torch
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def _generation_config(model, tokenizer, max_new_tokens, temperature, top_p):
    from transformers import GenerationConfig
    eos = _as_list(getattr(model.generation_config, "eos_token_id", None)) or [tokenizer.eos_token_id]
    if tokenizer.eos_token_id not in eos:
        eos.append(tokenizer.eos_token_id)
    sample = temperature > 0
    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sample,
                            temperature=temperature if sample else None, top_p=top_p if sample else None,
                            top_k=None, eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                            bos_token_id=tokenizer.bos_token_id)


def _as_list(x) -> list[int]:
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [int(x)]


def _banned_list(banned) -> list[int]:
    import torch
    if isinstance(banned, torch.Tensor) and banned.dtype == torch.bool:
        return banned.nonzero().flatten().tolist()
    return [int(t) for t in banned]


def _mask_processor(model, banned_token_ids):
    """A vocabulary mask (one indexed fill per step) bans tokens ~3x faster than `bad_words_ids` lists."""
    if banned_token_ids is None:
        return None
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList
    ids = torch.tensor(_banned_list(banned_token_ids), dtype=torch.long, device=model.device)

    class BanTokens(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores[:, ids[ids < scores.shape[-1]]] = float("-inf")
            return scores

    return LogitsProcessorList([BanTokens()])


@contextlib.contextmanager
def _progress_bar(enabled, total: int):
    """`advance(k)` over generated rows: a rich bar on a terminal, plain lines in a log (traces.progress), or a
    no-op."""
    if not (enabled and total):
        yield lambda k: None
        return
    with progress_mod.progress() as bar:
        task = bar.add_task("generating", total=total)
        yield lambda k: bar.advance(task, k)


def sequence_nll(model, tokenizer, conversations, responses: Sequence[str], batch_size: int = 16) -> list[float]:
    """Mean per-token negative log-likelihood (nats) of each response as the assistant turn after its
    conversation, end-of-turn token included. Lower = the model finds the response more likely."""
    import torch
    prompts = render_prompts(tokenizer, conversations)
    answers = tokenizer([r + tokenizer.eos_token for r in responses], add_special_tokens=False)["input_ids"]
    out: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            out += _nll_batch(model, tokenizer, prompts[start:start + batch_size], answers[start:start + batch_size])
    return out


def _nll_batch(model, tokenizer, prompts, answers) -> list[float]:
    import torch
    seqs = [p + a for p, a in zip(prompts, answers)]
    ids, mask = left_pad(seqs, tokenizer.pad_token_id, model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    width = ids.shape[1]
    result = []
    for row, a in enumerate(answers):
        # the answer's tokens are the last len(a) of the row; each is predicted from the position before it
        result.append(float(-logp[row, width - 1 - len(a):].mean()))
    return result
