"""Log files in the shapes real tools write (OpenAI chat lines, OTLP JSON spans), and the ingest invariant checked
against the summary, its `ingests` row and the rows it left in `traces` and `quarantine`."""
import json

from traces import ingest, settings, store


def rows(sql, params=()):
    with store.connect(read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def run(path, **flags):
    s = ingest.ingest_paths([path], settings.load("traces", flags or None))[0]
    check_invariant(s)
    return s


def run_as(path, text, fmt, **flags):
    """Write `text` to `path`, check that it is read as `fmt`, ingest it (run)."""
    from traces import readers
    path.write_text(text)
    assert readers.detect_format(path) == fmt
    return run(path, **flags)


def check_invariant(s):
    c = s.counts
    assert c.read == c.stored + c.duplicate + c.quarantined + c.skipped, c
    row = rows("SELECT n_read, n_stored, n_duplicate, n_quarantined, n_skipped FROM ingests WHERE ingest_id = ?",
               [s.ingest_id])[0]
    assert row == (c.read, c.stored, c.duplicate, c.quarantined, c.skipped)
    assert rows("SELECT count(*) FROM traces WHERE ingest_id = ?", [s.ingest_id])[0][0] == c.stored
    assert rows("SELECT count(*) FROM quarantine WHERE ingest_id = ?", [s.ingest_id])[0][0] == c.quarantined


def chat(i, prompt, answer=None, **extra):
    """An OpenAI Chat Completions log line (request + response, flat)."""
    return {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": 1731052800, "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": prompt}],
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": answer or f"answer {i}"}}], **extra}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def kv(key, value):
    """An OTLP JSON KeyValue."""
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": value}
    return {"key": key, "value": v}


def span(span_id, name, attributes, events=(), start="1731052800000000000"):
    return {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": span_id, "name": name, "kind": 3,
            "startTimeUnixNano": start, "endTimeUnixNano": start,
            "attributes": [kv(k, v) for k, v in attributes.items()], "events": list(events)}


def export(*spans):
    return {"resourceSpans": [{"resource": {"attributes": [kv("service.name", "bot")]},
                               "scopeSpans": [{"scope": {"name": "test"}, "spans": list(spans)}]}]}
