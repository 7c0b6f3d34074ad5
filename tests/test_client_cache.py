"""evals.client's batched llm_calls cache (evals/llm_cache.py) and its rpm/tpm limits (evals/ratelimit.py).

The cache is read once per batch and written in batches off the event loop; these tests pin what that must keep:
every answer stored, duplicates sent once, a re-run answered from the cache, a batch that dies mid-way keeping the
answers it already had. The limits run on a fake clock: no test here waits on or asserts about wall time.
"""
import asyncio

import pytest
from test_client import req, stub  # noqa: F401 (stub: the loopback server fixture)

from evals import client as client_mod
from evals import llm_cache
from evals.client import Client
from evals.llm_cache import Call, CacheWriter
from evals.ratelimit import WINDOW_S, RateLimit, estimate_tokens
from traces import store


def rows() -> int:
    with store.connect() as con:
        return con.execute("SELECT count(*) FROM llm_calls").fetchone()[0]


def spy(monkeypatch, module, name) -> list:
    """Count the calls of module.name (still doing its work)."""
    seen, real = [], getattr(module, name)

    def wrapper(*args, **kw):
        seen.append(args)
        return real(*args, **kw)
    monkeypatch.setattr(module, name, wrapper)
    return seen


def test_many_concurrent_calls_are_all_stored_with_few_connections(stub, monkeypatch):
    reads, writes = spy(monkeypatch, client_mod, "cached_calls"), spy(monkeypatch, llm_cache, "store_calls")
    calls = Client(stub.base_url, "stub-model", concurrency=8).complete_many([req(f"q{i}") for i in range(150)])
    assert [c.text for c in calls] == [f"echo: q{i}" for i in range(150)]  # in request order
    assert stub.count == 150 and rows() == 150
    assert len(reads) == 1  # one read for the batch, not one per call
    assert 1 <= len(writes) <= 75  # answers that arrive during a write share the next (a write per call: 150)
    assert sum(len(w[0]) for w in writes) == 150


def test_duplicates_in_one_batch_are_sent_once(stub):
    calls = Client(stub.base_url, "stub-model").complete_many([req("a"), req("b"), req("a"), req("a")])
    assert stub.count == 2 and rows() == 2
    assert [c.text for c in calls] == ["echo: a", "echo: b", "echo: a", "echo: a"]
    assert [c.cached for c in calls] == [False, False, True, True]  # a budget counts the first only


def test_rerun_is_answered_from_the_cache(stub):
    requests = [req(f"q{i}") for i in range(20)]
    first = Client(stub.base_url, "stub-model").complete_many(requests)
    again = Client(stub.base_url, "stub-model").complete_many(requests + [req("new")])
    assert stub.count == 21
    assert all(c.cached for c in again[:20]) and not again[20].cached
    assert [c.text for c in again[:20]] == [c.text for c in first]


def test_a_batch_that_dies_keeps_the_answers_it_had(stub):
    requests = [req(f"q{i}") for i in range(30)]
    done = []

    def progress(n):  # the run "dies" on its 5th answer (a bug, Ctrl-C, ...)
        done.append(n)
        if len(done) == 5:
            raise RuntimeError("killed")
    with pytest.raises(RuntimeError, match="killed"):
        Client(stub.base_url, "stub-model", concurrency=1).complete_many(requests, progress=progress)
    kept, sent = rows(), stub.count
    assert kept >= 5  # fewer than a write's 64: stored on the way out, not lost with the batch
    Client(stub.base_url, "stub-model", concurrency=1).complete_many(requests)
    assert stub.count == sent + 30 - kept  # the re-run repeats none of the stored answers


def test_writer_writes_at_once_and_batches_what_arrives_during_a_write():
    call = lambda i: Call(f"h{i}", "x", {"choices": [{"message": {"content": "x"}}]})  # noqa: E731

    async def go():
        writer = CacheWriter("http://127.0.0.1:1/v1", "m", "teacher")
        writer.add(call(0), {})
        first = writer._writing
        assert first is not None  # no write under way: this answer is written at once (a kill would keep it)
        writer.add(call(1), {})
        writer.add(call(2), {})
        assert len(writer.pending) == 2  # one write at a time: these wait for the next
        await first
        await asyncio.sleep(0)
        assert writer._writing is not first  # the end of a write starts the next, with both answers
        await writer._writing
        assert rows() == 3 and not writer.pending
        writer.add(call(3), {})
        await writer.close()
        return writer.writes
    assert asyncio.run(go()) == 3 and rows() == 4


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    async def sleep(self, seconds):
        self.t += seconds  # the limiter sleeps right after computing the delay: no other waiter moved the clock
        await asyncio.sleep(0)


def max_in_window(starts: list[float]) -> int:
    return max(sum(1 for s in starts if a <= s < a + WINDOW_S) for a in starts)


def test_rpm_limit_paces_requests_on_a_fake_clock():
    clock = FakeClock()
    limit = RateLimit(rpm=3, clock=clock, sleep=clock.sleep)

    async def go():
        return await asyncio.gather(*(limit.acquire() for _ in range(10)))
    starts = [entry[0] for entry in asyncio.run(go())]
    assert max_in_window(starts) == 3
    assert max(starts) >= 3 * WINDOW_S  # 10 requests at 3 a minute: the 10th starts in the 4th minute


def test_tpm_limit_counts_the_estimate_then_the_usage():
    clock = FakeClock()
    limit = RateLimit(tpm=100, clock=clock, sleep=clock.sleep)

    async def go():
        first = await limit.acquire(60)
        limit.settle(first, 10)  # the answer used 10 of the 60 reserved
        second = await limit.acquire(80)  # 10 + 80 fit: no wait
        third = await limit.acquire(50)  # 90 + 50 do not: waits for the first two to leave the window
        return first, second, third
    first, second, third = asyncio.run(go())
    assert second[0] == 0.0 and third[0] >= WINDOW_S
    assert estimate_tokens(req("x" * 400, max_tokens=50)) >= 150


def test_client_honours_rpm(stub):
    clock = FakeClock()
    client = Client(stub.base_url, "stub-model", concurrency=4, rpm=2)
    client.limit.clock, client.limit._sleep = clock, clock.sleep
    starts = []
    real = client.limit.acquire

    async def acquire(tokens=0):
        entry = await real(tokens)
        starts.append(entry[0])
        return entry
    client.limit.acquire = acquire
    calls = client.complete_many([req(f"q{i}") for i in range(5)])
    assert all(c.error is None for c in calls) and stub.count == 5
    assert max_in_window(starts) == 2 and max(starts) >= 2 * WINDOW_S


def test_rate_limits_come_from_the_settings():
    from curate.synth.candidates import make_client
    from traces import settings as settings_mod
    teacher = make_client(settings_mod.load("curate", {"teacher_rpm": 30, "teacher_tpm": 9000}),
                          "http://127.0.0.1:1/v1", "m")
    assert (teacher.limit.rpm, teacher.limit.tpm) == (30, 9000)
    judge = Client.for_judge(settings_mod.load("evals", {"judge_base_url": "http://127.0.0.1:1/v1", "judge_model": "j",
                                                         "judge_rpm": 5}))
    assert (judge.limit.rpm, judge.limit.tpm) == (5, 0)
    assert Client("http://127.0.0.1:1/v1", "m").limit.unlimited
