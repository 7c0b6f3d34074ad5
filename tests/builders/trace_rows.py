"""The one way tests insert traces: `trace_row(...)` dicts, bulk-inserted by name through Arrow."""
import json

from traces import store

NO_COMMA = ("punctuation:no_comma", {})
LOWER = ("change_case:english_lowercase", {})


def trace_row(i, prompt, response, metadata=None, split="seed", tools=None, tool_calls=None, params=None,
              trace_id=None, group_key=None, messages=None, source_format="openai_chat"):
    return {"trace_id": trace_id or f"t{i:04d}", "source_format": source_format, "source_file": "test.jsonl",
            "source_line": i, "ingest_id": "ing-test", "model": "student",
            "messages": json.dumps(messages if messages is not None else [{"role": "user", "content": prompt}]),
            "prompt": prompt, "response": response,
            "tool_calls": json.dumps(tool_calls) if tool_calls is not None else None,
            "tools": json.dumps(tools) if tools is not None else None,
            "params": json.dumps(params) if params is not None else None, "usage": None,
            "metadata": json.dumps(metadata) if metadata is not None else None, "feedback": None,
            "group_key": group_key or f"g{i}", "split": split}


def insert_traces(rows, con=None):
    """Bulk-insert trace dicts (see trace_row) into the test store (or through `con`, already open)."""
    import pyarrow as pa
    if con is None:
        with store.connect() as own:
            return insert_traces(rows, own)
    con.register("rows", pa.Table.from_pylist(rows))
    con.execute("""INSERT INTO traces (trace_id, source_format, source_file, source_line, ingest_id, model, messages,
                   prompt, response, tool_calls, tools, params, usage, metadata, feedback, group_key, split)
                   SELECT trace_id, source_format, source_file, source_line, ingest_id, model, messages::JSON,
                   prompt, response, tool_calls::JSON, tools::JSON, params::JSON, usage::JSON, metadata::JSON,
                   feedback::JSON, group_key, split FROM rows""")
    con.unregister("rows")


def ifeval_meta(*pairs):
    return {"instruction_id_list": [p[0] for p in pairs], "kwargs": [p[1] for p in pairs]}


def ifeval_traffic(n=30):
    """n IFEval traces, four answers over three instruction sets: some pass and some fail each check (the Ray tests
    score them on each engine and compare the rows, RUN_RESULTS)."""
    answers = ["cats are nice and soft", "dogs, they bark", "Birds Fly High over the hills today", "ok"]
    checks = [ifeval_meta(NO_COMMA), ifeval_meta(LOWER, NO_COMMA),
              ifeval_meta(("length_constraints:number_words", {"relation": "at least", "num_words": 5})),
              ifeval_meta(LOWER)]
    return [trace_row(i, f"Write about topic {i}.", answers[i % 4], checks[i % 3]) for i in range(n)]


RUN_RESULTS = ("SELECT trace_id, check_idx, check_id, check_args, passed, passed_loose, score, reason, output, "
               "details FROM results WHERE run_id = ? ORDER BY trace_id, check_idx")


def fetch(sql, params=()):
    with store.connect() as con:
        return con.execute(sql, list(params)).fetchall()
