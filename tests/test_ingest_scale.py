"""Ingest at scale (issue 24 item 6, issue 25 finding 10): a nightly's inbox pass skips the files it ingested without
reading them (same path, size and mtime_ns as their `complete` ingest), reads a file again once its size or mtime
changed (the content hash stays its identity), and a one-batch file costs one store open."""
import json
import os
from pathlib import Path

from builders.ingest_files import chat, check_invariant, rows, write_jsonl

from traces import ingest, store


def inbox_with(tmp_path, monkeypatch, n: int) -> list[Path]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("MEND_TRACES_INBOX", str(inbox))
    return [write_jsonl(inbox / f"day{i}.jsonl", [chat(f"{i}-{k}", f"prompt {i} {k}") for k in range(3)])
            for i in range(n)]


def count_hashing(monkeypatch) -> list[str]:
    """The names of the files ingest reads to hash them, from now on."""
    seen, real = [], ingest.sha256_file
    monkeypatch.setattr(ingest, "sha256_file", lambda p: seen.append(Path(p).name) or real(p))
    return seen


def by_name(summaries) -> dict:
    return {Path(s.path).name: s for s in summaries}


def test_unchanged_inbox_files_are_skipped_unread(tmp_path, monkeypatch):
    inbox_with(tmp_path, monkeypatch, 2)
    assert [s.status for s in ingest.ingest_inbox()] == ["complete", "complete"]
    hashed = count_hashing(monkeypatch)
    assert [s.status for s in ingest.ingest_inbox()] == ["skipped", "skipped"]
    assert hashed == []


def test_a_changed_mtime_or_size_is_hashed_again(tmp_path, monkeypatch):
    touched, grown = inbox_with(tmp_path, monkeypatch, 2)
    ingest.ingest_inbox()
    hashed = count_hashing(monkeypatch)
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # same bytes, a new mtime
    with open(grown, "a") as f:
        f.write(json.dumps(chat("new", "one more prompt")) + "\n")
    out = by_name(ingest.ingest_inbox())
    assert sorted(hashed) == ["day0.jsonl", "day1.jsonl"]
    assert out["day0.jsonl"].status == "skipped"  # hashed: its bytes were ingested already
    check_invariant(out["day1.jsonl"])
    assert (out["day1.jsonl"].status, out["day1.jsonl"].counts.stored, out["day1.jsonl"].counts.duplicate) \
        == ("complete", 1, 3)
    hashed.clear()
    assert [s.status for s in ingest.ingest_inbox()] == ["skipped", "skipped"]
    assert hashed == []  # the touched file's new stat was noted: hashed once, not every night


def test_a_file_ingested_before_its_stat_was_recorded_is_hashed_once(tmp_path, monkeypatch):
    inbox_with(tmp_path, monkeypatch, 1)
    ingest.ingest_inbox()
    with store.connect() as con:  # as a store written before m013 holds it
        con.execute("UPDATE ingests SET file_size = NULL, file_mtime_ns = NULL")
    hashed = count_hashing(monkeypatch)
    assert [s.status for s in ingest.ingest_inbox()] == ["skipped"] and hashed == ["day0.jsonl"]
    assert [s.status for s in ingest.ingest_inbox()] == ["skipped"] and hashed == ["day0.jsonl"]
    assert rows("SELECT count(*) FROM ingests")[0][0] == 1


def test_a_one_batch_file_costs_one_store_open(tmp_path, monkeypatch):
    inbox_with(tmp_path, monkeypatch, 3)
    opens, real = [], store._open
    monkeypatch.setattr(store, "_open", lambda *a, **k: opens.append(1) or real(*a, **k))
    summaries = ingest.ingest_inbox()
    assert len(opens) == 1 + 3  # the completed files, then each file's batch with its `ingests` row and status
    for s in summaries:
        check_invariant(s)
        assert s.status == "complete"
    assert rows("SELECT count(*) FROM ingests WHERE status = 'complete' AND finished_at >= started_at")[0][0] == 3
