"""Where `traces ingest` input lives: local files and folders, objects under an `s3://bucket/prefix`, and the Hive
partition values (`day=2026-12-01/`) in the folders between the path named and each file.

Object storage is read through pyarrow.fs.S3FileSystem, not DuckDB: DuckDB reads s3:// only with its httpfs
extension, which it downloads at first use, and the extension packages on PyPI stop at DuckDB 1.5.x while 2.0 is
installed, so an offline machine (or CI) has no way to get it. pyarrow's S3 client is in its wheel: nothing is
downloaded at run time. Credentials and region come from the AWS SDK's own chain (AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, an instance role; AWS_REGION); an S3-compatible server (MinIO, R2,
Ceph, moto) is named by the `s3_endpoint` setting, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL as the AWS SDKs do.

An object is read as a stream (Parquet by ranges), never copied to disk. It is never hashed either (that would
read it twice): it is skipped as already ingested when its URL, size and last-modified time match a complete
ingest, as a local inbox file is by path, size and mtime; its `ingests.file_sha256` is `object:` + the sha256 of
those three.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

from traces.readers import REFUSED, SUFFIXES

SCHEMES = ("s3://",)


class RemoteError(OSError):
    """Object storage that cannot be listed or read (no such bucket, refused credentials, no endpoint); the
    message names the URL."""


def is_url(path) -> bool:
    return str(path).startswith(SCHEMES)


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
        return io.BufferedReader(_Counted(self.fs.open_input_stream(self.key)), 8 << 20)

    def arrow_file(self):
        """Random access, for Parquet (its footer first, then the row groups by range)."""
        return self.fs.open_input_file(self.key)


class _Counted(io.RawIOBase):
    def __init__(self, stream):
        self.stream, self.pos = stream, 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        data = self.stream.read(len(b))
        b[:len(data)] = data
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.stream.close()
        super().close()


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
        raise RemoteError(f"{url}: cannot list it: {e} (check the bucket, the credentials (AWS_ACCESS_KEY_ID, "
                          "AWS_PROFILE) and, for an S3-compatible server, the s3_endpoint setting)") from None
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
    too (a CSV dropped in the inbox is reported, not ignored); an s3:// object or prefix."""
    out = []
    for p in paths:
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
