"""The OpenAI-compatible chat client of mend (the judge's, and curate's teacher's).

    from evals.client import Client
    client = Client("http://127.0.0.1:8000/v1", "teacher-model", purpose="teacher")
    client.check_endpoint()                       # clear error now if unreachable / key rejected
    calls = client.complete_many([{"messages": [...], "temperature": 0.9, "seed": 1}], progress=True)
    calls[0].text, calls[0].cost_usd, calls[0].cached, calls[0].error

- Async `openai.AsyncOpenAI` underneath, at most `concurrency` requests in flight (a semaphore).
- Retries are the openai client's own (`max_retries`; it honours Retry-After on 429/5xx); no second layer.
- Every completed call is cached in DuckDB `llm_calls`, keyed by the sha256 of the full request (endpoint,
  model, messages and every sampling parameter: seed, temperature, logit_bias, ..., and the server-specific
  fields a request adds, such as a `grammar`, sent through the openai client's `extra_body`). A batch reads the
  cache once before it starts, sends each distinct request once (duplicates get its answer, `cached`), and
  writes answers in batches off the event loop (evals/llm_cache.py: a killed run loses at most the last few
  seconds' answers, and a run started again repeats none of the others).
- `rpm` / `tpm` (settings teacher_rpm/tpm, judge_rpm/tpm; 0: unlimited) pace the requests (evals/ratelimit.py).
- Tokens, latency and cost (settings `prices`: model -> [USD per 1M input, per 1M output tokens]) per call.
- The API key is read from the environment variable named by `api_key_env` and handed to the openai
  client only: it is never stored, logged or put into an error message.
- Trace content may hold customer data: a non-loopback base_url needs `allow_remote=True`
  (settings `allow_remote = true`), else `RemoteNotAllowed` before any request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import inspect
import ipaddress
import json
import os
import time
from typing import Any, Callable
from urllib.parse import urlparse

from evals.llm_cache import Call, CacheWriter, cached_calls, store_calls, text_of
from evals.ratelimit import RateLimit, estimate_tokens
from traces.scrub import scrub_text

__all__ = ["Call", "Client", "EndpointError", "RemoteNotAllowed", "cached_calls", "store_calls", "request_hash"]


class RemoteNotAllowed(RuntimeError):
    pass


class EndpointError(RuntimeError):
    pass


def is_loopback(base_url: str) -> bool:
    host = (urlparse(base_url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_hash(base_url: str, model: str, request: dict, weights: str = "") -> str:
    """sha256 of the canonical JSON of everything that decides the answer (never the key). Fields meant for the
    body as they are (a grammar, structured outputs) count wherever the request carries them: at the top level
    or in `extra_body` (flattened first, so both spellings of one body share a cache entry). `weights`: what the
    request cannot say, e.g. the hash of the adapter a served student answers with (its name may be reused)."""
    flat = {k: v for k, v in request.items() if k != "extra_body"}
    flat.update(request.get("extra_body") or {})
    body = {"endpoint": base_url.rstrip("/"), **flat, "model": request.get("model") or model}
    if weights:
        body["weights"] = weights
    canonical = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@functools.cache
def _create_params() -> frozenset:
    """The keyword arguments of the openai client's chat.completions.create (its own fields)."""
    from openai.resources.chat.completions import AsyncCompletions
    return frozenset(inspect.signature(AsyncCompletions.create).parameters) - {"self"}


def create_kwargs(request: dict, model: str) -> dict:
    """The create() arguments for a request. Fields the openai client does not know (llama.cpp's `grammar` and
    `json_schema`, vLLM's `structured_outputs`, ...) go in `extra_body`, which it merges into the JSON body
    unchanged (it would raise TypeError on an unknown keyword)."""
    known = _create_params()
    out = {k: v for k, v in request.items() if k in known and k != "extra_body"}
    extra = {**(request.get("extra_body") or {}), **{k: v for k, v in request.items() if k not in known}}
    if extra:
        out["extra_body"] = extra
    return {**out, "model": model}


# Where a user changes each client's endpoint, opt-in and key (named in every error about them).
SETTINGS = {
    "teacher": {"url": "[tool.mend.curate] teacher_url (\"local\": the built-in teacher, no server needed)",
                "remote": "[tool.mend.curate] teacher_allow_remote = true",
                "key": "[tool.mend.curate] teacher_api_key_env"},
    "judge": {"url": "[tool.mend.evals] judge_base_url", "remote": "[tool.mend.evals] allow_remote = true",
              "key": "[tool.mend.evals] judge_api_key_env"},
    "student": {"url": "[tool.mend.evals] student_url (empty: the student generates in-process)",
                "remote": "[tool.mend.evals] allow_remote = true", "key": "[tool.mend.evals] student_api_key_env"},
}


def setting(purpose: str, what: str) -> str:
    return SETTINGS.get(purpose, SETTINGS["judge"])[what]


class Client:
    def __init__(self, base_url: str, model: str, *, purpose: str = "teacher", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 3, timeout_s: float = 120.0, allow_remote: bool = False,
                 prices: dict | None = None, db: str | None = None, rpm: int = 0, tpm: int = 0, weights: str = ""):
        if not base_url:
            raise EndpointError(f"no endpoint configured for the {purpose}: set {setting(purpose, 'url')}")
        self.base_url, self.model, self.purpose = base_url.rstrip("/"), model, purpose
        self.endpoint = scrub_text(self.base_url)  # as shown and stored: a password in the URL never is
        self.api_key_env, self.concurrency = api_key_env, max(1, int(concurrency))
        self.max_retries, self.timeout_s = int(max_retries), float(timeout_s)
        self.prices, self.db, self.weights = dict(prices or {}), db, weights  # weights: see request_hash
        self._require_allowed(allow_remote)
        self.limit = RateLimit(rpm, tpm)  # outlives a batch's event loop: the window spans complete_many calls
        self._loop_state: tuple | None = None  # (event loop, AsyncOpenAI, semaphore): both are bound to a loop

    @classmethod
    def for_judge(cls, settings=None) -> "Client":
        from traces import settings as settings_mod
        s = settings or settings_mod.load("evals")
        return cls(s.judge_base_url, s.judge_model, purpose="judge", api_key_env=s.judge_api_key_env,
                   concurrency=s.client_concurrency, max_retries=s.client_max_retries,
                   timeout_s=s.client_timeout_s, allow_remote=s.allow_remote, prices=s.prices,
                   rpm=s.judge_rpm, tpm=s.judge_tpm)

    # ------------------------------------------------------------ safety and reachability

    def _require_allowed(self, allow_remote: bool) -> None:
        if not is_loopback(self.base_url) and not allow_remote:
            raise RemoteNotAllowed(
                f"refusing to send trace content to the non-loopback endpoint {self.endpoint} ({self.purpose}): "
                f"traces can hold customer data. Set {setting(self.purpose, 'remote')} if this endpoint may "
                "receive them.")

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if is_loopback(self.base_url):
            return "unused-local-key"  # local servers ignore it; the openai client insists on one
        raise EndpointError(f"no API key for {self.endpoint}: set the environment variable {self.api_key_env} "
                            f"(its name is {setting(self.purpose, 'key')})")

    def check_endpoint(self, timeout_s: float = 10.0) -> None:
        """Fail early with a clear message when the endpoint is unreachable or rejects the key."""
        import openai
        client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key(), max_retries=0, timeout=timeout_s)
        try:
            client.models.list()
        except openai.AuthenticationError:
            raise EndpointError(f"{self.endpoint} rejected the API key from ${self.api_key_env} (401)") from None
        except openai.PermissionDeniedError:
            raise EndpointError(f"{self.endpoint} refused access with the key from ${self.api_key_env} (403)") from None
        except openai.NotFoundError:
            return  # reachable; some servers simply do not list models
        except (openai.APIConnectionError, openai.APITimeoutError) as e:
            raise EndpointError(f"cannot reach the {self.purpose} endpoint {self.endpoint}: "
                                f"{type(e).__name__}. Is the server running? If not, change "
                                f"{setting(self.purpose, 'url')}") from None
        except openai.APIStatusError as e:
            raise EndpointError(f"{self.endpoint} answered {e.status_code} to GET /models") from None
        finally:
            client.close()

    # ------------------------------------------------------------ the cache (evals/llm_cache.py)

    def cached(self, h: str) -> Call | None:
        return cached_calls([h], self.db).get(h)

    def _store(self, call: Call, request: dict) -> None:
        store_calls([call], [request], self.base_url, request.get("model") or self.model, self.purpose, self.db)

    # ------------------------------------------------------------ calls

    def _state(self):
        import openai
        loop = asyncio.get_running_loop()
        if self._loop_state is None or self._loop_state[0] is not loop:
            oa = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._api_key(),
                                    max_retries=self.max_retries, timeout=self.timeout_s)
            self._loop_state = (loop, oa, asyncio.Semaphore(self.concurrency))
        return self._loop_state[1], self._loop_state[2]

    def cost(self, model: str, prompt_tokens: int | None, completion_tokens: int | None) -> float | None:
        price = self.prices.get(model)
        if price is None:
            return 0.0 if is_loopback(self.base_url) else None  # a local server costs nothing per token
        return ((prompt_tokens or 0) * float(price[0]) + (completion_tokens or 0) * float(price[1])) / 1e6

    async def _request(self, request: dict, h: str) -> Call:
        """Send one request (no cache), within the concurrency bound and the rpm/tpm limits.
        Raises the openai error when it fails after the client's retries."""
        model = request.get("model") or self.model
        oa, sem = self._state()
        async with sem:
            slot = await self.limit.acquire(estimate_tokens(request) if self.limit.tpm else 0)
            start = time.perf_counter()
            completion = await oa.chat.completions.create(**create_kwargs(request, model))
            latency = time.perf_counter() - start
        response = completion.model_dump(mode="json", exclude_unset=True)
        usage = response.get("usage") or {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self.limit.settle(slot, usage.get("total_tokens"))
        return Call(h, text_of(response), response, pt, ct, latency, self.cost(model, pt, ct))

    async def complete(self, request: dict) -> Call:
        """One chat completion, cached (`request` = the create() arguments; `model` defaults to the client's).
        Raises the openai error when it fails after the client's retries. Batches go through complete_all."""
        h = request_hash(self.base_url, self.model, request, self.weights)
        hit = await asyncio.to_thread(self.cached, h)
        if hit is not None:
            return hit
        call = await self._request(request, h)
        await asyncio.to_thread(self._store, call, {**request, "model": request.get("model") or self.model})
        return call

    async def _answer(self, request: dict, h: str, writer: CacheWriter) -> Call:
        try:
            call = await self._request(request, h)
        except Exception as e:  # one failed request must not sink the batch; the caller sees .error
            import openai
            # ValueError: a malformed body (the openai client raises JSONDecodeError on non-JSON)
            if not isinstance(e, (openai.OpenAIError, EndpointError, ValueError)):
                raise
            return Call(h, error=_describe(e))  # failures are not cached: a re-run tries them again
        writer.add(call, {**request, "model": request.get("model") or self.model})
        return call

    async def complete_all(self, requests: list[dict], progress: Callable[[int], Any] | None = None) -> list[Call]:
        """Every request, in order: one cache read for the batch, each distinct uncached request sent once
        (duplicates share its answer, marked `cached`), answers written in batches (CacheWriter)."""
        hashes = [request_hash(self.base_url, self.model, r, self.weights) for r in requests]
        known = await asyncio.to_thread(cached_calls, list(dict.fromkeys(hashes)), self.db)
        writer = CacheWriter(self.base_url, self.model, self.purpose, self.db)
        first: dict[str, int] = {}  # hash -> its first request's index; sent in request order
        for i, h in enumerate(hashes):
            if h not in known:
                first.setdefault(h, i)
        sent = {h: asyncio.ensure_future(self._answer(requests[i], h, writer)) for h, i in first.items()}

        async def one(i: int, h: str) -> Call:
            call = known[h] if h in known else await sent[h]
            if h in sent and first[h] != i and call.error is None:
                call = dataclasses.replace(call, cached=True)  # a duplicate: no request of its own
            if progress:
                progress(1)
            return call
        try:
            return list(await asyncio.gather(*(one(i, h) for i, h in enumerate(hashes))))
        finally:
            for task in sent.values():  # after a failure: stop sending, keep what was answered
                task.cancel()
            try:
                await writer.close()
            finally:
                await self._close()

    async def _close(self):
        if self._loop_state is not None:
            await self._loop_state[1].close()
            self._loop_state = None

    def complete_many(self, requests: list[dict], progress: bool | Callable[[int], Any] = False) -> list[Call]:
        """Synchronous wrapper: all requests, bounded concurrency, results in request order.
        progress: True for a progress display (traces.progress: a rich bar on a terminal, plain lines in a log),
        or a callable given the number of finished calls."""
        if progress is True:
            from traces.progress import progress as bars
            with bars(transient=True) as bar:
                task = bar.add_task(f"{self.purpose} calls", total=len(requests))
                return asyncio.run(self.complete_all(requests, lambda n: bar.advance(task, n)))
        return asyncio.run(self.complete_all(requests, progress or None))


def _describe(e: Exception) -> str:
    """An error line without secrets: the openai errors carry status and message, never the key."""
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}" + (f" ({status})" if status else "") + f": {scrub_text(str(e))[:300]}"
