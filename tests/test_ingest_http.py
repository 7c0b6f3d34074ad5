"""http(s) input (issue 24 item 5): `traces ingest https://host/path/file.jsonl` (.jsonl.gz, .parquet) and an http
inbox, read with urllib from a threaded http.server on a free loopback port that each test starts and stops."""
import gzip
import http.server
import json
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders.ingest_files import chat, check_invariant, rows

from traces import ingest, settings
from traces.cli import main

LINES = "".join(json.dumps(chat(i, f"question {i}?")) + "\n" for i in range(3)).encode()
DENIED = b"<?xml version='1.0'?><Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"


class Server(http.server.ThreadingHTTPServer):
    """files: path -> {"body", "headers", and what goes wrong: "status", "head_status" (HEAD only), "length" (a
    Content-Length the body does not reach, or None: none), "stall" (after this many body bytes, wait until the
    test ends)}."""
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.log, self.done = {}, [], threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class Handler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.answer(body=False)

    def do_GET(self):
        self.answer(body=True)

    def answer(self, body: bool):
        server = self.server
        server.log.append((self.command, self.path))
        f = server.files.get(self.path.split("?")[0])
        if f is None:
            return self.send_error(404)
        status = f.get("head_status") if not body and f.get("head_status") else f.get("status", 200)
        data = DENIED if status == 403 else f.get("body", b"")
        if f.get("stall") == 0:  # no answer at all
            return server.done.wait()
        self.send_response(status)
        if f.get("length", len(data)) is not None:  # None: a body whose end is the connection's
            self.send_header("Content-Length", str(f.get("length", len(data))))
        for key, value in f.get("headers", {}).items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.wfile.write(data[:f.get("stall", len(data))])
            self.wfile.flush()
            if "stall" in f:
                server.done.wait()

    def log_message(self, *args):
        pass


@pytest.fixture
def web(monkeypatch):
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    server = Server()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.done.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _parquet(records) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"messages": [r["messages"] for r in records], "trace_id": [r["id"] for r in records],
                             "response": [r["choices"][0]["message"]["content"] for r in records]}), sink)
    return sink.getvalue().to_pybytes()


VALIDATORS = {"Last-Modified": "Mon, 07 Dec 2026 10:00:00 GMT", "ETag": '"v1"'}


def test_ingest_reads_jsonl_gz_and_parquet_over_http(web, capsys):
    web.files["/logs/a.jsonl"] = {"body": LINES, "headers": VALIDATORS}
    web.files["/logs/b.jsonl.gz"] = {"body": gzip.compress(LINES.replace(b"chatcmpl-", b"gz-")), "length": None}
    web.files["/logs/c.parquet"] = {"body": _parquet([chat(f"p{i}", f"parquet {i}?") for i in range(2)])}
    urls = [web.url(p) for p in ("/logs/a.jsonl", "/logs/b.jsonl.gz", "/logs/c.parquet")]
    assert main(["ingest", *urls]) == 0
    assert rows("SELECT source_file, source_format, status, n_stored, file_size, file_mtime_ns FROM ingests "
                "ORDER BY source_file") == [
        (urls[0], "jsonl", "complete", 3, len(LINES), 1796637600 * 10**9),  # Last-Modified as the mtime
        (urls[1], "jsonl", "complete", 3, None, None),  # no Content-Length, no Last-Modified
        (urls[2], "parquet", "complete", 2, len(web.files["/logs/c.parquet"]["body"]), None)]
    assert rows("SELECT trace_id, prompt, source_file FROM traces WHERE trace_id IN ('gz-1', 'chatcmpl-p1') "
                "ORDER BY trace_id") == [
        ("chatcmpl-p1", "parquet 1?", urls[2]), ("gz-1", "question 1?", urls[1])]
    assert rows("SELECT count(*) FROM ingests WHERE starts_with(file_sha256, 'object:')") == [(3,)]


@pytest.mark.parametrize("headers", [VALIDATORS, {}], ids=["validators", "none"])
def test_an_http_inbox_is_skipped_while_length_and_validators_match(web, monkeypatch, headers):
    web.files["/inbox.jsonl"] = {"body": LINES, "headers": dict(headers)}
    monkeypatch.setenv("MEND_TRACES_INBOX", web.url("/inbox.jsonl"))
    [first] = ingest.ingest_inbox()
    check_invariant(first)
    assert (first.status, first.counts.stored) == ("complete", 3)
    web.log.clear()
    [again] = ingest.ingest_inbox()
    if headers:  # unread: URL, Content-Length, Last-Modified and ETag match a complete ingest
        assert again.status == "skipped" and web.log == [("HEAD", "/inbox.jsonl")]
        web.files["/inbox.jsonl"]["headers"]["ETag"] = '"v2"'  # same length and date, another ETag: read again
        [again] = ingest.ingest_inbox()
    assert (again.status, again.counts.stored, again.counts.duplicate) == ("complete", 0, 3)


@pytest.mark.parametrize("case, says", [
    ({}, "HTTP 404 Not Found: no file at this URL"),
    ({"status": 403}, "HTTP 403 Forbidden (Request has expired): the server refused it; no credentials are sent"),
    ({"status": 500}, "HTTP 500 Internal Server Error"),
    ({"stall": 0}, "no answer within 2 s (the http_timeout_s setting)"),
    ("closed", "cannot connect: [Errno 111] Connection refused")], ids=["404", "403", "500", "timeout", "refused"])
def test_an_http_failure_is_one_line_naming_the_url_and_stores_nothing(web, capsys, monkeypatch, case, says):
    monkeypatch.setenv("MEND_TRACES_HTTP_TIMEOUT_S", "2")
    url = web.url("/logs/a.jsonl")
    if case == "closed":
        web.shutdown()
        web.server_close()  # the port is free again: nothing listens
    elif case:
        web.files["/logs/a.jsonl"] = case
    assert main(["ingest", url]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {url}: {says}" in err and "Traceback" not in err
    assert rows("SELECT (SELECT count(*) FROM ingests), (SELECT count(*) FROM traces)") == [(0, 0)]


def test_a_presigned_url_that_refuses_head_is_read_and_its_signature_is_never_stored(web, capsys):
    web.files["/signed/a.jsonl"] = {"body": LINES, "head_status": 403}  # signed for GET only, as S3 presigns
    url = web.url("/signed/a.jsonl?X-Amz-Credential=AKIDEXAMPLE&X-Amz-Signature=f00dfeed&X-Amz-Expires=60")
    assert main(["ingest", url]) == 0
    assert "f00dfeed" not in capsys.readouterr().out
    kept = web.url("/signed/a.jsonl?X-Amz-Credential=REDACTED&X-Amz-Signature=REDACTED&X-Amz-Expires=60")
    assert rows("SELECT DISTINCT source_file FROM traces") == [(kept,)]
    assert rows("SELECT source_file, n_stored FROM ingests") == [(kept, 3)]


@pytest.mark.parametrize("fault, says", [({"length": len(LINES) + 100}, f"the connection closed after {len(LINES)} of"),
                                         ({"stall": 10}, "no data for 2 s (the http_timeout_s setting)")],
                         ids=["cut", "stalled"])
def test_a_body_cut_short_or_stalled_fails_the_file_naming_the_url(web, capsys, monkeypatch, fault, says):
    monkeypatch.setenv("MEND_TRACES_HTTP_TIMEOUT_S", "2")
    web.files["/a.jsonl"] = {"body": LINES, **fault}
    assert main(["ingest", web.url("/a.jsonl")]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: {web.url('/a.jsonl')}: cannot read" in err and says in err and "Traceback" not in err
    assert rows("SELECT status FROM ingests") == [("failed",)]
    web.files["/a.jsonl"] = {"body": LINES}  # the server mended: the same command reads it whole
    assert main(["ingest", web.url("/a.jsonl")]) == 0
    assert rows("SELECT count(*) FROM traces") == [(3,)]
