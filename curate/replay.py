"""Self-distilled replay: the base student's own greedy answers to instruction-free seed requests.

    from curate import replay
    with store.connect(read_only=True) as con:
        reqs = replay.base_requests(con)              # seed requests with their IFEval instructions cut out
    items = replay.self_items(reqs, n=8)             # 8 (request, base answer) training items, generated once

Replayed passing traffic (curate/export.py) keeps the adapter on what production already does right, but only
where production happened to pass. These rows anchor it everywhere nothing is targeted: the request of a seed trace
without its verifiable instructions (`trace_base_requests`, which clustering fills; else evals.ifeval.base_request),
answered by the base student (`[tool.mend.train] model`) greedily with the one token budget
(`train.generate.greedy_settings()`), so the adapter learns to keep answering as the base does.

Generation is deterministic (greedy) and cached in the `self_replay` table, keyed by sha256 of (base model
fingerprint, request messages, generation settings): a re-export, or another sweep config, reads its answers from
there and generates nothing; a changed base or token budget gets new rows. An answer cut at max_new_tokens
(finish_reason "length"; 29 of the first 32 on the demo's traffic) is cached as generated and trained on trimmed back
to its last whole sentence or line: with the end-of-turn token right after the cut it would teach the adapter to stop
mid-sentence. One with no sentence end to trim back to, or under 3 words, is not used. Only seed traces are read; the
holdout never reaches a training set from here.
"""
from __future__ import annotations

import hashlib
import json
import re

from evals import ifeval
from traces import store
from traces.settings import load


def base_requests(con, exclude_groups=frozenset()) -> list[dict]:
    """Distinct instruction-free requests of seed traces, in a stable order (a hash of the request text, so adding
    traces does not reshuffle the pick). Each: {"trace_id", "group", "messages"}; `group` is the trace's split key."""
    rows = con.execute("""
        SELECT t.trace_id, t.group_key, t.prompt, t.metadata, b.base_request, b.trace_id IS NOT NULL
        FROM traces t LEFT JOIN trace_base_requests b ON b.trace_id = t.trace_id
        WHERE t.split = 'seed' AND json_array_length(json_extract(t.metadata, '$.instruction_id_list')) > 0
        ORDER BY t.trace_id""").fetchall()
    seen, out = set(), []
    for tid, group, prompt, md, stored, has_row in rows:
        base = stored if has_row else ifeval.base_request(prompt, json.loads(md) if md else {})
        if not base or group in exclude_groups or base in seen:
            continue
        seen.add(base)
        out.append({"trace_id": tid, "group": group, "messages": [{"role": "user", "content": base}]})
    return sorted(out, key=lambda r: hashlib.sha256(r["messages"][0]["content"].encode()).hexdigest())


def cache_key(fingerprint: str, messages: list, gen: dict) -> str:
    blob = json.dumps([fingerprint, messages, gen], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class Answerer:
    """Answers requests with the base student, greedy, through the `self_replay` cache; loads the model only when
    something is not cached yet, and once."""

    def __init__(self, model_ref: str | None = None):
        from train.generate import greedy_settings
        from train.models import fingerprint
        self.ref = model_ref or load("train").model
        self.fingerprint = fingerprint(self.ref)
        self.gen = greedy_settings()
        self._model = None

    def answer(self, requests: list[dict]) -> list[dict]:
        """One row per request: {"cache_key", "response", "finish_reason"}, generating only cache misses."""
        keys = [cache_key(self.fingerprint, r["messages"], self.gen) for r in requests]
        have = self._cached(keys)
        todo = [(k, r) for k, r in zip(keys, requests) if k not in have]
        if todo:
            have.update(self._generate(todo))
        return [{"cache_key": k, **have[k]} for k in keys]

    def _cached(self, keys: list[str]) -> dict:
        if not keys:
            return {}
        with store.connect() as con:  # writable: an older database gets the `self_replay` table (m011) first
            rows = con.execute("""SELECT cache_key, response, finish_reason FROM self_replay
                                  WHERE cache_key IN (SELECT unnest(?))""", [keys]).fetchall()
        return {k: {"response": resp, "finish_reason": fin} for k, resp, fin in rows}

    def _generate(self, todo: list[tuple[str, dict]]) -> dict:
        from train import generate as tg  # module attribute: tests count the calls
        from train.models import load as load_model
        s = load("train")
        if self._model is None:
            self._model = load_model(self.ref)
        model, tok = self._model
        gens = tg.generate(model, tok, [r["messages"] for _, r in todo], max_new_tokens=s.max_new_tokens,
                           temperature=0.0, batch_size=s.batch_size, progress=True)
        rows = [[k, self.ref, self.fingerprint, json.dumps(self.gen), r.get("trace_id"), json.dumps(r["messages"]),
                 g.text, g.finish_reason, g.completion_tokens] for (k, r), g in zip(todo, gens)]
        with store.connect() as con:  # opened after generating: never held across the model
            con.executemany("""INSERT OR IGNORE INTO self_replay (cache_key, model_ref, model_fingerprint,
                               gen_settings, trace_id, messages, response, finish_reason, completion_tokens,
                               created_at) VALUES (?, ?, ?, ?::JSON, ?, ?::JSON, ?, ?, ?, now())""", rows)
        return {k: {"response": g.text, "finish_reason": g.finish_reason} for (k, _), g in zip(todo, gens)}


_SENTENCE_END = re.compile(r"(?:[.!?…][\"')\]*_]*|\n)(?=\s|$)")


def usable(row: dict) -> str | None:
    """The answer to train on: as generated, or cut back after its last whole sentence or line when the token budget
    stopped it; None when nothing of at least 3 words is left."""
    text = row["response"].strip()
    if row["finish_reason"] == "length":
        ends = [m.end() for m in _SENTENCE_END.finditer(text)]
        text = text[:ends[-1]].strip() if ends else ""
    return text if len(text.split()) >= 3 else None


def self_items(requests: list[dict], n: int, answerer: Answerer | None = None) -> list[dict]:
    """The first n usable (request, base answer) training items, taking requests in order: when an answer is cut
    or empty the next request is answered instead, so the result depends only on the cached answers."""
    if n <= 0 or not requests:
        return []
    answerer = answerer or Answerer()
    out, i = [], 0
    while len(out) < n and i < len(requests):
        chunk = requests[i:i + max(2 * (n - len(out)), 16)]  # most answers of the 135M base run to the budget
        i += len(chunk)
        for req, row in zip(chunk, answerer.answer(chunk)):
            text = usable(row)
            if text and len(out) < n:
                out.append({"id": "self-" + row["cache_key"][:20], "origin": "self", "group": req["group"],
                            "trace_id": req["trace_id"],
                            "messages": req["messages"] + [{"role": "assistant", "content": text}]})
    return out
