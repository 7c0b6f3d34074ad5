"""DuckDB side of `python -m curate review`: the queue, decisions, undo and the --sample policy.

Every function opens its own short connection and closes it before returning: the review
loop never holds the database while it waits for a key, so other stages (and a second
reviewer) can write in between, and a killed session has nothing unwritten.

Decisions go to `examples` (status, reason, reviewer, reviewed_at) and to `reviews` (the log:
decision, prev_status for undo, reviewer, created_at). Undo flips the newest decision group of
a reviewer back to prev_status and marks its rows `undone` ("undid accepted: …" in reason).
Policy decisions use reviewers named `policy:…` and are never counted as human reviews.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from traces.store import connect, json_value, transaction

DECIDED = ("accepted", "rejected", "edited")
ACCEPT_REST_REASON = "accept rest of cluster"
POLICY_REVIEWER = "policy:sample"


@dataclass
class Item:
    """One example as the reviewer sees it."""
    example_id: str
    cluster_id: str | None
    mode: str
    status: str
    prompt: str
    response: str
    messages: list
    metadata: dict | None
    edited_from: str | None
    seed_trace_id: str | None
    embedding: list | None
    checks: list = field(default_factory=list)  # [(check_idx, check_id, passed, reason)]


def now() -> datetime:
    """UTC, naive (the TIMESTAMP columns hold UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


# ---- reading -------------------------------------------------------------------------------

@dataclass
class Screen:
    """Everything one redraw needs, read through one short read-only connection."""
    pending: list  # [(example_id, cluster_id)] in review order
    item: Item
    context: dict | None
    progress: tuple[int, int]
    nearest: tuple[str, str, float] | None  # accepted (example_id, prompt, cosine)


def read_screen(cluster_id: str | None, sample_k: int | None, front: list[str],
                index: "AcceptedIndex") -> Screen | None:
    """The queue and its next example (the first of `front` still pending, else the head)."""
    with connect(read_only=True) as con:
        pending = _queue(con, cluster_id, sample_k)
        if not pending:
            return None
        ids = {p[0] for p in pending}
        item = _load_item(con, next((i for i in front if i in ids), pending[0][0]))
        return Screen(pending, item, _cluster_context(con, item.cluster_id, item.seed_trace_id),
                      _progress(con, item.cluster_id), index.nearest(con, item.embedding))


def queue(cluster_id: str | None = None, sample_k: int | None = None) -> list[tuple[str, str | None]]:
    with connect(read_only=True) as con:
        return _queue(con, cluster_id, sample_k)


def _queue(con, cluster_id, sample_k) -> list[tuple[str, str | None]]:
    """Pending examples in review order: never-skipped first (by cluster, age), then skipped ones
    by when they were skipped. With sample_k, only each cluster's next sample_k - reviewed ones,
    picked in a fixed pseudo-random order (md5 of the id) so a restart samples the same ones."""
    return con.execute(f"""
        WITH skips AS (SELECT example_id, max(created_at) AS last_skip FROM reviews
                       WHERE decision = 'skipped' GROUP BY 1),
             reviewed AS ({HUMAN_REVIEWS}),
             pending AS (
                SELECT e.example_id, e.cluster_id, e.created_at, s.last_skip,
                       row_number() OVER (PARTITION BY e.cluster_id ORDER BY md5(e.example_id)) AS pick
                FROM examples e LEFT JOIN skips s USING (example_id)
                WHERE e.status = 'pending_review' AND (?::VARCHAR IS NULL OR e.cluster_id = ?))
        SELECT p.example_id, p.cluster_id FROM pending p
        LEFT JOIN reviewed r ON r.cluster_id IS NOT DISTINCT FROM p.cluster_id
        WHERE ?::INTEGER IS NULL OR p.pick <= ? - coalesce(r.n, 0)
        ORDER BY p.last_skip IS NOT NULL, p.last_skip, p.cluster_id NULLS LAST, p.created_at, p.example_id""",
                       [cluster_id, cluster_id, sample_k, sample_k]).fetchall()


# decisions by a person that still stand, per cluster (policies are reviewers named policy:…)
HUMAN_REVIEWS = """
    SELECT e.cluster_id, count(*) FILTER (WHERE r.decision = 'accepted') AS accepted, count(*) AS n
    FROM reviews r JOIN examples e USING (example_id)
    WHERE r.decision IN ('accepted', 'rejected', 'edited') AND r.reviewer NOT LIKE 'policy:%'
    GROUP BY 1"""


def human_reviews(con) -> dict:
    """cluster_id -> (accepted, reviewed)."""
    return {cid: (int(a), int(n)) for cid, a, n in con.execute(HUMAN_REVIEWS).fetchall()}


def load_item(example_id: str) -> Item | None:
    with connect(read_only=True) as con:
        return _load_item(con, example_id)


def _load_item(con, example_id: str) -> Item | None:
    row = con.execute("""
        SELECT example_id, cluster_id, mode, status, prompt, response, messages, metadata,
               edited_from, seed_trace_id, embedding
        FROM examples WHERE example_id = ?""", [example_id]).fetchone()
    if row is None:
        return None
    item = Item(*row[:6], json_value(row[6]) or [], json_value(row[7]), *row[8:])
    item.checks = con.execute("""SELECT check_idx, check_id, passed, reason FROM example_checks
                                 WHERE example_id = ? ORDER BY check_idx""", [example_id]).fetchall()
    return item


def _cluster_context(con, cluster_id: str | None, seed_trace_id: str | None) -> dict | None:
    """The cluster row plus one original failing trace (the example's seed if it is a member)."""
    if cluster_id is None:
        return None
    row = con.execute("SELECT label, check_id, size FROM clusters WHERE cluster_id = ?", [cluster_id]).fetchone()
    if row is None:
        return {"label": None, "check_id": None, "size": None, "trace": None}
    trace = con.execute("""
        SELECT t.trace_id, t.prompt, coalesce(r.output, t.response), r.reason
        FROM cluster_members m JOIN traces t USING (trace_id)
        LEFT JOIN run_results r ON r.run_id = m.run_id AND r.trace_id = m.trace_id
                           AND r.check_id = ? AND NOT r.passed
        WHERE m.cluster_id = ?
        ORDER BY (t.trace_id = ?) DESC NULLS LAST, (r.trace_id IS NULL), m.similarity DESC NULLS LAST, t.trace_id
        LIMIT 1""", [row[1], cluster_id, seed_trace_id]).fetchone()
    return {"label": row[0], "check_id": row[1], "size": row[2], "trace": trace}


def progress(cluster_id: str | None) -> tuple[int, int]:
    with connect(read_only=True) as con:
        return _progress(con, cluster_id)


def _progress(con, cluster_id: str | None) -> tuple[int, int]:
    """(decided, total) originals of a cluster (edits' new rows are not counted twice)."""
    decided, total = con.execute("""
        SELECT count(*) FILTER (WHERE status IN ('accepted', 'rejected', 'edited')),
               count(*) FILTER (WHERE status IN ('accepted', 'rejected', 'edited', 'pending_review'))
        FROM examples WHERE cluster_id IS NOT DISTINCT FROM ? AND edited_from IS NULL""",
                                 [cluster_id]).fetchone()
    return int(decided), int(total)


class AcceptedIndex:
    """Accepted examples' embeddings as one (N, dim) float32 matrix, loaded once per dimension;
    an accept in this session appends a row, other changes (undo, accept-rest, edit) reload it."""

    def __init__(self):
        self.ids: list[str] = []
        self.matrix = None

    def invalidate(self) -> None:
        self.matrix = None

    def add(self, example_id: str, embedding) -> None:
        if self.matrix is not None and embedding is not None and len(embedding) == self.matrix.shape[1]:
            self.ids.append(example_id)
            self.matrix = np.vstack([self.matrix, _unit(np.asarray(embedding, dtype=np.float32))[None]])

    def nearest(self, con, embedding) -> tuple[str, str, float] | None:
        """(example_id, prompt, cosine) of the most similar accepted example, or None."""
        if embedding is None or len(embedding) == 0:
            return None
        if self.matrix is None or self.matrix.shape[1] != len(embedding):
            self._load(con, len(embedding))
        if not self.ids:
            return None
        sims = self.matrix @ _unit(np.asarray(embedding, dtype=np.float32))
        best = int(np.argmax(sims))
        prompt = con.execute("SELECT prompt FROM examples WHERE example_id = ?", [self.ids[best]]).fetchone()
        return self.ids[best], prompt[0] if prompt else "", float(sims[best])

    def _load(self, con, dim: int) -> None:
        cursor = con.cursor()  # relation API on its own cursor: Arrow without an extra copy
        try:
            table = cursor.sql("""SELECT example_id, embedding FROM examples
                                  WHERE status = 'accepted' AND len(embedding) = ?""", params=[dim]).to_arrow_table()
        finally:
            cursor.close()
        self.ids = table.column("example_id").to_pylist()
        flat = table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        self.matrix = _unit(flat.astype(np.float32).reshape(len(self.ids), dim))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


# ---- writing -------------------------------------------------------------------------------

def _log(con, example_id: str, decision: str, reason, prev_status, reviewer: str, ts: datetime) -> None:
    con.execute("INSERT INTO reviews VALUES (?, ?, ?, ?, ?, ?, ?)",
                [uuid.uuid4().hex, example_id, decision, reason, prev_status, reviewer, ts])


def decide(example_id: str, decision: str, reviewer: str, reason: str | None = None) -> bool:
    """accepted | rejected for one pending example. False if it is no longer pending."""
    ts = now()
    with connect() as con, transaction(con):
        done = con.execute("""
            UPDATE examples SET status = ?, reviewer = ?, reviewed_at = ?,
                   reason = CASE WHEN ? = 'rejected' THEN ? ELSE reason END
            WHERE example_id = ? AND status = 'pending_review' RETURNING example_id""",
                           [decision, reviewer, ts, decision, f"review: {reason}", example_id]).fetchall()
        if done:
            _log(con, example_id, decision, reason, "pending_review", reviewer, ts)
    return bool(done)


def skip(example_id: str, reviewer: str) -> None:
    """Logged only (status stays pending): the queue puts skipped examples last."""
    with connect() as con:
        _log(con, example_id, "skipped", None, "pending_review", reviewer, now())


def accept_rest(cluster_id: str | None, reviewer: str, reason: str = ACCEPT_REST_REASON) -> list[str]:
    """Accept every pending example of a cluster as one decision group (one undo)."""
    ts = now()
    with connect() as con, transaction(con):
        ids = [r[0] for r in con.execute("""
            SELECT example_id FROM examples
            WHERE cluster_id IS NOT DISTINCT FROM ? AND status = 'pending_review'""", [cluster_id]).fetchall()]
        if ids:
            con.execute("""INSERT INTO reviews SELECT uuid()::VARCHAR, example_id, 'accepted', ?, status, ?, ?
                           FROM examples WHERE example_id IN (SELECT unnest(?))""", [reason, reviewer, ts, ids])
            con.execute("""UPDATE examples SET status = 'accepted', reviewer = ?, reviewed_at = ?
                           WHERE example_id IN (SELECT unnest(?))""", [reviewer, ts, ids])
    return ids


def undo_last(reviewer: str) -> list[tuple[str, str]]:
    """Undo this reviewer's newest decision (one example, or one accept-rest group).
    Returns (example_id, undone decision) for each example back in pending_review."""
    with connect() as con, transaction(con):
        ts = con.execute("""SELECT max(created_at) FROM reviews
                            WHERE reviewer = ? AND decision IN ('accepted', 'rejected', 'edited')""",
                         [reviewer]).fetchone()[0]
        if ts is None:
            return []
        rows = con.execute("""SELECT review_id, example_id, decision, prev_status FROM reviews
                              WHERE reviewer = ? AND created_at = ?
                                AND decision IN ('accepted', 'rejected', 'edited')""", [reviewer, ts]).fetchall()
        restored = [(example_id, decision) for _, example_id, decision, prev in rows
                    if _restore(con, example_id, decision, prev)]
        con.execute("""UPDATE reviews SET reason = 'undid ' || decision || coalesce(': ' || reason, ''),
                              decision = 'undone'
                       WHERE review_id IN (SELECT unnest(?))""", [[r[0] for r in rows]])
    return restored


def _restore(con, example_id: str, decision: str, prev_status: str | None) -> bool:
    done = con.execute("""
        UPDATE examples SET status = ?, reviewer = NULL, reviewed_at = NULL,
               reason = CASE WHEN status = 'rejected' THEN NULL ELSE reason END
        WHERE example_id = ? AND status = ? RETURNING example_id""",
                       [prev_status or "pending_review", example_id, decision]).fetchall()
    if done and decision == "edited":
        # the edit's new row is kept (nothing is deleted) but can no longer reach training
        con.execute("""UPDATE examples SET status = 'rejected', reason = 'edit undone'
                       WHERE edited_from = ? AND status IN ('accepted', 'failed_verification')""", [example_id])
    return bool(done)


def save_edit(item: Item, prompt: str, response: str, metadata: dict | None,
              results: list[tuple[str, bool, str]], reviewer: str) -> tuple[str, str, str | None] | None:
    """Store an edit: a new `edit` row linked by edited_from, verified (accepted or
    failed_verification), with its check rows; the original becomes `edited`.
    Returns (new_id, status, reason), or None if the original is no longer pending."""
    failed = [f"{cid}: {why}" for cid, ok, why in results if not ok]
    status, reason = ("failed_verification", "; ".join(failed)) if failed else ("accepted", None)
    new_id, ts = f"{item.example_id}-edit-{uuid.uuid4().hex[:8]}", now()
    with connect() as con, transaction(con):
        done = con.execute("""UPDATE examples SET status = 'edited', reviewer = ?, reviewed_at = ?
                              WHERE example_id = ? AND status = 'pending_review' RETURNING example_id""",
                           [reviewer, ts, item.example_id]).fetchall()
        if not done:
            return None
        con.execute("""
            INSERT INTO examples (example_id, cluster_id, seed_trace_id, mode, messages, prompt, response,
                                  metadata, guidance, teacher_model, request_hash, status, reason,
                                  edited_from, reviewer, reviewed_at, created_at)
            SELECT ?, cluster_id, seed_trace_id, 'edit', ?, ?, ?, ?, guidance, teacher_model, request_hash,
                   ?, ?, example_id, ?, ?, ?
            FROM examples WHERE example_id = ?""",
                    [new_id, json.dumps(with_prompt(item.messages, prompt)), prompt, response,
                     None if metadata is None else json.dumps(metadata), status, reason, reviewer, ts, ts,
                     item.example_id])
        for idx, (cid, ok, why) in enumerate(results):
            con.execute("INSERT INTO example_checks VALUES (?, ?, ?, ?, ?)", [new_id, idx, cid, ok, why])
        _log(con, item.example_id, "edited", f"-> {new_id}: {status}", "pending_review", reviewer, ts)
    return new_id, status, reason


def with_prompt(messages: list, prompt: str) -> list:
    """The messages with the last user turn's content replaced by the edited prompt."""
    out = [dict(m) for m in messages or []]
    for message in reversed(out):
        if message.get("role") == "user":
            message["content"] = prompt
            return out
    return out + [{"role": "user", "content": prompt}]


# ---- the --sample policy -------------------------------------------------------------------

def apply_sample_policy(k: int, threshold: float, cluster_id: str | None = None) -> dict:
    """Per cluster with pending examples: once a person has reviewed k of it, accept the rest if
    the reviewed acceptance rate (accepted / decided; an edit counts as not accepted, the
    original needed fixing) is >= threshold, else leave them waiting for a full review.

    Returns {"k", "threshold", "accepted": n accepted here, "clusters": {cluster_id: {"reviewed",
    "accepted", "rate", "pending", "action"}}}; action is accepted_rest | waits | needs_review."""
    if k < 1:
        raise ValueError("--sample K needs K >= 1")
    with connect(read_only=True) as con:
        reviewed = human_reviews(con)
        pending = dict(con.execute("""SELECT cluster_id, count(*) FROM examples
                                      WHERE status = 'pending_review' AND (? IS NULL OR cluster_id = ?)
                                      GROUP BY 1""", [cluster_id, cluster_id]).fetchall())
    report = {"k": k, "threshold": threshold, "accepted": 0, "clusters": {}}
    for cid, n_pending in sorted(pending.items(), key=lambda kv: (kv[0] is None, kv[0] or "")):
        accepted, n = reviewed.get(cid, (0, 0))
        rate = accepted / n if n else None
        action = "needs_review" if n < k else ("accepted_rest" if rate >= threshold else "waits")
        if action == "accepted_rest":
            why = f"sample policy: {accepted}/{n} reviewed accepted >= {threshold}"
            report["accepted"] += len(accept_rest(cid, POLICY_REVIEWER, why))
        report["clusters"][cid] = {"reviewed": n, "accepted": accepted, "rate": rate,
                                   "pending": int(n_pending), "action": action}
    return report
