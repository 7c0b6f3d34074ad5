"""The llm_calls cache: bulk reads, bulk writes, and the writer a batch of calls buffers its answers in.

Opening the store costs tens of milliseconds and DuckDB's executemany milliseconds per row, so a client that read
and wrote per call spent its time here rather than waiting on the server (4.5 calls/s against an instant server).
A batch therefore reads every cached answer with one connection before it starts, and `CacheWriter` writes the
new answers as they come, one write at a time (what arrives during a write goes in the next), with one
connection per write, in a worker thread (the event loop keeps
sending meanwhile). Any caller that answers requests (the student sampler too) uses `cached_calls`/`store_calls`.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Optional

from traces.scrub import scrub_text


@dataclass
class Call:
    request_hash: str
    text: Optional[str] = None  # the first choice's content
    response: Optional[dict] = None  # the whole completion (as JSON)
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    latency_s: Optional[float] = None
    cost_usd: Optional[float] = None
    cached: bool = False  # answered without a request of its own (from llm_calls, or a duplicate in its batch)
    error: Optional[str] = None  # set when the call failed after the client's retries (nothing cached)
    extra: dict = field(default_factory=dict)

    @property
    def tool_calls(self) -> list:
        try:
            return self.response["choices"][0]["message"].get("tool_calls") or []
        except (TypeError, KeyError, IndexError):
            return []


def cached_calls(hashes: list[str], db: str | None = None) -> dict[str, Call]:
    """request hash -> the cached Call, for those of `hashes` in llm_calls (one short connection). Read-write like
    store_calls: DuckDB refuses a read-only and a read-write handle on one file in one process."""
    from traces import store
    if not hashes:
        return {}
    with store.connect(db) as con:
        rows = con.execute("SELECT request_hash, response, prompt_tokens, completion_tokens, latency_s, cost_usd "
                           "FROM llm_calls WHERE request_hash IN (SELECT unnest(?::VARCHAR[])) "
                           "AND response IS NOT NULL", [hashes]).fetchall()
    out = {}
    for h, response, pt, ct, latency, cost in rows:
        response = json.loads(response)
        out[h] = Call(h, text_of(response), response, pt, ct, latency, cost, cached=True)
    return out


_COLUMNS = ("request_hash", "endpoint", "model", "purpose", "request", "response", "prompt_tokens",
            "completion_tokens", "latency_s", "cost_usd")


def store_calls(calls: list[Call], requests: list[dict], endpoint: str, model: str, purpose: str,
                db: str | None = None) -> None:
    """Cache completed calls (one connection, one transaction; a request already cached is left as it is). The rows
    go in as one Arrow table: executemany costs ~3 ms a row, which is most of a fast server's answer time."""
    import pyarrow as pa
    from traces import store
    endpoint = scrub_text(endpoint)  # a teacher_url may carry a password
    rows = {c.request_hash: [c.request_hash, endpoint, r.get("model") or model, purpose, json.dumps(r, default=str),
                             json.dumps(c.response), c.prompt_tokens, c.completion_tokens, c.latency_s, c.cost_usd]
            for c, r in zip(calls, requests)}  # one row per hash: INSERT OR IGNORE tolerates no repeat in itself
    if not rows:
        return
    types = [pa.string()] * 6 + [pa.int64(), pa.int64(), pa.float64(), pa.float64()]
    table = pa.table([pa.array([r[i] for r in rows.values()], t) for i, t in enumerate(types)], names=_COLUMNS)
    with store.connect(db) as con, store.transaction(con):
        con.register("new_llm_calls", table)
        con.execute(f"INSERT OR IGNORE INTO llm_calls ({', '.join(_COLUMNS)}) SELECT request_hash, endpoint, model, "
                    "purpose, request::JSON, response::JSON, prompt_tokens, completion_tokens, latency_s, cost_usd "
                    "FROM new_llm_calls")
        con.unregister("new_llm_calls")


class CacheWriter:
    """Buffers the answers of one batch and writes them to llm_calls off the event loop, one write at a time.

    A write starts as soon as an answer arrives and no write is under way; answers that arrive during a write are
    taken together by the next one, started when it ends. So under load the writes batch themselves (one connection
    for many answers), and an answer waits for at most one write: a killed run (SIGKILL, no `close()`) loses only the
    answers of the last few tens of milliseconds, however slow the teacher (a timer checked only as answers arrive
    could hold a minutes-long local answer until the next one). `close()` writes the rest, also after an error or a
    cancel."""

    def __init__(self, endpoint: str, model: str, purpose: str, db: str | None = None):
        self.endpoint, self.model, self.purpose, self.db = endpoint, model, purpose, db
        self.pending: list[tuple[Call, dict]] = []
        self._writing: asyncio.Future | None = None
        self.writes = 0  # connections opened (for tests and the benchmark's notes)

    def add(self, call: Call, request: dict) -> None:
        self.pending.append((call, request))
        self._start_write()

    def _start_write(self) -> None:
        if self._writing is not None:
            if not self._writing.done():
                return  # one write at a time: when it ends, _next takes what piled up meanwhile
            self._writing.result()  # a failed write (store busy past its timeout) stops the batch here
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch))
        self._writing.add_done_callback(self._next)

    def _next(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None and self.pending:
            self._start_write()

    def _write(self, batch: list[tuple[Call, dict]]) -> None:
        self.writes += 1
        store_calls([c for c, _ in batch], [r for _, r in batch], self.endpoint, self.model, self.purpose, self.db)

    async def close(self) -> None:
        """Wait for the write under way, then write what is left (even when that write failed)."""
        try:
            if self._writing is not None:
                await self._writing
        finally:
            while self._writing is not None and not self._writing.done():
                await asyncio.wait([self._writing])  # a write _next started after the one awaited above
            if self.pending:
                batch, self.pending = self.pending, []
                await asyncio.to_thread(self._write, batch)


def text_of(response: dict | None) -> str | None:
    try:
        return response["choices"][0]["message"].get("content")
    except (TypeError, KeyError, IndexError):
        return None
