"""Property-based fuzzing of `traces ingest` (issue 25): malformed, truncated, mis-typed and hostile inputs for every
reader (JSONL, JSON documents and arrays, `jq .` output, OTel/OpenInference spans, `llm logs --json`, Langfuse
observations, gzip, Parquet, raw bytes).

What must hold for any input:
- the readers never raise: document_records covers every byte that is not JSON punctuation or whitespace with a
  record (nothing dropped silently), otel.rows turns every span into a row the batch table accepts, or a skip;
- `traces ingest` exits 0, 1 or 3 (a file that stored nothing) and prints no traceback; every file gets an `ingests`
  row with read = stored + duplicate + quarantined + skipped matching the rows it left; a failed file's error names it;
  a good file after any number of bad ones is stored whole; no raw control character reaches the terminal;
- no planted secret is stored in clear: not in any table, not on the terminal, not in the bytes of any file ingest
  wrote under MEND_HOME (the database file, its WAL, data/).

`make test` runs a bounded, derandomized profile (well under a minute); `make fuzz` (MEND_FUZZ_EXAMPLES=N, default
there 200) a longer random one. A failing example is printed by hypothesis as the smallest input it found, with a
`@reproduce_failure` blob, and `make fuzz` keeps it in `.hypothesis/examples` (MEND_FUZZ_DB, git-ignored) as soon as
it is found: the next `make fuzz` replays it first, even if the run that found it was stopped before its report.
Each end-to-end example has its own store (a run before it is part of the example), so a replay is the same input.
"""
import base64
import contextlib
import gzip
import io
import itertools
import json
import os
import re
import string

import pytest
from builders.ingest_files import chat, export, span

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.database import DirectoryBasedExampleDatabase  # noqa: E402

from traces import otel, readers  # noqa: E402

# examples per end-to-end property; the pure reader properties take ten times as many (they cost microseconds)
EXAMPLES = int(os.environ.get("MEND_FUZZ_EXAMPLES") or 0)
# failing examples kept where `make fuzz` says (.hypothesis/examples); `make test` keeps none (derandomized)
DATABASE = DirectoryBasedExampleDatabase(os.environ["MEND_FUZZ_DB"]) if os.environ.get("MEND_FUZZ_DB") else None
E2E = settings(max_examples=EXAMPLES or 12, deadline=None, derandomize=not EXAMPLES, database=DATABASE,
               print_blob=True, suppress_health_check=list(HealthCheck))
FAST = settings(E2E, max_examples=(EXAMPLES or 12) * 10)

# what a terminal must never receive raw: C0 controls but \t and \n, DEL, C1 controls, bidi overrides/isolates
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
HOSTILE = ["\t", "\x00", "\x1b[2J", "\x1b]8;;http://x\x07link\x1b]8;;\x07", "\u202e", "\u2028", "\r", "\x9b",
           "\\", '"', "{", "}", "[", "]", ",", ":", "\n", " ", "\ufeff", "\ufffd", "1e999", "NaN"]

# ---------- strategies ----------
# Mostly the right shape, with one field mis-typed or hostile here and there: an input broken everywhere is
# rejected at its first field and tests nothing behind it.

def mostly(valid, odd):
    """`valid` three times in four, `odd` otherwise."""
    return st.one_of(valid, valid, valid, odd)


texts = st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE + ["LLM", "chat", "execute_tool", "workflow"]),
                  st.lists(st.sampled_from(HOSTILE) | st.text(max_size=4), max_size=4).map("".join))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), texts)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                      max_leaves=8)


def _message(role):
    return st.fixed_dictionaries({"role": mostly(st.just(role), values), "content": mostly(texts, values)})


messages = mostly(st.lists(_message("user") | _message("assistant") | _message("system"), min_size=1, max_size=3),
                  values)
records = mostly(st.one_of(
    st.fixed_dictionaries({"messages": messages}, optional={
        "id": mostly(texts, values), "model": mostly(texts, values), "created": values,
        "choices": mostly(st.lists(st.fixed_dictionaries({"message": _message("assistant")}), min_size=1, max_size=2),
                          values),
        "metadata": mostly(st.dictionaries(texts, texts, max_size=2), values)}),
    st.builds(lambda i, p: chat(i, p), st.integers(0, 10**6), texts)), values)

ATTRIBUTE_KEYS = ["gen_ai.prompt", "gen_ai.completion", "gen_ai.input.messages", "gen_ai.output.messages",
                  "gen_ai.system_instructions", "gen_ai.operation.name", "gen_ai.request.model",
                  "gen_ai.usage.input_tokens", "gen_ai.request.temperature", "gen_ai.prompt.0.content",
                  "gen_ai.prompt.0.role", "gen_ai.completion.0.tool_calls.0.name", "llm.request.functions.0.name",
                  "openinference.span.kind", "llm.input_messages.0.message.content",
                  "llm.output_messages.0.message.content", "llm.invocation_parameters", "llm.tools.0.tool.json_schema",
                  "input.value", "output.value", "traceloop.span.kind", "mend.metadata.base_id", "metadata"]
any_values = st.recursive(
    st.one_of(st.builds(lambda v: {"stringValue": v}, texts | values),
              st.builds(lambda v: {"intValue": v}, st.integers().map(str) | texts | values),
              st.builds(lambda v: {"doubleValue": v}, st.floats() | texts | values),
              st.builds(lambda v: {"boolValue": v}, st.booleans() | values), values),
    lambda inner: st.one_of(st.builds(lambda v: {"arrayValue": {"values": v}}, st.lists(inner, max_size=3)),
                            st.builds(lambda v: {"arrayValue": v}, values),
                            st.builds(lambda kv: {"kvlistValue": {"values": kv}},
                                      st.lists(st.fixed_dictionaries({"key": texts, "value": inner}), max_size=2))),
    max_leaves=4)
key_values = st.fixed_dictionaries({"key": mostly(st.sampled_from(ATTRIBUTE_KEYS), texts | values),
                                    "value": mostly(texts.map(lambda t: {"stringValue": t}), any_values)})
attributes = mostly(st.lists(key_values, max_size=6), values)
spans = mostly(st.fixed_dictionaries({"spanId": mostly(texts, values), "attributes": attributes}, optional={
    "name": texts, "startTimeUnixNano": mostly(st.integers(0, 2**64).map(str), texts | values), "traceId": values,
    "events": mostly(st.lists(st.fixed_dictionaries({"name": st.sampled_from(["gen_ai.user.message", "gen_ai.choice"])
                                                     | texts, "attributes": attributes}), max_size=2), values)}),
    values)

# simonw/llm's `llm logs --json` rows (traces/llm_logs.py) and Langfuse observations (traces/langfuse.py)
llm_logs = mostly(st.fixed_dictionaries(
    {"conversation_id": mostly(st.sampled_from(["c1", "c2"]), texts | values),
     "datetime_utc": mostly(st.sampled_from(["2025-06-04T10:15:02.123456", "2025-06-04T10:16:00"]), texts | values),
     "response": mostly(texts, values)},
    optional={"id": mostly(texts, values), "model": mostly(texts, values), "prompt": mostly(texts, values),
              "system": mostly(texts, values), "prompt_json": mostly(st.fixed_dictionaries({"messages": messages}),
                                                                      values),
              "options_json": values, "input_tokens": values, "tool_calls": values, "attachments": values}), values)
observations = mostly(st.fixed_dictionaries(
    {"traceId": mostly(texts, values), "startTime": mostly(st.just("2025-06-04T10:15:02.120Z"), texts | values),
     "type": mostly(st.sampled_from(["GENERATION", "SPAN", "EVENT", "TOOL"]), texts | values)},
    optional={"id": mostly(texts, values), "model": mostly(texts, values), "input": mostly(messages, texts | values),
              "output": mostly(_message("assistant"), texts | values), "usage": values, "metadata": values,
              "modelParameters": values, "level": texts}), values)


def _nested(key, inner):
    return mostly(st.lists(inner, max_size=3).map(lambda items: {key: items}), values)


exports = mostly(_nested("resourceSpans", _nested("scopeSpans", _nested("spans", spans))), values)

# what a file name may hold (no "/" or NUL), hostile characters included
names = st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)), max_size=6) | \
    st.sampled_from(["\x1b[2J", "\u202e", "\x9b", "[red]x", "\n"])


@st.composite
def mangled(draw, text: str) -> str:
    """The text cut, with a character dropped, or with a hostile one put in, a few times over."""
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["cut", "drop", "insert", "keep"]))
        text = {"cut": text[:i], "drop": text[:i] + text[i + 1:], "keep": text,
                "insert": text[:i] + draw(st.sampled_from(HOSTILE)) + text[i:]}[op]
    return text


def _dumps(value, indent=None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False)


@st.composite
def json_texts(draw) -> tuple[str, str]:
    """(suffix, text) of a JSONL file, a JSON array, `jq .` output or an OTel export, mangled or not."""
    kind = draw(st.sampled_from(["jsonl", "array", "jq", "otel", "otel-lines", "llm", "langfuse", "langfuse-api"]))
    indent = draw(st.sampled_from([None, 2]))
    if kind == "jsonl":
        text = "\n".join(_dumps(r) for r in draw(st.lists(records, max_size=5)))
    elif kind == "array":
        text = _dumps(draw(st.lists(records, max_size=5)), indent)
    elif kind == "jq":
        text = "\n".join(_dumps(r, 2) for r in draw(st.lists(records, min_size=1, max_size=4)))
    elif kind == "otel":
        text = _dumps(draw(exports), indent)
    elif kind == "otel-lines":
        text = "\n".join(_dumps(e) for e in draw(st.lists(exports, min_size=1, max_size=3)))
    elif kind == "llm":  # `llm logs --json` prints an array
        text = _dumps(draw(st.lists(llm_logs, min_size=1, max_size=4)), indent)
    elif kind == "langfuse":  # the UI's JSONL export
        text = "\n".join(_dumps(o) for o in draw(st.lists(observations, min_size=1, max_size=4)))
    else:  # the API's page
        text = _dumps({"data": draw(st.lists(observations, max_size=4)), "meta": {"page": 1}}, indent)
    return (".jsonl" if kind in ("jsonl", "otel-lines", "langfuse") else ".json"), draw(mangled(text))


@st.composite
def gz_bytes(draw) -> tuple[str, bytes]:
    suffix, text = draw(json_texts())
    data = gzip.compress(text.encode())
    cut = draw(st.integers(0, len(data)))
    return suffix + ".gz", draw(st.sampled_from([data, data[:cut], data[:cut] + b"\x00" + data[cut + 1:]]))


@st.composite
def parquet_bytes(draw) -> tuple[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    n = draw(st.integers(1, 3))
    columns = {}
    for name in draw(st.lists(st.sampled_from(["messages", "response", "trace_id", "ts", "metadata", "prompt_id"]),
                              unique=True, max_size=4)):
        shape = draw(st.sampled_from(["text", "json", "int", "structs"]))
        if shape == "text":
            columns[name] = pa.array([draw(texts) for _ in range(n)])
        elif shape == "json":
            columns[name] = pa.array([_dumps(draw(messages)) for _ in range(n)])
        elif shape == "int":
            columns[name] = pa.array([draw(st.integers(-2**63, 2**63 - 1)) for _ in range(n)], pa.int64())
        else:
            columns[name] = pa.array([[{"role": "user", "content": draw(texts)}] for _ in range(n)])
    out = io.BytesIO()
    pq.write_table(pa.table(columns) if columns else pa.table({"x": [1] * n}), out)
    return ".parquet", out.getvalue()


files = st.one_of(json_texts().map(lambda f: (f[0], f[1].encode())), gz_bytes(),
                  parquet_bytes(), st.tuples(st.sampled_from([".jsonl", ".json", ".csv"]), st.binary(max_size=64)))


# ---------- the readers alone ----------

JSON_PUNCTUATION = set(" \t\r\n,[]")


@FAST
@given(json_texts())
def test_document_records_cover_every_byte_that_is_not_punctuation(suffix_text):
    text = suffix_text[1]
    pos = readers._skip_ws(text, 0)
    for line, record in readers.document_records(text):
        if record == "(end of file: the JSON array is not closed)":
            continue
        start = text.find(record, pos)
        while 0 <= start and text.count("\n", 0, start) + 1 != line:  # "[]" may also stand earlier on its line
            start = text.find(record, start + 1)
        assert start >= 0 and set(text[pos:start]) <= JSON_PUNCTUATION, (text[pos:start], record)
        pos = start + len(record)
    assert set(text[pos:]) <= JSON_PUNCTUATION  # nothing after the last record but punctuation


@FAST
@given(st.lists(records, max_size=6), st.sampled_from([None, 2]), st.integers(1, 3))
def test_document_records_of_valid_documents_are_their_items(items, indent, copies):
    text = "\n".join([_dumps(items, indent)] * copies)
    got = [record for _, record in readers.document_records(text)]
    assert [json.loads(r) for r in got] == [json.loads(_dumps(i)) for i in items] * copies


@FAST
@given(st.one_of(exports.map(_dumps), st.lists(exports, max_size=3).map(lambda es: "\n".join(map(_dumps, es)))
                 .flatmap(mangled)))
def test_every_span_becomes_a_row_the_batch_table_takes_or_a_skip(text):
    rows, skipped = otel.rows(text)
    readers.rows_fill(rows)  # builds the Arrow table: a value of the wrong type fails here
    assert all(set(r) == set(readers.OTEL_COLUMNS) for r in rows)
    lines = [r["line"] for r in rows]  # each item read has its own index: a row's, or a skipped span's
    assert lines == sorted(set(lines)) and max(lines, default=0) <= len(rows) + sum(skipped.values())


# ---------- the whole command ----------

_example = itertools.count()


@contextlib.contextmanager
def own_store(tmp_path, kind: str):
    """A folder and a store of its own for one example: hypothesis shares tmp_path among examples, and a store that
    kept every earlier example's rows made a failure depend on them (not reproduced by replaying the example)."""
    folder = tmp_path / f"{kind}{next(_example)}"
    folder.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEND_DB", str(folder / "mend.duckdb"))
        yield folder


def _ingest(args: list[str]) -> int:
    from traces.cli import main
    code = main(["ingest", *args])
    if code == 130:  # Ctrl-C reached the ingest under test: stop the run, do not shrink it as a failure
        raise KeyboardInterrupt
    return code


def _write(folder, inbox_files) -> list[tuple[str, bytes]]:
    folder.mkdir()
    out = []
    for i, (name, (suffix, data)) in enumerate(inbox_files):
        (folder / f"f{i}{name}{suffix}").write_bytes(data)
        out.append((f"f{i}{name}{suffix}", data))
    return out  # in the order ingest reads them (expand sorts by path; f0 < f1 < f2)


@E2E
@given(st.lists(st.tuples(names, files), max_size=2), st.lists(st.tuples(names, files), min_size=1, max_size=3),
       st.sampled_from(["1", "2", "200000"]))
def test_no_file_stops_the_next_and_every_count_matches_what_is_stored(tmp_path, capsys, before, inbox_files, batch):
    """`before`: files an earlier run ingested into the same store (ids and records the checked run meets again)."""
    from builders.ingest_files import rows
    with own_store(tmp_path, "ex") as root:
        if before:
            _write(root / "before", before)
            _ingest([str(root / "before"), "--batch-lines", batch])
        folder = root / "run"
        written = _write(folder, inbox_files)
        good = [chat(f"{root.name}-{i}", f"good question {i}") for i in range(2)]
        (folder / "zz-good.jsonl").write_text("".join(json.dumps(r) + "\n" for r in good))
        capsys.readouterr()
        code = _ingest([str(folder), "--batch-lines", batch])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err and not RAW_CONTROL.search(out + err), out + err
        got = rows("""SELECT source_file, status, error, n_read, n_stored, n_duplicate, n_quarantined, n_skipped,
                             (SELECT count(*) FROM traces t WHERE t.ingest_id = i.ingest_id),
                             (SELECT count(*) FROM quarantine q WHERE q.ingest_id = i.ingest_id)
                      FROM ingests i WHERE starts_with(source_file, ?) ORDER BY source_file""", [str(folder) + "/"])
    _check_rows(got, written, code)


def _check_rows(got: list[tuple], written: list[tuple[str, bytes]], code: int) -> None:
    by_name = {r[0].rsplit("/", 1)[-1]: r for r in got}
    completed = set()
    for name, data in written:  # a copy of a file read whole in the same run is skipped (no row); any other is read
        assert (name in by_name) == (data not in completed), (name, sorted(by_name))
        if data not in completed and by_name[name][1] == "complete":
            completed.add(data)
    assert len(got) == len(by_name) == len([n for n, _ in written if n in by_name]) + 1
    for file, status, error, read, stored, dup, quar, skip, n_traces, n_quarantine in got:
        assert status in ("complete", "failed") and read == stored + dup + quar + skip, file
        assert (n_traces, n_quarantine) == (stored, quar), file
        assert status == "complete" or file in (error or ""), (file, error)
    assert got[-1][1:5] == ("complete", None, 2, 2)  # the good file after the bad ones is stored whole
    stored_nothing = any(r[1] == "complete" and r[6] and not r[4] + r[5] for r in got)  # every item quarantined
    assert code == (1 if any(r[1] == "failed" for r in got) else 3 if stored_nothing else 0)


# ---------- secrets: none is stored in clear (scrubbing on, the default) ----------

def _chars(alphabet: str, n: int, most: int | None = None):
    return st.text(alphabet=alphabet, min_size=n, max_size=most or n)


ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "_-"


@st.composite
def _aws_secret(draw) -> str:
    """40 base64 characters with an upper- and a lower-case letter and a digit (what traces.scrub checks for)."""
    body = draw(_chars(ALNUM + "/+", 37))
    return "".join(draw(st.permutations([*body, draw(_chars(string.ascii_uppercase, 1)),
                                         draw(_chars(string.ascii_lowercase, 1)), draw(_chars(string.digits, 1))])))


# (what is written, what must not be stored): each class traces.scrub redacts
SECRETS = st.one_of(
    _chars(ALNUM + "_-", 20, 40).map(lambda s: ("sk-proj-" + s,) * 2),
    _chars(ALNUM, 20, 48).map(lambda s: ("sk-" + s,) * 2),
    _chars(ALNUM, 30, 40).map(lambda s: ("ghp_" + s,) * 2),
    _chars(ALNUM + "_", 22, 40).map(lambda s: ("github_pat_" + s,) * 2),
    _chars(string.ascii_uppercase + string.digits, 16).map(lambda s: ("AKIA" + s,) * 2),
    _chars(ALNUM + "-", 10, 30).map(lambda s: ("xoxb-" + s,) * 2),
    _chars(B64URL, 35).map(lambda s: ("AIza" + s,) * 2),
    _chars(ALNUM, 30, 40).map(lambda s: ("hf_" + s,) * 2),
    st.tuples(_chars(B64URL, 5, 20), _chars(B64URL, 5, 30), _chars(B64URL, 0, 40)).map(
        lambda p: (f"eyJ{p[0]}.eyJ{p[1]}.{p[2]}",) * 2),
    # a needle found anywhere fails the test: "Tk"/"Pw" keep a token of digits from matching a stored timestamp
    _chars(ALNUM + "._~+/-", 16, 40).map(lambda s: (f"Bearer Tk{s}", f"Tk{s}")),
    st.tuples(_chars(ALNUM, 3, 8), _chars(ALNUM + "!$%", 6, 16)).map(
        lambda p: (f"Basic {base64.b64encode(f'{p[0]}:{p[1]}'.encode()).decode()}",
                   base64.b64encode(f"{p[0]}:{p[1]}".encode()).decode())),
    st.tuples(_chars(string.ascii_lowercase, 0, 6), _chars(ALNUM + "!$%^*-_", 6, 16)).map(
        lambda p: (f"postgres://{p[0]}:Pw{p[1]}@db.internal:5432/app", f"Pw{p[1]}")),
    _aws_secret().map(lambda s: (s, s)),
)
# where a secret is logged: each field a reader stores, and lines that are quarantined with their raw text
PLACES = ["prompt", "answer", "metadata", "id", "model", "tool_args", "bad_record", "cut_line", "otel_prompt",
          "otel_int", "phoenix_prompt", "phoenix_span_id", "parquet"]


def _planted(planted) -> dict[str, list]:
    """{file kind: its records} with each (secret, place) written where the place says, between spaces."""
    files: dict[str, list] = {"jsonl": [], "otel": [], "phoenix": [], "parquet": []}
    for i, ((text, _), place) in enumerate(planted):
        s = f" {text} "
        if place in ("prompt", "answer", "metadata", "id", "model", "tool_args"):
            calls = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": json.dumps({"k": s})}}]
            record = chat(f"s{i}", s if place == "prompt" else "q", s if place == "answer" else None,
                          **({"metadata": {"note": s}} if place == "metadata" else {}))
            record.update({"id": s} if place == "id" else {"model": s} if place == "model" else {})
            if place == "tool_args":
                record["choices"][0]["message"].update(content=None, tool_calls=calls)
            files["jsonl"].append(json.dumps(record))
        elif place in ("bad_record", "cut_line"):
            files["jsonl"].append(json.dumps({"messages": s}) if place == "bad_record"
                                  else '{"messages": [{"role": "user", "content": "' + s)
        elif place.startswith("otel"):
            sp = span(f"o{i}", "chat", {"gen_ai.prompt": s if place == "otel_prompt" else "q", "gen_ai.completion": "a"})
            if place == "otel_int":  # a key logged in an integer field: the span is quarantined with a reason
                sp["attributes"].append({"key": "gen_ai.usage.input_tokens", "value": {"intValue": text}})
            files["otel"].append(json.dumps(export(sp)))
        elif place.startswith("phoenix"):
            files["phoenix"].append(json.dumps({
                "name": "ChatCompletion", "span_kind": "LLM", "start_time": "2025-06-04T10:15:02+00:00",
                "context": {"trace_id": "t", "span_id": text if place == "phoenix_span_id" else f"p{i}"},
                "attributes": {"llm.input_messages.0.message.role": "user",
                               "llm.input_messages.0.message.content": s if place == "phoenix_prompt" else "q"}}))
        else:
            files["parquet"].append({"trace_id": f"pq{i}", "response": "a",
                                     "messages": json.dumps([{"role": "user", "content": s}])})
    return files


@E2E
@given(st.lists(st.tuples(SECRETS, st.sampled_from(PLACES)), min_size=1, max_size=6))
def test_no_generated_secret_is_stored_in_clear_anywhere(tmp_path, capsys, planted):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from builders.ingest_files import rows

    with own_store(tmp_path, "secrets") as home, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEND_HOME", str(home))  # what ingest writes besides the store (data/, caches) lands here too
        folder = home / "logs"
        folder.mkdir()
        for kind, records in _planted(planted).items():
            if kind == "parquet" and records:
                pq.write_table(pa.Table.from_pylist(records), folder / "store.parquet")
            elif records:
                (folder / f"{kind}.jsonl").write_text("\n".join(records) + "\n")
        capsys.readouterr()
        _ingest([str(folder)])
        out, err = capsys.readouterr()
        stored = [str(v) for table in ("traces", "trace_hashes", "quarantine", "ingests")
                  for r in rows(f"SELECT * FROM {table}") for v in r if v is not None]
        written = {p: p.read_bytes() for p in home.rglob("*") if p.is_file() and folder not in p.parents}
    assert any(p.suffix == ".duckdb" for p in written)  # the scan below saw the store's own bytes
    for _, needle in (p[0] for p in planted):
        leaks = [v for v in stored + [out, err] if needle in v]
        assert not leaks, (needle, leaks[:2])
        # any file ingest wrote (the database's pages, its WAL, data/): raw bytes, so a compressed column can hide a
        # secret from this scan, but one found here was written in clear
        files = [str(p) for p, data in written.items() if needle.encode() in data]
        assert not files, (needle, files)
