"""python -m bench --only ingest [--quick] — trace ingest throughput vs a straightforward baseline.

Generates (once, cached under /tmp/mend_bench/) an OpenAI Chat Completions log in JSONL: 1M lines
(50k with --quick) of ~1 KB each, system + user + assistant, ids, usage, metadata, feedback, with
~1% of prompts carrying an API key or bearer token so that scrubbing has work to do.

mend: `traces.ingest.ingest_file` into a fresh DuckDB file, scrubbing on (the default), timed end
to end (file hash, validation, split, insert, commit). Baseline: what one would write first —
`json.loads` per line, the same checks and scrubbing in Python, `executemany` in batches of 1,000
into a table with the same columns; measured on a 5k-line slice (2k with --quick: DuckDB executemany
runs at tens to hundreds of rows/s with 1 KB JSON rows, a 100k slice would take hours) and
reported as traces/s.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

from bench import scratch_store

CACHE = Path("/tmp/mend_bench")
WORDS = ("model data rain river garden letter market summer window travel coffee music history "
         "science budget report meeting health planet ocean mountain city story recipe energy "
         "project student teacher question answer system network memory language review").split()
TASKS = ["Write a short poem about {a} and {b}.", "Explain how {a} affects {b} in two paragraphs.",
         "Summarize the following notes about {a}: {c}", "Give me three tips for {a} without using commas.",
         "Draft an email to my team about the {a} {b}. Keep it under 120 words.",
         "Translate this into plain English: {c}", "List five facts about {a}, all in lowercase."]


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def make_line(i: int, rng: random.Random) -> str:
    a, b = rng.choice(WORDS), rng.choice(WORDS)
    prompt = rng.choice(TASKS).format(a=a, b=b, c=" ".join(_sentence(rng, 12) for _ in range(3)))
    if i % 100 == 7:
        prompt += " My key is sk-proj-" + hashlib.sha1(str(i).encode()).hexdigest() + " please keep it safe."
    if i % 100 == 42:
        prompt += " Header: Authorization: Bearer " + hashlib.md5(str(i).encode()).hexdigest()
    answer = " ".join(_sentence(rng, rng.randint(8, 16)) for _ in range(6))
    record = {
        "id": f"chatcmpl-{i:012d}", "object": "chat.completion", "created": 1_730_000_000 + i,
        "model": rng.choice(["gpt-4o-mini-2024-07-18", "smollm2-135m-instruct"]),
        "messages": [{"role": "system", "content": "You are a helpful assistant for a small company. "
                                                  "Answer clearly and follow every formatting instruction."},
                     {"role": "user", "content": prompt}],
        "temperature": 0.7, "max_tokens": 512,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 60 + len(prompt) // 4, "completion_tokens": len(answer) // 4},
        "metadata": {"base_id": f"b{i % 5000:04d}", "user": f"u{i % 977}", "app": "helpdesk"},
    }
    if i % 10 == 0:
        record["feedback"] = {"score": rng.randint(0, 1), "comment": "thumbs"}
    return json.dumps(record)


def dataset(n: int) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"openai_chat_{n}.jsonl"
    if not path.exists():
        rng = random.Random(0)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            for i in range(n):
                f.write(make_line(i, rng) + "\n")
        tmp.replace(path)
    return path


# ---------- the baseline ----------

SECRET = re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/-]{16,}=*|sk-(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}|"
                    r"sk-[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{30,}|(?:AKIA|ASIA)[0-9A-Z]{16}|xox[abposr]-[A-Za-z0-9-]{10,}")


def _scrub(s: str) -> str:
    return SECRET.sub(lambda m: (m.group(1) or "") + "[REDACTED_SECRET]", s)


def baseline(path: Path, limit: int, db: Path) -> float:
    """traces/s of json.loads per line + executemany (batches of 1,000)."""
    import duckdb
    con = duckdb.connect(str(db))
    con.execute("""CREATE TABLE traces (trace_id VARCHAR PRIMARY KEY, model VARCHAR, messages JSON, prompt VARCHAR,
                   response VARCHAR, usage JSON, metadata JSON, feedback JSON, split VARCHAR)""")
    start, batch = time.perf_counter(), []
    with open(path) as f:
        for n, line in enumerate(f):
            if n >= limit:
                break
            row = _baseline_row(line)
            if row:
                batch.append(row)
            if len(batch) >= 1000:
                con.executemany("INSERT OR IGNORE INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
                batch = []
    if batch:
        con.executemany("INSERT OR IGNORE INTO traces VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", batch)
    con.close()
    return min(n + 1, limit) / (time.perf_counter() - start)


def _baseline_row(line: str):
    try:
        rec = json.loads(_scrub(line))
        msgs = rec["messages"]
        prompt = [m for m in msgs if m["role"] == "user"][-1]["content"]
        response = rec["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    key = str((rec.get("metadata") or {}).get("base_id") or " ".join(prompt.lower().split()))
    split = "holdout" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32 < 0.2 else "seed"
    return (rec.get("id"), rec.get("model"), json.dumps(msgs), prompt, response, json.dumps(rec.get("usage")),
            json.dumps(rec.get("metadata")), json.dumps(rec.get("feedback")), split)


# ---------- mend ----------

def mend(path: Path) -> tuple[float, object]:
    """Ingest `path` into the store MEND_DB names (the caller's scratch store)."""
    from traces import ingest, settings
    cfg = settings.load("traces")
    assert cfg.scrub_secrets, "the benchmark measures ingest with scrubbing on"
    start, cpu = time.perf_counter(), time.process_time()  # process CPU includes DuckDB's threads
    summary = ingest.ingest_file(path, cfg)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return summary.counts.read / seconds, summary, summary.counts.read / cpu


def run(quick: bool) -> list[dict]:
    # executemany into DuckDB runs at tens to hundreds of rows/s here: a 100k slice would take hours
    n, slice_n = (50_000, 2_000) if quick else (1_000_000, 5_000)
    path = dataset(n)
    mb = path.stat().st_size / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        base_rate = baseline(path, slice_n, Path(tmp) / "baseline.duckdb")
        with scratch_store(Path(tmp) / "mend.duckdb"):
            load_before = os.getloadavg()[0]
            rate, summary, per_cpu = mend(path)
            load = max(load_before, os.getloadavg()[0])
    c = summary.counts
    assert c.read == n and c.stored == n, f"expected {n} stored, got {c}"
    notes = (f"{n:,} lines, {mb:,.0f} MB OpenAI chat JSONL (~{mb * 1e6 / n:,.0f} B/line), scrubbing on, "
             f"{c.stored:,} stored; baseline = json.loads + executemany on a {slice_n:,}-line slice; "
             f"mend used {per_cpu:,.0f} traces per CPU-second; 1-min load average {load:.1f} during the run "
             f"(the 2 cores are shared with other jobs, so wall-clock figures are lower than on an idle machine)")
    return [
        {"benchmark": "ingest", "metric": "traces/s (OpenAI chat JSONL, scrub on)", "mend": rate,
         "baseline": base_rate, "ratio": rate / base_rate, "target": ">= 20x baseline; >= 100k/s", "notes": notes},
    ]
