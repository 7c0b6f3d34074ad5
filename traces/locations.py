"""Where `traces ingest` input lives: local files and folders, objects under an `s3://bucket/prefix`, one file at an
http(s) URL (traces.http_input), and the Hive partition values (`day=2026-12-01/`) in the folders between the path
named and each file.

Object storage is read through pyarrow.fs.S3FileSystem, not DuckDB: DuckDB reads s3:// only with its httpfs
extension, which it downloads at first use, and the extension packages on PyPI stop at DuckDB 1.5.x while 2.0 is
installed, so an offline machine (or CI) has no way to get it. pyarrow's S3 client is in its wheel: nothing is
downloaded at run time. Credentials and region come from the AWS SDK's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, an instance role; AWS_REGION); an S3-compatible server (MinIO, R2,
Ceph, moto) is named by the `s3_endpoint` setting, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL as the AWS SDKs do.

An object is read as a stream (Parquet by ranges), never copied to disk. It is never hashed either (that would
read it twice): it is skipped as already ingested when its URL, size and last-modified time match a complete
ingest, as a local inbox file is by path, size and mtime; its `ingests.file_sha256` is `object:` + the sha256 of
those three. A request the server refuses (unknown keys, a policy that denies it) is told apart from one that failed:
its line names the operation refused, the credentials in use and what to set.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

from traces import http_input
from traces.readers import REFUSED, SUFFIXES, IngestError

SCHEMES = ("s3://", "http://", "https://")  # http(s): one file at a URL (traces.http_input)


class RemoteError(OSError):
    """Input elsewhere that cannot be listed or read (no such bucket, refused credentials, no endpoint, an http error
    or timeout): the command stops before storing anything; the message names the URL."""


def is_url(path) -> bool:
    return str(path).startswith(SCHEMES)


def is_remote(path) -> bool:
    """An object or a URL (RemoteFile, http_input.HttpFile), named by metadata rather than hashed: not a local path."""
    return hasattr(path, "identity")


# what the AWS SDK (through pyarrow) says when the server refused the request, not when it failed to answer
_REFUSAL = re.compile(r"ACCESS_DENIED|AccessDenied|INVALID_ACCESS_KEY|InvalidAccessKeyId|SIGNATURE_DOES_NOT_MATCH|"
                      r"SignatureDoesNotMatch|EXPIRED_TOKEN|ExpiredToken|InvalidToken|HTTP status 40[13]\b")


def _refused(url: str, e: OSError) -> str | None:
    """The line for a request the server refused (wrong or missing credentials, a policy that denies it), naming
    the URL, the operation refused, the credentials in use and what to set; None for any other error."""
    if not _REFUSAL.search(str(e)):
        return None
    op = re.search(r"during (\w+) operation", str(e))
    used = ("AWS_PROFILE=" + os.environ["AWS_PROFILE"] if os.environ.get("AWS_PROFILE")
            else "AWS_ACCESS_KEY_ID" if os.environ.get("AWS_ACCESS_KEY_ID")
            else "none in the environment: the SDK's chain (~/.aws, an instance role) or none at all")
    return (f"{url}: access denied: the server refused {op.group(1) if op else 'the request'} with the credentials "
            f"in use ({used}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary "
            "ones) or AWS_PROFILE to credentials allowed s3:ListBucket and s3:GetObject on it")


@dataclass(frozen=True)
class RemoteFile:
    """An object in object storage, with what a local Path offers the readers: name, open("rb"), stat()."""
    url: str
    fs: object  # pyarrow.fs.S3FileSystem
    key: str  # bucket/key, as pyarrow names it
    size: int
    mtime_ns: int

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]

    def __str__(self) -> str:
        return self.url

    def resolve(self) -> "RemoteFile":
        return self

    def stat(self):
        return SimpleNamespace(st_size=self.size, st_mtime_ns=self.mtime_ns)

    @property
    def identity(self) -> str:
        return "object:" + hashlib.sha256(f"{self.url}\0{self.size}\0{self.mtime_ns}".encode()).hexdigest()

    def open(self, mode: str = "rb"):
        """A buffered stream with tell() (the progress bar's position), which Arrow's input streams lack."""
        return io.BufferedReader(_Refusable(self._opened(self.fs.open_input_stream), self.url), 8 << 20)

    def arrow_file(self):
        """Random access, for Parquet (its footer first, then the row groups by range)."""
        return self._opened(self.fs.open_input_file)

    def _opened(self, open_key):
        """A refused read fails this object with one line saying what to set, not the SDK's message alone."""
        try:
            return open_key(self.key)
        except OSError as e:
            raise IngestError(_refused(self.url, e) or f"{self.url}: cannot read it: {e}") from None


class _Refusable(http_input.Counted):
    """Arrow may send the GET only at the first read (moto 5.2.6 refuses it there, 5.2.5 at the open): a refusal
    then is the same one line as at the open, not a broken stream."""

    def __init__(self, stream, url: str):
        super().__init__(stream)
        self.url = url

    def read(self, n: int = -1) -> bytes:
        try:
            return super().read(n)
        except OSError as e:
            line = _refused(self.url, e)
            if line:
                raise IngestError(line) from None
            raise


def filesystem(cfg=None):
    import pyarrow.fs as pafs
    endpoint = (getattr(cfg, "s3_endpoint", "") or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL") or None)
    return pafs.S3FileSystem(endpoint_override=endpoint)


def list_remote(url: str, cfg=None) -> list[tuple[RemoteFile, dict]]:
    """(object, its partition values) for the object at `url`, or every object under it that ingest reads."""
    import pyarrow.fs as pafs
    parts = urlsplit(url)
    root = f"{parts.netloc}/{parts.path.strip('/')}".rstrip("/")
    fs = filesystem(cfg)
    try:
        info = fs.get_file_info(root)
        infos = [info] if info.type == pafs.FileType.File else \
            fs.get_file_info(pafs.FileSelector(root, recursive=True)) if info.type == pafs.FileType.Directory else []
    except OSError as e:
        raise RemoteError(_refused(url, e) or f"{url}: cannot list it: {e} (check the bucket, the credentials "
                          "(AWS_ACCESS_KEY_ID, AWS_PROFILE) and, for an S3-compatible server, the s3_endpoint setting)"
                          ) from None
    if not infos:
        raise RemoteError(f"{url}: " + ("no such object or prefix" if _bucket_exists(fs, parts.netloc)
                                        else f"the bucket {parts.netloc!r} does not exist (or these credentials "
                                             "may not see it)"))
    files = [i for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(SUFFIXES + REFUSED)]
    out = [RemoteFile(f"s3://{i.path}", fs, i.path, i.size, i.mtime_ns or 0) for i in sorted(files, key=lambda i: i.path)]
    return [(f, partitions(f.key[len(root):] if f.key != root else f.name)) for f in out]


def _bucket_exists(fs, bucket: str) -> bool:
    import pyarrow.fs as pafs
    try:
        return fs.get_file_info(bucket).type != pafs.FileType.NotFound
    except OSError:
        return False


def partitions(relative: str) -> dict:
    """Hive partition values of the folders in `relative` (the path below the one named): `day=2026-12-01/x.jsonl`
    -> {"day": "2026-12-01"}. Hand-written: pyarrow.dataset parses Hive paths only inside a Dataset of one file
    format and one schema, and an inbox mixes JSONL, OTel and Parquet. Values stay text (Hive's escapes undone,
    its default partition is null): no type is guessed from a folder name."""
    out = {}
    for part in relative.strip("/").split("/")[:-1]:
        key, eq, value = part.partition("=")
        if eq and key:
            out[unquote(key)] = None if value == "__HIVE_DEFAULT_PARTITION__" else unquote(value)
    return out


def expand(paths: list, cfg=None) -> list[tuple]:
    """(file, partition values) for each path: a file; a folder's or prefix's files, sorted, refused formats listed
    too (a CSV dropped in the inbox is reported, not ignored); an s3:// object or prefix; an http(s) URL."""
    out = []
    for p in paths:
        if str(p).startswith(("http://", "https://")):  # one file, no listing (traces.http_input)
            try:
                out.append((http_input.probe(str(p), cfg), {}))
            except http_input.HttpError as e:
                raise RemoteError(str(e)) from None
            continue
        if is_url(p):
            out += list_remote(str(p), cfg)
            continue
        p = Path(p)
        if p.is_dir():
            root = p.resolve()
            out += [(q.resolve(), partitions(str(q.relative_to(root)))) for q in sorted(root.rglob("*"))
                    if q.is_file() and q.name.lower().endswith(SUFFIXES + REFUSED)]
        elif p.exists():
            out.append((p.resolve(), {}))
        else:
            raise FileNotFoundError(f"no such file: {p}")
    return out
