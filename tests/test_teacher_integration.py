"""Integration: the real local `transformers serve` teacher (teacher_backend = "transformers", on the 135M model)
driving the sample strategy with a tiny budget, and the constrained strategy on that backend (logit_bias token bans
on a server without continuous batching) producing verified all-lowercase answers where sampling produced none.
The llama.cpp backend has its own integration test (tests/test_teacher_llamacpp.py)."""
import json

import pytest
from builders.synth import LOWER, examples, seed_store

from curate.synth import driver as synth
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


def test_compose_against_real_teacher_gives_verified_and_distinct_samples(monkeypatch):
    seed_store("detectable_format:title", TITLE)
    local(monkeypatch, per_cluster=1, k=3, max_tokens=32, guidance="never", strategies='["sample"]')
    tallies = synth.synthesize(cluster_id="c1")
    rows = examples()
    assert len(rows) == 3 and all(r["mode"] == "compose" for r in rows)
    by_prompt = {}
    for r in rows:
        by_prompt.setdefault(r["prompt"], set()).add(r["response"])
    assert all(len(v) == 3 for v in by_prompt.values())  # k samples differ (the folder samples)
    assert tallies["c1"].verified >= 1 and any(r["status"] == "verified" for r in rows)


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
    assert len(unguided) == 2 and not any(r["status"] == "verified" for r in unguided)
    assert guided and json.loads(guided[0]["guidance"])["logit_bias_tokens"] > 10_000
    ok = [r for r in guided if r["status"] == "verified"]
    assert ok and all(r["response"] == r["response"].lower() for r in ok)
    assert tallies["c1"].guided_verified == len(ok)
