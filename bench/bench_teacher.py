"""python -m bench --only teacher [--quick] — the local teacher servers side by side, unguided and constrained.

16 sample-traffic prompts x 128 new tokens (4 x 16 with --quick), temperature 0.9, sent through evals.client with
8 requests in flight (a fresh scratch store: nothing is answered from the cache), on the embedded SmolLM2-135M:
- mend's llama.cpp teacher (xllamacpp, the Q4_1 GGUF served directly, 8 slots): unguided, then constrained by a
  GBNF grammar per request (curate.synth.constraints: no comma; no uppercase letter);
- baseline, same run: `transformers serve` (the folder converted from the same GGUF, fp32): unguided with
  continuous batching; constrained without it (continuous batching keeps the first request's logit_bias for all),
  with today's logit_bias token bans (the transformers dialect). Without continuous batching that server decodes
  one request at a time, so its aggregate tok/s is its single-stream tok/s: the constrained baseline sends the
  first 4 requests only (16 took ~4 min each under load 5).
tok/s = completion tokens the server reports / wall seconds from the first request to the last answer; each
server gets one short warm-up request first. Both servers run with OMP_WAIT_POLICY=PASSIVE (curate.synth.teacher sets it
for llama.cpp): with spinning OpenMP threads, 2 cores shared with other jobs made both crawl. Notes carry how many
answers obey the constraint, the start-up time of each server and the 1-minute load average (2 shared cores).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

CHECKS = {"no-comma": ("punctuation:no_comma", lambda t: "," not in t and "\uff0c" not in t),
          "lowercase": ("change_case:english_lowercase", lambda t: not any(c.isupper() for c in t))}


def _requests(convs, tokens: int, extras: dict) -> list[dict]:
    return [{"messages": c, "temperature": 0.9, "top_p": 0.95, "seed": i, "max_tokens": tokens, **extras}
            for i, c in enumerate(convs)]


def _measure(info, convs, tokens: int, extras: dict) -> tuple[float, list[str]]:
    from evals.client import Client
    client = Client(info["base_url"], info["model"], concurrency=8, max_retries=0, timeout_s=3600)
    t0 = time.perf_counter()
    calls = client.complete_many(_requests(convs, tokens, extras))
    wall = time.perf_counter() - t0
    errors = [c.error for c in calls if c.error]
    if errors:
        raise RuntimeError(f"teacher errors: {errors[:2]}")
    return sum(c.completion_tokens or 0 for c in calls) / wall, [c.text or "" for c in calls]


def _warm(info) -> None:
    from evals.client import Client
    Client(info["base_url"], info["model"], max_retries=0, timeout_s=600).complete_many(
        [{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "seed": 99}])


def _serve(backend: str, s, convs, tokens: int, runs: list, continuous_batching: bool = True) -> dict:
    """{run name: (tok/s, obeyed/n)}, plus the start-up seconds, for one server."""
    from curate.synth.constraints import constraint_for, request_extras
    from curate.synth.teacher import local_teacher
    t0 = time.perf_counter()
    with local_teacher(backend=backend, settings=s, continuous_batching=continuous_batching) as info:
        out = {"startup_s": time.perf_counter() - t0}
        _warm(info)
        for name in runs:
            extras = {}
            if name in CHECKS:
                dialect = "llama.cpp" if backend == "llama.cpp" else "transformers"
                extras = request_extras(constraint_for([CHECKS[name][0]], [{}]), dialect, tokenizer_folder=info["folder"])
            tps, texts = _measure(info, convs, tokens, extras)
            obeyed = sum(CHECKS[name][1](t) for t in texts) if name in CHECKS else None
            out[name] = (tps, obeyed)
            print(f"bench_teacher: {backend} cb={continuous_batching} {name}: {tps:.1f} tok/s, obeyed {obeyed}, "
                  f"{len(convs)} requests, load {os.getloadavg()[0]:.1f}", flush=True)
    return out


def run(quick: bool) -> list[dict]:
    from bench import scratch_store
    from evals.traffic import build_prompts
    from traces import settings as settings_mod
    n, tokens = (4, 16) if quick else (16, 128)
    convs = [p["messages"] for p in build_prompts(n, seed=0)]
    n_seq = 2 if quick else 4
    load0 = os.getloadavg()[0]
    saved = os.environ.get("OMP_WAIT_POLICY")
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # both servers inherit it
    try:
        with tempfile.TemporaryDirectory() as tmp, scratch_store(Path(tmp) / "bench.duckdb"):
            s = settings_mod.load("curate", {"teacher_slots": 8})
            llama = _serve("llama.cpp", s, convs, tokens, ["unguided", "no-comma", "lowercase"])
            load_mid = os.getloadavg()[0]
            tf_cb = _serve("transformers", s, convs, tokens, ["unguided"], continuous_batching=True)
            tf = _serve("transformers", s, convs[:n_seq], tokens, ["no-comma", "lowercase"], continuous_batching=False)
    finally:
        os.environ.pop("OMP_WAIT_POLICY") if saved is None else os.environ.update(OMP_WAIT_POLICY=saved)
    load1 = os.getloadavg()[0]
    common = (f"{n} requests x {tokens} tokens, 8 in flight, temperature 0.9, OMP_WAIT_POLICY=PASSIVE; 1-min load "
              f"{load0:.1f} before, {load_mid:.1f} between the servers, {load1:.1f} after (2 shared cores)")
    rows = [{"benchmark": "teacher", "metric": "tok/s, unguided", "mend": round(llama["unguided"][0], 1),
             "baseline": round(tf_cb["unguided"][0], 1), "ratio": round(llama["unguided"][0] / tf_cb["unguided"][0], 2),
             "target": ">= 1x (picks teacher_backend)",
             "notes": f"mend: llama.cpp (xllamacpp) 8 slots, Q4_1 GGUF, started in {llama['startup_s']:.0f} s; "
                      f"baseline: transformers serve --continuous-batching, fp32 folder, started in "
                      f"{tf_cb['startup_s']:.0f} s; {common}"}]
    for name, (check, _) in CHECKS.items():
        (m, m_ok), (b, b_ok) = llama[name], tf[name]
        rows.append({"benchmark": "teacher", "metric": f"tok/s, constrained {name}", "mend": round(m, 1),
                     "baseline": round(b, 1), "ratio": round(m / b, 2), "target": ">= 1x, all answers obey",
                     "notes": f"mend: GBNF grammar per request ({check}), {m_ok}/{n} answers obey; baseline: "
                              f"transformers serve without continuous batching (one request at a time: {n_seq} "
                              f"requests sent), logit_bias bans, {b_ok}/{n_seq} obey; "
                              f"{common}"})
    return rows
