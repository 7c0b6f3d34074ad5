"""Remote and partitioned input (issue 24 item 5): `traces ingest s3://bucket/prefix/` and an s3:// inbox, read through
pyarrow's S3 client (no DuckDB extension to download) from an S3-compatible server on loopback (moto, started and
stopped here), and Hive-partitioned folders whose `key=value` values join each record's metadata."""
import json
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from builders.ingest_files import chat, check_invariant, export, rows, span, write_jsonl

from traces import ingest, settings
from traces.cli import main

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")


@pytest.fixture
def s3(monkeypatch):
    """A moto S3 server on a free loopback port, a bucket `traffic` in it, and the settings that point at it."""
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        monkeypatch.setenv("MEND_TRACES_S3_ENDPOINT", endpoint)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="traffic")
        yield client
    finally:
        server.stop()


def _parquet_bytes(records) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"messages": [r["messages"] for r in records],
                             "response": [r["choices"][0]["message"]["content"] for r in records],
                             "trace_id": [r["id"] for r in records]}), sink)
    return sink.getvalue().to_pybytes()


def _upload(s3, tmp_path):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [chat(i, f"question {i}?") for i in range(3)])
    s3.put_object(Bucket="traffic", Key="logs/day=2026-12-01/a.jsonl", Body=jsonl.read_bytes())
    s3.put_object(Bucket="traffic", Key="logs/day=2026-12-02/b.parquet",
                  Body=_parquet_bytes([chat(f"p{i}", f"parquet question {i}?") for i in range(2)]))
    s3.put_object(Bucket="traffic", Key="logs/notes.txt", Body=b"not a trace file")


def test_ingest_reads_jsonl_and_parquet_from_an_s3_prefix(s3, tmp_path):
    _upload(s3, tmp_path)
    summaries = ingest.ingest_paths(["s3://traffic/logs/"], settings.load("traces"))
    for s in summaries:
        check_invariant(s)
    assert [(s.path, s.format, s.status, s.counts.stored) for s in summaries] == [
        ("s3://traffic/logs/day=2026-12-01/a.jsonl", "jsonl", "complete", 3),
        ("s3://traffic/logs/day=2026-12-02/b.parquet", "parquet", "complete", 2)]
    got = rows("SELECT trace_id, prompt, metadata ->> 'day', source_file FROM traces ORDER BY trace_id")
    assert got[0] == ("chatcmpl-0", "question 0?", "2026-12-01", "s3://traffic/logs/day=2026-12-01/a.jsonl")
    assert got[3] == ("chatcmpl-p0", "parquet question 0?", "2026-12-02", "s3://traffic/logs/day=2026-12-02/b.parquet")
    assert rows("SELECT count(*), count(DISTINCT file_sha256) FROM ingests WHERE starts_with(file_sha256, 'object:')"
                ) == [(2, 2)]


def test_an_s3_inbox_skips_objects_already_ingested_and_reads_a_changed_one(s3, tmp_path, monkeypatch):
    _upload(s3, tmp_path)
    monkeypatch.setenv("MEND_TRACES_INBOX", "s3://traffic/logs")
    first = ingest.ingest_inbox()
    assert [s.status for s in first] == ["complete", "complete"]
    assert [s.status for s in ingest.ingest_inbox()] == ["skipped", "skipped"]  # unread: URL, size, mtime match
    s3.put_object(Bucket="traffic", Key="logs/day=2026-12-01/a.jsonl",
                  Body=(tmp_path / "a.jsonl").read_bytes() + json.dumps(chat(9, "a new question?")).encode() + b"\n")
    again = ingest.ingest_inbox()
    assert [(s.status, s.counts.stored, s.counts.duplicate) for s in again] == [("complete", 1, 3), ("skipped", 0, 0)]


def test_otel_export_streamed_from_s3(s3):
    doc = export(*[span(f"s{i}", "chat", {"gen_ai.prompt": f"q{i}?", "gen_ai.completion": "a."}) for i in range(4)])
    s3.put_object(Bucket="traffic", Key="otel/export.json", Body=json.dumps(doc, indent=2).encode())
    [s] = ingest.ingest_paths(["s3://traffic/otel/export.json"], settings.load("traces", {"batch_lines": 3}))
    assert (s.format, s.status, s.counts.stored) == ("otel", "complete", 4)


@pytest.mark.parametrize("url, says", [("s3://no-such-bucket/logs/", "the bucket 'no-such-bucket' does not exist"),
                                       ("s3://traffic/nothing-here/", "no such object or prefix")])
def test_a_missing_bucket_or_prefix_is_one_clear_line_naming_the_url(s3, capsys, url, says):
    assert main(["ingest", url]) == 2
    err = capsys.readouterr().err
    assert url in err and says in err.replace("\n", " ") and "Traceback" not in err
    assert rows("SELECT count(*) FROM ingests") == [(0,)]


@pytest.fixture
def s3_auth(s3, tmp_path):
    """The objects of _upload, then the moto server checking every request's signature and IAM policy (its
    /moto-api/reset-auth, put back afterwards), with keys for two users: `reader` may do anything in S3, `lister`
    may list the bucket but not read its objects."""
    _upload(s3, tmp_path)
    endpoint = s3.meta.endpoint_url
    iam = boto3.client("iam", endpoint_url=endpoint)
    allow = {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}
    deny_get = {"Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::traffic/logs/*"}
    keys = {}
    for user, statements in {"reader": [allow], "lister": [allow, deny_get]}.items():
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": statements}))
        keys[user] = iam.create_access_key(UserName=user)["AccessKey"]

    def enforce(count: str):
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", count.encode(),
                                                      {"Content-Type": "text/plain"})).close()
    enforce("0")
    try:
        yield keys
    finally:
        enforce("inf")


def _use(monkeypatch, key):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])


def test_refused_credentials_name_the_url_and_what_to_set_and_store_nothing(s3_auth, capsys, monkeypatch):
    assert main(["ingest", "s3://traffic/logs/"]) == 2  # keys the server does not know: refused at the listing
    err = " ".join(capsys.readouterr().err.split())
    assert ("error: s3://traffic/logs/: access denied: the server refused HeadObject with the credentials in use "
            "(AWS_ACCESS_KEY_ID); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") in err and "AWS_PROFILE" in err
    assert "Traceback" not in err
    assert rows("SELECT (SELECT count(*) FROM ingests), (SELECT count(*) FROM traces)") == [(0, 0)]

    _use(monkeypatch, s3_auth["lister"])  # may list, may not read: each object fails alone, nothing is stored
    assert main(["ingest", "s3://traffic/logs/"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    for key in ("day=2026-12-01/a.jsonl", "day=2026-12-02/b.parquet"):
        assert f"error: s3://traffic/logs/{key}: access denied: the server refused" in err
    assert rows("SELECT status, count(*) FROM ingests GROUP BY ALL") == [("failed", 2)]
    assert rows("SELECT count(*) FROM traces") == [(0,)]

    _use(monkeypatch, s3_auth["reader"])  # the right keys: the inbox reads both (a failed ingest is not skipped)
    monkeypatch.setenv("MEND_TRACES_INBOX", "s3://traffic/logs")
    assert [(s.status, s.counts.stored) for s in ingest.ingest_inbox()] == [("complete", 3), ("complete", 2)]


def test_an_unreachable_endpoint_names_the_url(monkeypatch, capsys):
    monkeypatch.setenv("MEND_TRACES_S3_ENDPOINT", "http://127.0.0.1:9")  # discard port: nothing listens
    for key, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert main(["ingest", "s3://traffic/logs/"]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "s3://traffic/logs/: cannot list it" in err and "s3_endpoint" in err


def test_a_hive_partitioned_folder_keeps_its_partition_values(tmp_path):
    root = tmp_path / "traffic"
    (root / "day=2026-12-01" / "region=eu%2Fwest").mkdir(parents=True)
    (root / "day=2026-12-02").mkdir()
    write_jsonl(root / "day=2026-12-01" / "region=eu%2Fwest" / "part-0.jsonl",
                [chat(1, "one?"), chat(2, "two?", metadata={"day": "its own"})])
    pq.write_table(pa.table({"messages": [[{"role": "user", "content": "three?"}]], "response": ["3"],
                             "trace_id": ["t3"]}), root / "day=2026-12-02" / "part-0.parquet")
    summaries = ingest.ingest_paths([root], settings.load("traces"))
    assert [s.counts.stored for s in summaries] == [2, 1]
    got = {r[0]: json.loads(r[1]) for r in rows("SELECT trace_id, metadata FROM traces")}
    assert got["chatcmpl-1"] == {"day": "2026-12-01", "region": "eu/west"}
    assert got["chatcmpl-2"] == {"day": "its own", "region": "eu/west"}  # the record's own field wins
    assert got["t3"] == {"day": "2026-12-02"}
