"""Requests- and tokens-per-minute limits of an OpenAI-compatible client (settings teacher_rpm/tpm, judge_rpm/tpm).

A sliding window of the last 60 s of requests the client started: a request waits until it fits under both limits.
Tokens are counted as providers count them before answering (the prompt's ~4 characters per token plus the
`max_tokens` asked for), then corrected to the usage the answer reports. The limit paces first attempts; the
openai client's own retries on 429 honour the server's Retry-After instead. 0 means unlimited.
"""
from __future__ import annotations

import asyncio
import collections
import json
import time

WINDOW_S = 60.0


class RateLimit:
    def __init__(self, rpm: int = 0, tpm: int = 0, *, clock=time.monotonic, sleep=None):
        self.rpm, self.tpm = max(0, int(rpm or 0)), max(0, int(tpm or 0))
        self.clock, self._sleep = clock, sleep
        self.window: collections.deque = collections.deque()  # [start time, tokens] of the last WINDOW_S

    @property
    def unlimited(self) -> bool:
        return not (self.rpm or self.tpm)

    async def acquire(self, tokens: int = 0) -> list | None:
        """Wait until a request of `tokens` fits, and count it; returns its window entry (for `settle`). Check and
        count happen with no await between them, so concurrent callers on one event loop cannot both take a slot."""
        if self.unlimited:
            return None
        while True:
            delay = self.delay(tokens)
            if delay <= 0:
                entry = [self.clock(), tokens]
                self.window.append(entry)
                return entry
            await (self._sleep or asyncio.sleep)(delay)

    def settle(self, entry: list | None, tokens: int | None) -> None:
        """The tokens the answer reports replace the estimate."""
        if entry is not None and tokens is not None:
            entry[1] = tokens

    def delay(self, tokens: int) -> float:
        """Seconds until a request of `tokens` fits (<= 0: now)."""
        now = self.clock()
        while self.window and self.window[0][0] <= now - WINDOW_S:
            self.window.popleft()
        waits = [0.0]
        if self.rpm and len(self.window) >= self.rpm:
            waits.append(self.window[len(self.window) - self.rpm][0] + WINDOW_S - now)
        if self.tpm:
            waits.append(self._token_wait(tokens, now))
        return max(waits)

    def _token_wait(self, tokens: int, now: float) -> float:
        """Until enough of the window's tokens expire, oldest first; a request larger than the whole limit waits
        for an empty window and goes alone."""
        excess, wait = sum(t for _, t in self.window) + tokens - self.tpm, 0.0
        for start, used in self.window:
            if excess <= 0:
                break
            wait, excess = start + WINDOW_S - now, excess - used
        return wait


def estimate_tokens(request: dict) -> int:
    """Prompt (~4 characters a token) + the completion tokens asked for, as providers reserve them."""
    prompt = len(json.dumps(request.get("messages") or [], ensure_ascii=False)) // 4
    return prompt + int(request.get("max_completion_tokens") or request.get("max_tokens") or 0)
