"""The student as its own source of candidates (the `self` strategy): on-policy samples.

    client = StudentClient("production")          # the model the gate compares against, with its adapter
    calls = client.complete_many([{"messages": [...], "temperature": 0.9, "top_p": 0.95, "max_tokens": 128,
                                   "seed": 0}])

It answers the same request dicts as the teacher's `evals.client.Client` and returns the same `Call`s, so the
strategies' machinery (chunks, budgets, verification, repair of failing samples) serves both. Samples are
generated in-process with `train.generate` (batched HF sampling: ~90 tok/s on 2 cores, faster than the local
server's ~17) and cached in `llm_calls` (purpose "student", endpoint `student://<model>@<adapter hash>`), so a
killed run repeats none.

Why on-policy: text the student itself samples is already likely under it, so fine-tuning on its verified and
fluent samples (rejection-sampling fine-tuning, STaR) moves the model little per fixed failure; off-policy targets
(a teacher's text, minimal edits) pushed the 135M student into loops (docs/architecture.md, "Recipes").
"""
from __future__ import annotations

import time

from evals.client import Call, cached_calls, request_hash, store_calls


class StudentClient:
    purpose = "student"

    def __init__(self, ref: str = "production", db: str | None = None):
        from evals.registry import resolve_ref
        from traces.hashing import adapter_hash
        self.model_ref, self.adapter = resolve_ref(ref)
        tag = adapter_hash(self.adapter) if self.adapter else "base"
        self.model = f"{self.model_ref}@{tag}"  # what examples record as their `teacher_model`
        self.base_url = f"student://{self.model}"
        self.db = db
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            from train.models import load
            self._loaded = load(self.model_ref, adapter=self.adapter)
        return self._loaded

    def complete_many(self, requests: list[dict], progress=None) -> list[Call]:
        hashes = [request_hash(self.base_url, self.model, r) for r in requests]
        calls = cached_calls(hashes, self.db)
        todo = [i for i, h in enumerate(hashes) if h not in calls]
        new = self._generate([requests[i] for i in todo], [hashes[i] for i in todo], progress)
        store_calls(new, [requests[i] for i in todo], self.base_url, self.model, self.purpose, self.db)
        calls.update((c.request_hash, c) for c in new)
        if progress and len(requests) > len(todo):
            progress(len(requests) - len(todo))
        return [calls[h] for h in hashes]

    def _generate(self, requests: list[dict], hashes: list[str], progress) -> list[Call]:
        """One `generate` per group of requests that share seed and sampling settings (a batch shares them)."""
        from train.generate import generate
        if not requests:
            return []
        groups: dict = {}
        for i, r in enumerate(requests):
            key = (r.get("seed", 0), r.get("temperature", 1.0), r.get("top_p", 1.0), r.get("max_tokens"))
            groups.setdefault(key, []).append(i)
        out: list[Call | None] = [None] * len(requests)
        model, tok = self._load()
        for (seed, temperature, top_p, max_tokens), idx in groups.items():
            start = time.perf_counter()  # None max_tokens: the student's own budget (train.generate.token_budget)
            gens = generate(model, tok, [requests[i]["messages"] for i in idx], max_new_tokens=max_tokens,
                            temperature=temperature, top_p=top_p, seed=seed, progress=False)
            latency = (time.perf_counter() - start) / len(idx)
            for i, g in zip(idx, gens):
                response = {"choices": [{"message": {"role": "assistant", "content": g.text},
                                         "finish_reason": g.finish_reason}],
                            "usage": {"prompt_tokens": g.prompt_tokens, "completion_tokens": g.completion_tokens}}
                out[i] = Call(hashes[i], g.text, response, g.prompt_tokens, g.completion_tokens, latency, 0.0)
            if progress:
                progress(len(idx))
        return out
