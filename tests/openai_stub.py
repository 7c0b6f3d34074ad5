"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests (chat completions + models), scripted.

    from openai_stub import OpenAIStub, Reply   # tests/ is on sys.path under pytest (no __init__.py)

    with OpenAIStub() as stub:                      # starts on a free loopback port, in a thread
        stub.push(Reply(status=429, headers={"Retry-After": "0.1"}))   # first request: rate limited
        stub.push("the answer")                     # second: 200 with this assistant content
        client = Client(stub.base_url, "stub-model")
        ...
        assert stub.count == 2                      # requests to /chat/completions received
        stub.requests[0]["messages"]                # the JSON bodies received, in order
        stub.headers[0]["authorization"]            # and their headers (lower-case names)

What answers a request (first match wins):
1. the queue: `push(x)` appends one scripted answer; each chat request pops one;
2. `stub.responder = fn(body: dict) -> answer`, called when the queue is empty;
3. the default: a 200 whose content echoes the last user message ("echo: ...").
An answer is a `str` (the content), a `dict` (sent as the whole JSON body), or a `Reply(...)`:
    status (200), content (str), body (a dict, or raw str/bytes for malformed bodies), headers (dict),
    delay_s (sleep before answering: timeouts), tool_calls (list), usage (dict), finish_reason.
`GET /models` (and `/v1/models`) lists `models`; set `stub.models_status = 401` to reject keys.
The base URL ends in /v1 (`stub.base_url`); paths with or without /v1 are served.
"""
from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional


@dataclass
class Reply:
    status: int = 200
    content: Optional[str] = "ok"
    body: Any = None  # overrides the generated body: dict -> JSON, str/bytes -> sent as is (malformed bodies)
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0
    tool_calls: Optional[list] = None
    usage: Optional[dict] = None
    finish_reason: str = "stop"


class OpenAIStub:
    def __init__(self, models=("stub-model",)):
        self.models = list(models)
        self.models_status = 200
        self.queue: collections.deque = collections.deque()
        self.responder: Optional[Callable[[dict], Any]] = None
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -------------------------------------------------------- control
    def push(self, *answers) -> "OpenAIStub":
        with self._lock:
            self.queue.extend(answers)
        return self

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "OpenAIStub":
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -------------------------------------------------------- answering
    def _next(self, body: dict) -> Reply:
        with self._lock:
            self.requests.append(body)
            answer = self.queue.popleft() if self.queue else None
        if answer is None:
            answer = self.responder(body) if self.responder else _echo(body)
        if isinstance(answer, Reply):
            return answer
        if isinstance(answer, dict):
            return Reply(body=answer)
        return Reply(content=str(answer))


def _echo(body: dict) -> str:
    users = [m.get("content") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


def completion_body(reply: Reply, request: dict) -> dict:
    message = {"role": "assistant", "content": reply.content}
    if reply.tool_calls:
        message["tool_calls"] = reply.tool_calls
    words = sum(len(str(m.get("content", "")).split()) for m in request.get("messages", []))
    usage = reply.usage or {"prompt_tokens": words, "completion_tokens": len((reply.content or "").split()),
                            "total_tokens": words + len((reply.content or "").split())}
    return {"id": f"chatcmpl-stub-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": request.get("model", "stub-model"),
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}], "usage": usage}


def _handler(stub: OpenAIStub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, payload: Any, headers: dict | None = None) -> None:
            data = payload if isinstance(payload, bytes) else (
                payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            try:
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
                pass

        def do_GET(self):
            if self.path.rstrip("/").endswith("/models"):
                if stub.models_status != 200:
                    return self._send(stub.models_status, {"error": {"message": "rejected", "type": "auth"}})
                return self._send(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in stub.models]})
            self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                return self._send(404, {"error": {"message": f"no route {self.path}"}})
            body = json.loads(raw or b"{}")
            with stub._lock:
                stub.headers.append({k.lower(): v for k, v in self.headers.items()})
            reply = stub._next(body)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if reply.body is not None:
                return self._send(reply.status, reply.body, reply.headers)
            if reply.status != 200:
                return self._send(reply.status, {"error": {"message": f"stub status {reply.status}",
                                                           "type": "stub_error"}}, reply.headers)
            self._send(200, completion_body(reply, body), reply.headers)

    return Handler
