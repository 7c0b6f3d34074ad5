"""Candidate rows for the dedup, filter, accept and status tests, and a cheap deterministic embedder."""
import json
import zlib

import numpy as np

from traces import store

STORY = ("the little fox sat by the river and watched the moon rise over the quiet hills while the owls "
         "called to each other across the dark valley and the wind moved slowly through the tall grass")


def bag_embed(texts):
    """A cheap deterministic embedder: hashed bag of words, L2-normalized (same words -> cosine 1)."""
    out = np.zeros((len(texts), 384), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, zlib.crc32(w.encode()) % 384] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def add(eid, prompt, response, status="verified", created="2026-01-01 00:00:00", checks=()):
    """An example; `checks`: the check ids that verified it (passed example_checks rows, in order)."""
    with store.connect() as con:
        con.execute("""INSERT INTO examples (example_id, cluster_id, mode, messages, prompt, response, metadata,
                       status, created_at) VALUES (?, 'c1', 'compose', ?, ?, ?, '{}', ?, ?::TIMESTAMP)""",
                    [eid, json.dumps([{"role": "user", "content": prompt}]), prompt, response, status, created])
        for i, check_id in enumerate(checks):
            con.execute("INSERT INTO example_checks VALUES (?, ?, ?, true, ?)", [eid, i, check_id, f"{check_id}: ok"])


def state():
    with store.connect(read_only=True) as con:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT example_id, status, reason, duplicate_of, embedding IS NOT NULL FROM examples").fetchall()}
