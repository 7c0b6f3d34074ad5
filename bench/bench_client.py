"""python -m bench --only client [--quick] — evals.client's calls/s against an instant server, vs raw openai.

The server is tests/openai_stub.py (a real loopback HTTP server that answers at once) in its own process, so it
does not share the measured process's interpreter. Both sides send the same number of distinct requests with 8 in
flight and are timed from the first request to the last answer, event loop and client set-up included:
- mend: `Client.complete_many` on a scratch store (nothing cached: every request is new), so the figure includes
  the batch's cache read, its writes of every answer to llm_calls, hashing and cost;
- baseline: `openai.AsyncOpenAI` under an asyncio.Semaphore(8), nothing stored.
The sides alternate over several rounds (the 2 cores are shared with other jobs; alternating spreads their load
over both), and calls/s is the total over the rounds. Target: mend >= 0.8x the baseline.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
CONCURRENCY = 8
SERVER = ("import sys; sys.path.insert(0, sys.argv[1]); from openai_stub import OpenAIStub; "
          "s = OpenAIStub().start(); print(s.base_url, flush=True); sys.stdin.read()")


def _requests(tag: str, n: int) -> list[dict]:
    return [{"messages": [{"role": "system", "content": "You are a helpful assistant."},
                          {"role": "user", "content": f"Write one sentence about item {tag}-{i}."}],
             "temperature": 0.9, "seed": i, "max_tokens": 64} for i in range(n)]


def _timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: the client's own work, worker threads included)."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - t0, time.process_time() - c0


def _raw(base_url: str, requests: list[dict]) -> None:
    import openai

    async def go():
        oa = openai.AsyncOpenAI(base_url=base_url, api_key="unused-local-key", max_retries=0, timeout=60)
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(r):
            async with sem:
                return await oa.chat.completions.create(model="stub-model", **r)
        try:
            return await asyncio.gather(*(one(r) for r in requests))
        finally:
            await oa.close()
    answers = asyncio.run(go())
    assert len(answers) == len(requests)


def _mend(base_url: str, requests: list[dict]) -> None:
    from evals.client import Client
    client = Client(base_url, "stub-model", concurrency=CONCURRENCY, max_retries=0, timeout_s=60)
    calls = client.complete_many(requests)
    errors = [c.error for c in calls if c.error]
    if errors or any(c.cached for c in calls):
        raise RuntimeError(f"bench_client: errors {errors[:2]} or cache hits in a fresh batch")


def _stored(n_expected: int) -> int:
    from traces import store
    with store.connect(read_only=True) as con:
        n = con.execute("SELECT count(*) FROM llm_calls").fetchone()[0]
    if n != n_expected:
        raise RuntimeError(f"bench_client: {n} llm_calls rows, expected {n_expected}")
    return n


def run(quick: bool) -> list[dict]:
    from bench import scratch_store
    n, rounds = (50, 2) if quick else (400, 3)
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(TESTS)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        base_url = server.stdout.readline().strip()
        load0 = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp, scratch_store(Path(tmp) / "bench.duckdb"):
            _raw(base_url, _requests("warm-raw", 16))
            _mend(base_url, _requests("warm-mend", 16))  # creates the scratch store, imports pyarrow
            raw, mend = [0.0, 0.0], [0.0, 0.0]  # wall, CPU seconds
            for r in range(rounds):
                raw = [a + b for a, b in zip(raw, _timed(_raw, base_url, _requests(f"raw{r}", n)))]
                mend = [a + b for a, b in zip(mend, _timed(_mend, base_url, _requests(f"mend{r}", n)))]
                print(f"bench_client: round {r}: raw {n * (r + 1) / raw[0]:.1f}, mend {n * (r + 1) / mend[0]:.1f} "
                      f"calls/s so far, load {os.getloadavg()[0]:.1f}", flush=True)
            stored = _stored(16 + n * rounds)
    finally:
        server.stdin.close()
        server.wait(timeout=10)
    calls = n * rounds
    raw_rate, mend_rate = calls / raw[0], calls / mend[0]
    return [{"benchmark": "client", "metric": "calls/s, 8 in flight, instant loopback server",
             "mend": round(mend_rate, 1), "baseline": round(raw_rate, 1), "ratio": round(mend_rate / raw_rate, 2),
             "target": ">= 0.8x raw openai.AsyncOpenAI",
             "notes": f"mend: Client.complete_many, {rounds} rounds x {n} distinct requests on a scratch store "
                      f"(one cache read per batch, answers written in batches off the event loop; {stored} "
                      f"llm_calls rows after the run); baseline: openai.AsyncOpenAI + asyncio.Semaphore(8), "
                      f"nothing stored, alternating rounds, same run; server: tests/openai_stub.py in its own "
                      f"process; client CPU per call {1000 * mend[1] / calls:.1f} ms (mend) vs "
                      f"{1000 * raw[1] / calls:.1f} ms (raw); 1-min load {load0:.1f} before, {os.getloadavg()[0]:.1f} after (2 shared cores)"}]
