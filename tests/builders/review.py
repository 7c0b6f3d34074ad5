"""Clusters, examples and reviews for the review tests, inserted with plain SQL (no other stage needed)."""
import json

from builders.trace_rows import insert_traces, trace_row
from traces.store import connect

NO_COMMA = {"instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
LOWER = {"instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}


def add_trace(con, trace_id, prompt, response):
    insert_traces([trace_row(0, prompt, response, trace_id=trace_id, group_key=trace_id, source_format="openai_chat")],
                  con)


def add_cluster(con, cluster_id, check_id, label, trace_id, prompt, bad_response):
    add_trace(con, trace_id, prompt, bad_response)
    con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES (?, 'run1', ?, ?, 3)",
                [cluster_id, check_id, label])
    con.execute("INSERT INTO cluster_members VALUES (?, ?, 'run1', 'seed', 0.9)", [cluster_id, trace_id])
    con.execute("""INSERT INTO results (run_id, trace_id, check_idx, check_id, passed, reason, output)
                   VALUES ('run1', ?, 0, ?, false, 'failed: found 2 commas', ?)""", [trace_id, check_id, bad_response])


def add_example(con, example_id, cluster_id, prompt, response, metadata=None, status="pending_review",
                embedding=None, created_at="2026-01-01 00:00:00", checks=None):
    con.execute("""INSERT INTO examples (example_id, cluster_id, seed_trace_id, mode, messages, prompt, response,
                                         metadata, status, embedding, created_at)
                   VALUES (?, ?, NULL, 'compose', ?, ?, ?, ?, ?, ?, ?)""",
                [example_id, cluster_id, json.dumps([{"role": "user", "content": prompt}]), prompt, response,
                 json.dumps(metadata) if metadata else None, status, embedding, created_at])
    for idx, (check_id, passed, reason) in enumerate(checks or []):
        con.execute("INSERT INTO example_checks VALUES (?, ?, ?, ?, ?)", [example_id, idx, check_id, passed, reason])


def add_review(con, example_id, decision, reviewer="alice", prev="pending_review", ts="2026-01-02 00:00:00"):
    con.execute("INSERT INTO reviews VALUES (uuid()::VARCHAR, ?, ?, NULL, ?, ?, ?)",
                [example_id, decision, prev, reviewer, ts])
    if decision in ("accepted", "rejected", "edited"):
        con.execute("UPDATE examples SET status = ? WHERE example_id = ?", [decision, example_id])


def seed_default():
    """Cluster c1 (no_comma): pending e1, e2, e3 and an accepted acc1; cluster c2 (lowercase): f1, f2."""
    with connect() as con:
        add_cluster(con, "c1", "punctuation:no_comma", "comma habit", "t1",
                    "Describe a cat without commas.", "Well, cats are soft, warm, and sleepy.")
        add_cluster(con, "c2", "change_case:english_lowercase", "capitals", "t2",
                    "Answer in lowercase only.", "Sure Thing")
        ok = [("punctuation:no_comma", True, "punctuation:no_comma: passed")]
        add_example(con, "acc1", "c1", "Describe a dog without commas.", "Dogs are loyal friends.", NO_COMMA,
                    status="accepted", embedding=[1.0, 0.0, 0.0, 0.0])
        add_example(con, "e1", "c1", "Describe a bird without commas.", "Birds sing in the morning.", NO_COMMA,
                    embedding=[0.9, 0.1, 0.0, 0.0], created_at="2026-01-01 00:00:01", checks=ok)
        add_example(con, "e2", "c1", "Describe a fish without commas.", "Fish swim in the sea.", NO_COMMA,
                    created_at="2026-01-01 00:00:02", checks=ok)
        add_example(con, "e3", "c1", "Describe a frog without commas.", "Frogs jump far.", NO_COMMA,
                    created_at="2026-01-01 00:00:03", checks=ok)
        add_example(con, "f1", "c2", "Say hi in lowercase.", "hi there", LOWER, created_at="2026-01-01 00:00:04")
        add_example(con, "f2", "c2", "Say bye in lowercase.", "bye now", LOWER, created_at="2026-01-01 00:00:05")


def status_of(example_id):
    with connect(read_only=True) as con:
        return con.execute("SELECT status, reason, reviewer, reviewed_at FROM examples WHERE example_id = ?",
                           [example_id]).fetchone()


def reviews_of(example_id):
    with connect(read_only=True) as con:
        return con.execute("""SELECT decision, reason, prev_status, reviewer FROM reviews WHERE example_id = ?
                              ORDER BY created_at""", [example_id]).fetchall()
