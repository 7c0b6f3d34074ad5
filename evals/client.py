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
  fields a request adds, such as a `grammar`, sent through the openai client's `extra_body`). The cache is read
  before each call and written right after it (a short connection each time, never held across an
  await), so a killed run that is started again repeats no completed call.
- Tokens, latency and cost (settings `prices`: model -> [USD per 1M input, per 1M output tokens]) per call.
- The API key is read from the environment variable named by `api_key_env` and handed to the openai
  client only: it is never stored, logged or put into an error message.
- Trace content may hold customer data: a non-loopback base_url needs `allow_remote=True`
  (settings `allow_remote = true`), else `RemoteNotAllowed` before any request.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import inspect
import ipaddress
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from traces.scrub import scrub_text


class RemoteNotAllowed(RuntimeError):
    pass


class EndpointError(RuntimeError):
    pass


@dataclass
class Call:
    request_hash: str
    text: Optional[str] = None  # the first choice's content
    response: Optional[dict] = None  # the whole completion (as JSON)
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    latency_s: Optional[float] = None
    cost_usd: Optional[float] = None
    cached: bool = False  # answered from llm_calls without a request
    error: Optional[str] = None  # set when the call failed after the client's retries (nothing cached)
    extra: dict = field(default_factory=dict)

    @property
    def tool_calls(self) -> list:
        try:
            return self.response["choices"][0]["message"].get("tool_calls") or []
        except (TypeError, KeyError, IndexError):
            return []


def is_loopback(base_url: str) -> bool:
    host = (urlparse(base_url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def request_hash(base_url: str, model: str, request: dict) -> str:
    """sha256 of the canonical JSON of everything that decides the answer (never the key). Fields meant for the
    body as they are (a grammar, structured outputs) count wherever the request carries them: at the top level
    or in `extra_body` (flattened first, so both spellings of one body share a cache entry)."""
    flat = {k: v for k, v in request.items() if k != "extra_body"}
    flat.update(request.get("extra_body") or {})
    body = {"endpoint": base_url.rstrip("/"), **flat, "model": request.get("model") or model}
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


class Client:
    def __init__(self, base_url: str, model: str, *, purpose: str = "teacher", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 3, timeout_s: float = 120.0, allow_remote: bool = False,
                 prices: dict | None = None, db: str | None = None):
        if not base_url:
            raise EndpointError(f"no endpoint configured for the {purpose} (base_url is empty)")
        self.base_url, self.model, self.purpose = base_url.rstrip("/"), model, purpose
        self.endpoint = scrub_text(self.base_url)  # as shown and stored: a password in the URL never is
        self.api_key_env, self.concurrency = api_key_env, max(1, int(concurrency))
        self.max_retries, self.timeout_s = int(max_retries), float(timeout_s)
        self.prices, self.db = dict(prices or {}), db
        self._require_allowed(allow_remote)
        self._loop_state: tuple | None = None  # (event loop, AsyncOpenAI, semaphore): both are bound to a loop

    @classmethod
    def for_judge(cls, settings=None) -> "Client":
        from traces import settings as settings_mod
        s = settings or settings_mod.load("evals")
        return cls(s.judge_base_url, s.judge_model, purpose="judge", api_key_env=s.judge_api_key_env,
                   concurrency=s.client_concurrency, max_retries=s.client_max_retries,
                   timeout_s=s.client_timeout_s, allow_remote=s.allow_remote, prices=s.prices)

    # ------------------------------------------------------------ safety and reachability

    def _require_allowed(self, allow_remote: bool) -> None:
        if not is_loopback(self.base_url) and not allow_remote:
            raise RemoteNotAllowed(
                f"refusing to send trace content to the non-loopback endpoint {self.endpoint} ({self.purpose}): "
                "traces can hold customer data. Set `allow_remote = true` in [tool.mend.evals] "
                "(or MEND_EVALS_ALLOW_REMOTE=1) if this endpoint may receive them.")

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env)
        if key:
            return key
        if is_loopback(self.base_url):
            return "unused-local-key"  # local servers ignore it; the openai client insists on one
        raise EndpointError(f"no API key for {self.endpoint}: set the environment variable {self.api_key_env}")

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
                                f"{type(e).__name__}. Is the server running?") from None
        except openai.APIStatusError as e:
            raise EndpointError(f"{self.endpoint} answered {e.status_code} to GET /models") from None
        finally:
            client.close()

    # ------------------------------------------------------------ the cache (short connections)

    def _connect(self, read_only=False):
        from traces import store
        return store.connect(self.db, read_only=read_only)

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

    async def complete(self, request: dict) -> Call:
        """One chat completion (`request` = the create() arguments; `model` defaults to the client's).
        Raises the openai error when it fails after the client's retries."""
        model = request.get("model") or self.model
        h = request_hash(self.base_url, self.model, request)
        hit = self.cached(h)
        if hit is not None:
            return hit
        oa, sem = self._state()
        async with sem:
            start = time.perf_counter()
            completion = await oa.chat.completions.create(**create_kwargs(request, model))
            latency = time.perf_counter() - start
        response = completion.model_dump(mode="json", exclude_unset=True)
        usage = response.get("usage") or {}
        pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
        call = Call(h, _text(response), response, pt, ct, latency, self.cost(model, pt, ct))
        self._store(call, {**request, "model": model})
        return call

    async def _safe(self, request: dict) -> Call:
        try:
            return await self.complete(request)
        except Exception as e:  # one failed request must not sink the batch; the caller sees .error
            import openai
            # ValueError: a malformed body (the openai client raises JSONDecodeError on non-JSON)
            if not isinstance(e, (openai.OpenAIError, EndpointError, ValueError)):
                raise
            return Call(request_hash(self.base_url, self.model, request), error=_describe(e))

    async def complete_all(self, requests: list[dict], progress: Callable[[int], Any] | None = None) -> list[Call]:
        async def one(req):
            call = await self._safe(req)
            if progress:
                progress(1)
            return call
        try:
            return list(await asyncio.gather(*(one(r) for r in requests)))
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


# ------------------------------------------------------------ the llm_calls cache (any caller that answers requests)

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
        out[h] = Call(h, _text(response), response, pt, ct, latency, cost, cached=True)
    return out


def store_calls(calls: list[Call], requests: list[dict], endpoint: str, model: str, purpose: str,
                db: str | None = None) -> None:
    """Cache completed calls (one transaction; a request already cached is left as it is)."""
    from traces import store
    if not calls:
        return
    endpoint = scrub_text(endpoint)  # a teacher_url may carry a password
    rows = [[c.request_hash, endpoint, r.get("model") or model, purpose, json.dumps(r, default=str),
             json.dumps(c.response), c.prompt_tokens, c.completion_tokens, c.latency_s, c.cost_usd]
            for c, r in zip(calls, requests)]
    with store.connect(db) as con, store.transaction(con):
        con.executemany("INSERT OR IGNORE INTO llm_calls (request_hash, endpoint, model, purpose, request, response,"
                        " prompt_tokens, completion_tokens, latency_s, cost_usd) VALUES (?,?,?,?,?,?,?,?,?,?)", rows)


def _text(response: dict | None) -> str | None:
    try:
        return response["choices"][0]["message"].get("content")
    except (TypeError, KeyError, IndexError):
        return None


def _describe(e: Exception) -> str:
    """An error line without secrets: the openai errors carry status and message, never the key."""
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}" + (f" ({status})" if status else "") + f": {scrub_text(str(e))[:300]}"
