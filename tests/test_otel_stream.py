"""OTel files are streamed (issue 24 item 6): a pretty-printed export is walked one span at a time (ijson), an
export-per-line file one line at a time, with the same rows as the whole-file reader (otel.rows) gave."""
import gzip
import json
from collections import Counter
from pathlib import Path

import pytest
from builders.ingest_files import export, rows, run, span

from traces import ingest, otel, otel_stream, readers

FIX = Path(__file__).parent / "fixtures" / "traces"


def streamed(path):
    skipped = Counter()
    return list(otel_stream.rows(path, skipped)), skipped


def llm(i):
    return span(f"s{i}", "chat", {"gen_ai.prompt": f"question {i}?", "gen_ai.completion": f"answer {i}."})


def odd_export():
    """Every nesting the reader walks: two resources, the pre-1.0 key, a broken scope, null spans, a non-span."""
    doc = export(llm(1), span("h1", "GET /", {"http.method": "GET"}), "not a span")
    doc["extra"] = {"resourceSpans": "ignored: not at the top"}
    doc["resourceSpans"] += [{"instrumentationLibrarySpans": [{"spans": [llm(2)]}, {"spans": None}, 7]},
                             {"scopeSpans": {"spans": []}}, "x"]
    return doc


@pytest.mark.parametrize("doc", [json.loads((FIX / "otel_genai.json").read_text()), odd_export()],
                         ids=["fixture", "every-nesting"])
def test_a_pretty_printed_export_streams_the_same_rows_as_the_whole_file_reader(tmp_path, doc):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(doc, indent=2))
    assert streamed(path) == otel.rows(path.read_text())
    lines = tmp_path / "export.jsonl"  # one export per line (and a bad line), gzipped
    lines_text = json.dumps(doc) + "\n{not json\n" + json.dumps(doc) + "\n"
    (tmp_path / "export.jsonl.gz").write_bytes(gzip.compress(lines_text.encode()))
    lines.write_text(lines_text)
    assert streamed(tmp_path / "export.jsonl.gz") == streamed(lines) == otel.rows(lines_text)


def test_a_pretty_printed_export_is_never_read_whole(tmp_path, monkeypatch):
    path = tmp_path / "big.json"
    path.write_text(json.dumps(export(*[llm(i) for i in range(50)]), indent=1))

    def whole(p):
        raise AssertionError(f"{p} was read whole")
    monkeypatch.setattr(readers, "read_text", whole)
    s = run(path, batch_lines=7)
    assert s.format == "otel" and s.status == "complete" and s.counts.stored == 50


def test_exports_one_after_another_are_all_read(tmp_path):
    path = tmp_path / "jq.json"  # `jq .` over an export-per-line file
    path.write_text(json.dumps(export(llm(1)), indent=2) + "\n" + json.dumps(export(llm(2)), indent=2) + "\n")
    assert run(path).counts.stored == 2


def test_an_export_cut_midway_fails_the_file_naming_it_and_where_keeping_the_spans_before(tmp_path):
    text = json.dumps(export(*[llm(i) for i in range(30)]), indent=2)
    path = tmp_path / "cut.json"
    path.write_text(text[:len(text) * 2 // 3] + "\n  ]]]\n")
    s = run(path, batch_lines=5)
    assert s.status == "failed" and str(path) in s.error
    assert "cannot read the OTLP export after its" in s.error and "in bytes 0-" in s.error
    assert "invalid JSON" in s.error and 0 < s.counts.stored < 30
    assert rows("SELECT status, n_stored FROM ingests") == [("failed", s.counts.stored)]


def test_skipped_spans_are_counted_when_every_span_is_skipped(tmp_path):
    path = tmp_path / "http.json"
    path.write_text(json.dumps(export(*[span(f"h{i}", "GET /", {"http.method": "GET"}) for i in range(3)]), indent=2))
    s = ingest.ingest_file(path)
    assert s.status == "complete" and (s.counts.read, s.counts.skipped) == (3, 3)
