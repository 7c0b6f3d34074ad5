"""http(s):// input for `traces ingest`: one file at a URL, read as a local file of its name would be (JSONL, JSON,
OTel, their .gz, Parquet; the format told the same way).

Read with the standard library's urllib.request, not a third-party client: requests, httpx2 and fsspec are installed
here only as other packages' dependencies (gguf, openai, datasets), not mend's, and fsspec's HTTPFileSystem runs on
aiohttp's event loop; a HEAD and a streamed GET need no more. urllib follows redirects, honours HTTPS_PROXY and
NO_PROXY, and checks TLS against the system's certificates. No credentials are sent: a URL that needs them carries its
own (a presigned URL), and the credential query parameters of such a URL are never stored or printed (`shown`).

A URL is probed first (HEAD, or a GET whose body is left unread where HEAD is refused, as a presigned GET URL refuses
it): its Content-Length, Last-Modified and ETag, with the URL, are its identity (`ingests.file_sha256` = `object:` +
their sha256), so an inbox URL is skipped unread while they match a complete ingest, as an s3:// object is by size and
last-modified time. A server that sends neither Last-Modified nor ETag leaves no way to see a change: such a URL is
read every time (ids are keys: a re-read stores only what is new).

JSONL and JSON are streamed from the response, never held whole by this module; Parquet needs random access (its
footer first), so it is downloaded to an unnamed temporary file beside the database (data/), gone when it is closed
or the process ends.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import io
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

from traces import settings
from traces.readers import IngestError

# query parameters that carry a credential (a presigned URL's signature, an API token): replaced wherever a URL is kept
_SECRET_PARAM = re.compile(r"(?i)([?&](?:x-amz-(?:signature|credential|security-token)|x-goog-(?:signature|credential)"
                           r"|signature|sig|token|access_token|api_key|apikey)=)[^&#]*")
_NO_CREDENTIALS = ("no credentials are sent over http(s): use a URL that carries its own access (a presigned URL), "
                   "s3:// for a bucket (read with the AWS credentials), or download the file and ingest it")


def shown(url: str) -> str:
    """The URL as stored (`source_file`) and printed: the values of credential query parameters replaced."""
    return _SECRET_PARAM.sub(r"\1REDACTED", url)


class HttpError(OSError):
    """An answer other than 2xx, or none: the message names the URL and the status or what went wrong (listing
    raises it as a locations.RemoteError, reading as the file's IngestError)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class HttpFile:
    """A file at an http(s) URL, with what a local Path offers the readers: name, open("rb"), stat()."""
    url: str = field(repr=False)  # as given, credentials included: requested, never stored or printed
    size: int | None  # Content-Length; None when the server sends none
    last_modified: str
    etag: str
    timeout_s: float | None
    probed_ns: int

    @property
    def name(self) -> str:
        return unquote(urlsplit(self.url).path.rsplit("/", 1)[-1])

    def __str__(self) -> str:
        return shown(self.url)

    def resolve(self) -> "HttpFile":
        return self

    def stat(self):
        try:
            mtime_ns = int(email.utils.parsedate_to_datetime(self.last_modified).timestamp()) * 10**9
        except (TypeError, ValueError):
            mtime_ns = None
        return SimpleNamespace(st_size=self.size, st_mtime_ns=mtime_ns)

    @property
    def identity(self) -> str:
        never_same = "" if self.last_modified or self.etag else f"\0{self.probed_ns}"  # nothing tells a change
        key = f"{self}\0{self.size}\0{self.last_modified}\0{self.etag}{never_same}"
        return "object:" + hashlib.sha256(key.encode()).hexdigest()

    def open(self, mode: str = "rb"):
        """The response body as a stream with tell() (the progress bar's position); a refused GET fails the file."""
        try:
            return _Body(_request(self.url, "GET", self.timeout_s), self)
        except HttpError as e:
            raise IngestError(str(e)) from None

    def arrow_file(self):
        """Parquet: downloaded to an unnamed temporary file beside the database, for random access."""
        folder = settings.db_path().parent
        folder.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.TemporaryFile(dir=folder, prefix="mend-download-")
        try:
            with self.open() as body:
                shutil.copyfileobj(body, tmp, 8 << 20)
        except OSError as e:
            tmp.close()
            raise IngestError(f"{self}: cannot download it: {e}") from None
        tmp.seek(0)
        return tmp


class Counted(io.RawIOBase):
    """A byte stream that counts what it hands out: tell(), the progress bar's position, which Arrow's input streams
    and http responses lack (traces.locations reads s3 objects through it too)."""

    def __init__(self, stream):
        self.stream, self.pos = stream, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(None if n is None or n < 0 else n)
        self.pos += len(data)
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.stream.close()
        super().close()


class _Body(Counted):
    """A response body: a read that times out, or a body shorter than its Content-Length, raised as an OSError saying
    so (the readers report it with the line reached)."""

    def __init__(self, response, file: HttpFile):
        super().__init__(response)
        self.timeout_s = file.timeout_s
        length = response.headers.get("Content-Length")
        self.length = int(length) if length and length.isdigit() else None

    def read(self, n: int = -1) -> bytes:
        try:
            data = super().read(n)
        except TimeoutError:
            raise TimeoutError(f"no data for {self.timeout_s:g} s (the http_timeout_s setting)") from None
        except (http.client.HTTPException, ConnectionError) as e:
            raise ConnectionError(f"the connection broke after {self.pos:,} bytes: {e!r}") from None
        if not data and n and self.length is not None and self.pos < self.length:
            raise ConnectionError(f"the connection closed after {self.pos:,} of {self.length:,} bytes")
        return data


def _request(url: str, method: str, timeout_s: float | None):
    """The response (headers read, body not), or HttpError naming the URL and the status or the failure."""
    request = urllib.request.Request(url, method=method, headers={"User-Agent": "mend-traces"})
    try:
        return urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        raise HttpError(_status_line(url, e), e.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        reason = getattr(e, "reason", e)
        if isinstance(reason, TimeoutError):
            raise HttpError(f"{shown(url)}: no answer within {timeout_s:g} s (the http_timeout_s setting)") from None
        raise HttpError(f"{shown(url)}: cannot connect: {reason}") from None


def _status_line(url: str, e: urllib.error.HTTPError) -> str:
    with e:
        body = e.read(4096)
    said = re.search(rb"<Message>([^<]{1,300})</Message>", body)  # S3, GCS and Azure explain in XML
    line = f"{shown(url)}: HTTP {e.code} {e.reason}" + (f" ({said.group(1).decode(errors='replace')})" if said else "")
    if e.code in (404, 410):
        return f"{line}: no file at this URL"
    if e.code in (401, 403):
        return f"{line}: the server refused it; {_NO_CREDENTIALS}"
    return line


def probe(url: str, cfg=None) -> HttpFile:
    """The file at `url`, by its headers (HEAD; a GET left unread where HEAD is refused or not allowed)."""
    timeout_s = getattr(cfg, "http_timeout_s", 60.0) or None
    try:
        response = _request(url, "HEAD", timeout_s)
    except HttpError as e:
        if e.status not in (403, 405, 501):
            raise
        response = _request(url, "GET", timeout_s)
    with response:
        headers = response.headers
        length = headers.get("Content-Length")
        return HttpFile(url, int(length) if length and length.isdigit() else None, headers.get("Last-Modified", ""),
                        headers.get("ETag", ""), timeout_s, time.time_ns())
