"""A tiny store for curate's tests: seed/holdout traces, one failing-check cluster, the teacher stub's settings."""
from types import SimpleNamespace

from builders.trace_rows import insert_traces, trace_row
from traces import store

BASES = [
    ("b001", "Write an email to my landlord asking when the broken dishwasher in my flat will be repaired."),
    ("b002", "Tell a bedtime story about a small fox who is afraid of the dark."),
    ("b003", "Explain how a heat pump warms a house in winter for a curious teenager."),
    ("b004", "Draft a short email to a colleague thanking her for covering my shift last Friday."),
    ("b005", "Write a product description for a bamboo cutting board sold in a kitchen shop."),
    ("b006", "Give me advice on preparing for my first half marathon in three months."),
]
NO_COMMA = "In your entire response, refrain from the use of any commas."
LOWER = ("Your entire response should be in English, and in all lowercase letters. "
         "No capital letters are allowed.")


def trace(tid, base_id, text, split, iid="punctuation:no_comma", desc=NO_COMMA, response="Sure, here it is."):
    prompt = f"{text} {desc}"
    md = {"base_id": base_id, "instruction_id_list": [iid], "kwargs": [{}], "generation": {"temperature": 0}}
    return trace_row(1, prompt, response, md, split, trace_id=tid, group_key=base_id, source_format="test")


def seed_store(check_id="punctuation:no_comma", desc=NO_COMMA, holdout_in_cluster=True):
    """4 seed traces (2 failing, in the cluster), 2 holdout traces (one also a cluster member)."""
    rows = [trace(f"t{i}", b, text, "seed" if i <= 4 else "holdout", check_id, desc)
            for i, (b, text) in enumerate(BASES, 1)]
    with store.connect() as con:
        insert_traces(rows, con)
        con.execute("INSERT INTO clusters (cluster_id, run_id, check_id, label, size) VALUES "
                    "('c1', 'run1', ?, 'no commas: email story', 2)", [check_id])
        members = [("c1", "t1", "run1", "seed"), ("c1", "t2", "run1", "seed")]
        if holdout_in_cluster:
            members.append(("c1", "t5", "run1", "holdout"))
        con.executemany("INSERT INTO cluster_members (cluster_id, trace_id, run_id, split) VALUES (?,?,?,?)", members)
    return rows


def use_stub(monkeypatch, stub, **extra):
    """The teacher is the stub. The student's own samples (the self strategy) are left out unless a test names
    them: they would load a real model (tests/test_student.py covers them on the tiny one)."""
    extra.setdefault("strategies", '["repair", "constrained", "sample"]')
    monkeypatch.setenv("MEND_CURATE_TEACHER_URL", stub.base_url)
    monkeypatch.setenv("MEND_CURATE_TEACHER_MODEL", "stub-model")
    monkeypatch.setenv("MEND_EVALS_CLIENT_MAX_RETRIES", "2")
    for k, v in extra.items():
        monkeypatch.setenv(f"MEND_CURATE_{k.upper()}", str(v))


def examples(con=None):
    with store.connect(read_only=True) as c:
        cols = ["example_id", "cluster_id", "seed_trace_id", "mode", "prompt", "response", "metadata", "guidance",
                "status", "reason", "duplicate_of", "request_hash"]
        rows = c.execute(f"SELECT {', '.join(cols)} FROM examples ORDER BY created_at, example_id").fetchall()
    return [dict(zip(cols, r)) for r in rows]


# ---------------------------------------------------------------- candidates for the pairs tests (test_pairs, formats)

PAIR_CLUSTER = {"cluster_id": "c1", "check_id": "punctuation:no_comma", "label": "no commas"}


def candidate(prompt, text: str, request_hash: str, status: str | None = None):
    """A candidate written the way synthesis writes it (verified by the real no-comma check)."""
    from curate.synth import driver as synth
    call = SimpleNamespace(text=text, request_hash=request_hash)
    row, checks = synth.candidate_row(PAIR_CLUSTER, prompt, call, "compose", "teacher-x", None)
    synth.write_rows([row], checks)
    if status:
        with store.connect() as con:
            con.execute("UPDATE examples SET status = ? WHERE example_id = ?", [status, row["example_id"]])
    return row


def prompts():
    """t1's own failing prompt (production answered it with commas) and a prompt composed from t2's base (t2 failed
    too, but its logged response answers t2's own prompt, not this one)."""
    from curate.synth import driver as synth
    with store.connect(read_only=True) as con:
        t1 = next(t for t in synth.failing_seed_traces(con, "c1") if t["trace_id"] == "t1")
    own = synth.from_trace(t1, "punctuation:no_comma")
    text = "Tell a bedtime story about a small fox. In your entire response, refrain from the use of any commas."
    composed = synth.Prompt([{"role": "user", "content": text}], text,
                            {"base_id": "b002", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}],
                             "composed_from": "t2"}, "t2")
    return own, composed
