"""python -m bench --only generate [--quick] — batched greedy generation vs a one-prompt-at-a-time loop.

The real student (SmolLM2-135M-Instruct, fp32 on CPU / bf16 on GPU), 64 sample-traffic prompts, 128 new tokens,
greedy (16 prompts x 32 tokens with --quick). mend: `train.generate.generate` (chat template, prompts sorted by
length, left-padded batches of 16). Baseline, in the same run: a plain loop calling `model.generate` on one
prompt at a time. Both count the useful completion tokens (up to and including the end-of-turn token), so
finished rows that a batch keeps computing count against mend.

It also counts how many greedy outputs are identical between the two paths. They can differ: a padded batch
multiplies different matrix shapes, so float sums run in another order and logits move by ~1e-6; when the top
two tokens are that close, argmax flips and the texts diverge from there on (same model, same prompt).
"""
from __future__ import annotations

import time


def _sequential(model, tok, conversations, max_new_tokens: int) -> list[str]:
    import torch
    texts = []
    with torch.inference_mode():
        for conv in conversations:
            ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)["input_ids"].to(model.device)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, top_p=None, top_k=None, temperature=None,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            texts.append(out[0, ids.shape[1]:].tolist())
    return texts


def _useful(tokens: list[int], eos: int) -> int:
    return tokens.index(eos) + 1 if eos in tokens else len(tokens)


def run(quick: bool) -> list[dict]:
    from train.generate import generate
    from train.models import load
    from evals.traffic import build_prompts
    n, new = (16, 32) if quick else (64, 128)
    convs = [p["messages"] for p in build_prompts(n, seed=0)]
    model, tok = load("smollm2-135m-instruct")
    generate(model, tok, convs[:2], max_new_tokens=4, progress=False)  # warm-up (allocator, kernels)

    t0 = time.perf_counter()
    batched = generate(model, tok, convs, max_new_tokens=new, batch_size=16, progress=False)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = _sequential(model, tok, convs, new)
    t_seq = time.perf_counter() - t0

    tps_b = sum(g.completion_tokens for g in batched) / t_batched
    seq_tokens = [t[:_useful(t, tok.eos_token_id)] for t in seq]
    tps_s = sum(len(t) for t in seq_tokens) / t_seq
    same = sum(g.text == tok.decode([x for x in t if x != tok.eos_token_id], skip_special_tokens=True)
               for g, t in zip(batched, seq_tokens))
    return [{"benchmark": "generate", "metric": f"greedy tok/s, {n} prompts x {new} new tokens",
             "mend": round(tps_b, 1), "baseline": round(tps_s, 1), "ratio": round(tps_b / tps_s, 2),
             "target": ">= 4x", "notes": f"batch 16 vs one model.generate per prompt, same run; "
                                         f"{same}/{n} greedy outputs identical (padding changes float sums; "
                                         f"near-tie argmax flips); {model.device}, {model.dtype}"}]
