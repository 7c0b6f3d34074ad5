"""Issue 25, the fuzzer's multi-file property in deterministic cases: several files in one `traces ingest` run (and
runs before it into the same store) that share content, records or ids. After each run every file has one `ingests`
row whose counts are the rows it left (builders.ingest_files.check_invariant), and nothing is lost: a file whose
content was not ingested is never skipped as "already ingested"."""
import gzip
import json

import pytest
from builders.ingest_files import chat, check_invariant, export, rows, span, write_jsonl

from traces import ingest, settings


def ingest_folder(folder, **flags):
    summaries = ingest.ingest_paths([folder], settings.load("traces", flags or None))
    for s in summaries:
        if s.status != "skipped":
            check_invariant(s)
    return {s.path.rsplit("/", 1)[-1]: s for s in summaries}


def lines(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def n_traces() -> int:
    return rows("SELECT count(*) FROM traces")[0][0]


@pytest.mark.parametrize("batch", [1, 2, 200000])
def test_identical_files_are_read_once_and_every_count_matches(tmp_path, batch):
    text = lines([chat(i, f"q {i}") for i in range(3)] + [{"messages": "bad"}])
    for name in ("a.jsonl", "b.jsonl", "c.json"):
        (tmp_path / name).write_text(text)
    got = ingest_folder(tmp_path, batch_lines=batch)
    assert [s.status for s in got.values()] == ["complete", "skipped", "skipped"]
    assert (got["a.jsonl"].counts.stored, got["a.jsonl"].counts.quarantined) == (3, 1) and n_traces() == 3


def test_a_copy_of_a_refused_file_is_still_ingested(tmp_path):
    """The same bytes as a .csv (refused by its name) and as a .jsonl: the .jsonl was skipped as a copy of a file
    "already read", though nothing of it was stored."""
    text = lines([chat(1, "kept")])
    (tmp_path / "a.csv").write_text(text)
    (tmp_path / "b.jsonl").write_text(text)
    got = ingest_folder(tmp_path)
    assert (got["a.csv"].status, got["b.jsonl"].status) == ("failed", "complete")
    assert got["b.jsonl"].counts.stored == 1 and n_traces() == 1


def test_a_copy_of_a_file_that_failed_is_read_again(tmp_path, monkeypatch):
    data = gzip.compress(lines([chat(i, f"q {i}") for i in range(50)]).encode())
    (tmp_path / "a.jsonl.gz").write_bytes(data)
    (tmp_path / "b.jsonl.gz").write_bytes(data)
    real = ingest._ingest_jsonl

    def fails_once(cfg, path, summary, progress):
        if path.name == "a.jsonl.gz":
            raise OSError("No space left on device")
        return real(cfg, path, summary, progress)
    monkeypatch.setitem(ingest.INGESTERS, "jsonl", fails_once)
    got = ingest_folder(tmp_path)
    assert (got["a.jsonl.gz"].status, got["b.jsonl.gz"].status) == ("failed", "complete")
    assert got["b.jsonl.gz"].counts.stored == 50 == n_traces()


@pytest.mark.parametrize("batch", [1, 2, 200000])
def test_records_shared_across_files_prefixes_and_gz_copies(tmp_path, batch):
    records = [chat(i, f"q {i}") for i in range(4)]
    (tmp_path / "a.jsonl").write_text(lines(records[:2]))  # a prefix of b
    (tmp_path / "b.jsonl").write_text(lines(records))
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(lines(records).encode()))  # b, compressed
    (tmp_path / "d.json").write_text(json.dumps(records[::-1], indent=2))  # b as a pretty array, reversed
    got = ingest_folder(tmp_path, batch_lines=batch)
    assert [(s.counts.stored, s.counts.duplicate) for s in got.values()] == [(2, 0), (2, 2), (0, 4), (0, 4)]
    assert n_traces() == 4


@pytest.mark.parametrize("batch", [1, 2, 200000])
def test_one_id_with_other_content_in_several_files_and_batches(tmp_path, batch):
    one = {**chat(0, "first"), "id": "x"}
    two = {**chat(0, "second"), "id": "x"}
    three = {**chat(0, "third"), "id": "x"}
    (tmp_path / "a.jsonl").write_text(lines([one, two, two, three, one]))
    (tmp_path / "b.jsonl").write_text(lines([three, two, one, {**chat(0, "fourth"), "id": "x"}]))
    got = ingest_folder(tmp_path, batch_lines=batch)
    assert [(s.counts.stored, s.counts.duplicate) for s in got.values()] == [(3, 2), (1, 3)]
    assert n_traces() == 4 and rows("SELECT count(*) FROM trace_hashes")[0][0] == 4


def test_a_second_run_of_other_files_into_the_same_store(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "a.jsonl").write_text(lines([chat(0, "zero"), {**chat(1, "one"), "id": None}, {"messages": []}]))
    ingest_folder(first, batch_lines=1)
    # the same ids and content, the same id with other content, the no-id record again, the same bad line
    (second / "a.jsonl").write_text(lines([{**chat(1, "one"), "id": None}, chat(0, "other"), chat(0, "zero"),
                                           {"messages": []}]))
    (second / "b.json").write_text(json.dumps(export(span("s1", "chat", {"gen_ai.prompt": "q",
                                                                         "gen_ai.completion": "a"}))))
    got = ingest_folder(second, batch_lines=2)
    c = got["a.jsonl"].counts
    assert (c.stored, c.duplicate, c.quarantined) == (1, 2, 1)
    assert got["b.json"].counts.stored == 1


@pytest.mark.parametrize("data", [b"", b"\n", b"\xef\xbb\xbf", b"[]", b"{}"], ids=repr)
def test_empty_files_of_every_suffix(tmp_path, data):
    for name in ("a.jsonl", "b.json", "c.ndjson", "d.jsonl.gz"):
        (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    write_jsonl(tmp_path / "z.jsonl", [chat(1, "after them")])
    got = ingest_folder(tmp_path)
    assert got["z.jsonl"].status == "complete" and got["z.jsonl"].counts.stored == 1
    assert all(s.status in ("complete", "skipped") for s in got.values()), {k: s.error for k, s in got.items()}
