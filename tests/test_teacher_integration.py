"""Integration: the real local `transformers serve` teacher (teacher_backend = "transformers", on the 135M model)
driving the sample strategy with a tiny budget, and the constrained strategy on that backend (logit_bias token bans
on a server without continuous batching) writing all-lowercase answers where sampling wrote none.
The llama.cpp backend has its own integration test (tests/test_teacher_llamacpp.py).

What a 135M model writes in 32 tokens differs from run to run (whether a sample has a title, is fluent, passes
lm-eval's language guess), so these tests assert what holds for any sample: the requests made, the verdict written
for each row being the verifier's on its own text, and what a token ban guarantees."""
import json
import re

import pytest
from builders.synth import LOWER, examples, seed_store

from curate.synth import driver as synth
from evals.checks import verify_instructions
from traces import store

pytestmark = pytest.mark.integration

TITLE = "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."


def local(monkeypatch, **extra):
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", "local")
    monkeypatch.setenv("MEND_CURATE_TEACHER_BACKEND", "transformers")
    monkeypatch.setenv("MEND_CURATE_TEACHER_MODEL", "smollm2-135m-instruct")
    monkeypatch.setenv("MEND_CURATE_TEACHER_TIMEOUT_S", "900")  # 2 shared cores: minutes per request under load
    monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "0")
    for k, v in extra.items():
        monkeypatch.setenv(f"MEND_CURATE_{k.upper()}", str(v))


def passed_checks(row) -> bool:
    """The verifier's verdict on the row's own text: every check its metadata names passes."""
    return all(r.passed for _, r in verify_instructions(row["prompt"], row["response"], json.loads(row["metadata"])))


def written_as_verified(row) -> bool:
    """What synthesis wrote: `verified`, or failed only the quality filter after passing every check."""
    return row["status"] == "verified" or (row["reason"] or "").startswith("not_fluent")


def test_compose_against_real_teacher_writes_k_samples_each_verified(monkeypatch):
    seed_store("detectable_format:title", TITLE)
    local(monkeypatch, per_cluster=1, k=3, max_tokens=32, guidance="never", strategies='["sample"]')
    tallies = synth.synthesize(cluster_id="c1")
    rows = examples()
    assert len(rows) == 3 and all(r["mode"] == "compose" for r in rows) and len({r["prompt"] for r in rows}) == 1
    with store.connect(read_only=True) as con:
        requests = [json.loads(r[0]) for r in con.execute(
            "SELECT request FROM llm_calls WHERE request_hash IN (SELECT request_hash FROM examples)").fetchall()]
    # k separate sampling requests (distinct seeds), each answered and written: a title or not is the model's
    assert sorted(r["seed"] for r in requests) == [0, 1, 2] and all(r["temperature"] > 0 for r in requests)
    assert len({r["request_hash"] for r in rows}) == 3 and all(r["response"] is not None for r in rows)
    assert [written_as_verified(r) for r in rows] == [passed_checks(r) for r in rows], rows
    c = tallies["c1"].counts("sample")
    assert (c.candidates, c.verified, c.kept) == (3, sum(map(passed_checks, rows)),
                                                   sum(r["status"] == "verified" for r in rows))


def capitals(text: str) -> list[str]:
    """ASCII capitals: what the token ban rules out for any sample (every token holding one is banned; a rarer
    capital could still be spelled from byte tokens, so lm-eval's islower() is not promised)."""
    return re.findall(r"[A-Z]", text)


def test_guided_lowercase_where_unguided_produced_none(monkeypatch):
    seed_store("change_case:english_lowercase", LOWER)
    with store.connect() as con:  # the story request (t2) only: an e-mail's salutation is hard to write in lowercase
        con.execute("DELETE FROM cluster_members WHERE trace_id = 't1'")
    local(monkeypatch, per_cluster=1, k=2, guidance_k=3, max_tokens=32, guidance="auto", guidance_threshold=0.5,
          strategies='["sample", "constrained"]')
    tallies = synth.synthesize(cluster_id="c1")
    rows = examples()
    unguided = [r for r in rows if not r["guidance"]]
    guided = [r for r in rows if r["guidance"]]
    assert all(r["seed_trace_id"] == "t2" for r in rows)
    # unguided, the 135M teacher writes capitals (curate/synth/guidance.py: never all-lowercase in best-of-8)
    assert len(unguided) == 2 and all(capitals(r["response"]) for r in unguided), unguided
    # guided: >10k tokens holding a capital banned, so every answer is lowercase text whatever the model samples;
    # whether it is also fluent (the quality filter) or English to langdetect (lm-eval's check) is the sample's
    assert len(guided) == 3 and json.loads(guided[0]["guidance"])["logit_bias_tokens"] > 10_000
    assert all(r["response"].strip() and not capitals(r["response"]) for r in guided), guided
    assert tallies["c1"].guided_candidates == 3
    assert tallies["c1"].guided_verified == sum(r["status"] == "verified" for r in guided)
