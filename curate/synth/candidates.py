"""What every synthesis mode shares: the prompt and budget records, the teacher (local server or endpoint),
sending calls within budget, verifying a candidate by its prompt's checks (the instructions its metadata names and
the cluster's own check), and writing candidate rows.
compose (curate/synth/driver.py) and full (curate/synth/full.py) both build on it."""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field

import duckdb

from evals import ifeval
from traces import progress as progress_mod
from traces import settings as settings_mod
from traces import store

now = time.monotonic  # the budget's clock (a test moves it)
CHUNK = 16  # requests per client batch: budgets (calls, cost, minutes) are checked between batches


@dataclass
class Prompt:
    """One prompt to answer: the messages sent, the text verified, and what verifies it."""
    messages: list
    prompt: str
    metadata: dict
    seed_trace_id: str | None
    description: str = ""  # the instruction sentence this prompt targets (for guidance)
    request: dict = field(default_factory=dict)  # the failing trace's tools and params, which some checks read


@dataclass
class Budget:
    calls_left: int
    cost_left: float
    spent_calls: int = 0
    spent_cost: float = 0.0
    minutes: float = 0.0  # teacher wall-clock budget of the run, counted from the Budget's creation (0: none)
    turn_calls: int = 0  # calls one (strategy, cluster) turn sends at most, cached ones included (0: no count)
    started: float = field(default_factory=lambda: now())
    skipped: dict = field(default_factory=dict)  # strategy -> clusters it never reached because a budget was spent
    turn_end: float | None = None  # when the current (strategy, cluster) turn's share of the minutes runs out
    turn_sent: int = 0  # calls the current turn sent
    clock_turns: int = 0  # turns the clock ended before their count: what they kept depends on the machine's speed

    def share(self, turns_left: int) -> None:
        """Start a turn: its count of calls, and an equal share of the minutes left (what a quick turn leaves goes
        to later ones), so that a time budget reaches every cluster instead of running out on the first few."""
        self.turn_sent = 0
        if self.minutes > 0 and turns_left > 0:
            left = self.minutes * 60 - (now() - self.started)
            self.turn_end = now() + max(0.0, left) / turns_left

    def end_turn(self) -> None:
        self.clock_turns += self.turn_over and not self._counted_out  # the clock ended it (a bool counts 0 or 1)
        self.turn_end = None

    @property
    def _counted_out(self) -> bool:
        return self.turn_calls > 0 and self.turn_sent >= self.turn_calls

    @property
    def turn_over(self) -> bool:
        """The turn's count is sent (the same on every machine), or its share of the minutes is over (a backstop:
        where it ends a turn first, a rerun on a faster machine sends more calls and keeps other data)."""
        return self._counted_out or (self.turn_end is not None and now() >= self.turn_end)

    def chunk(self) -> int:
        """Requests the next batch may send: CHUNK, or fewer where a count runs out."""
        turn_left = self.turn_calls - self.turn_sent if self.turn_calls > 0 else CHUNK
        return max(0, min(CHUNK, self.calls_left, turn_left))

    @property
    def out_of_time(self) -> bool:
        return self.minutes > 0 and now() - self.started >= self.minutes * 60

    @property
    def spent(self) -> bool:
        """Calls, cost or minutes used up: no further teacher request is sent (repairs, free, go on)."""
        return self.calls_left <= 0 or self.cost_left <= 0 or self.out_of_time

    def why(self) -> str:
        """Which budget is spent, named by its setting."""
        if self.out_of_time:
            return f"synth_minutes ({self.minutes:g} min of teacher time)"
        return f"max_calls_total ({self.spent_calls} calls)" if self.calls_left <= 0 else \
            f"max_cost_usd (${self.spent_cost:.2f})"

    def take(self, calls: list) -> None:
        self.turn_sent += len(calls)
        self.spent_calls += sum(1 for c in calls if not c.cached)
        self.calls_left -= sum(1 for c in calls if not c.cached)
        cost = sum(c.cost_usd or 0.0 for c in calls if not c.cached)
        self.spent_cost += cost
        self.cost_left -= cost


def verify(p_prompt: str, response: str, metadata: dict, request: dict | None = None
           ) -> tuple[bool, str | None, list]:
    """Every check the metadata names: IFEval instructions, and `checks` (where synthesis puts the cluster's own
    check as its suite ran it, curate.synth.cluster_checks)."""
    from evals.checks import verify_instructions
    results = verify_instructions(p_prompt, response, metadata, request)
    failed = [r.reason or cid for cid, r in results if not r.passed]
    if not results:
        return False, "no checks: the metadata names no instruction to verify", results
    return not failed, ("; ".join(failed) if failed else None), results


def example_id(cluster_id: str, request_hash: str, extra: str = "") -> str:
    return "ex-" + hashlib.sha256(f"{cluster_id}:{request_hash}:{extra}".encode()).hexdigest()[:20]


def candidate_row(cluster: dict, p: Prompt, call, mode: str, teacher_model: str, guide: dict | None,
                  extra: str = "", *, strategy: str = "sample", source_id: str | None = None,
                  guide_record: dict | None = None, min_alpha: float | None = None) -> tuple[dict, list]:
    """One candidate, verified: every check its prompt names, then the quality filter (evals.quality) for every
    strategy. A sample the token budget cut (finish_reason "length") is first trimmed back to its last whole
    sentence (the full text stays in llm_calls). `call` needs .text and .request_hash (None: no teacher call)."""
    from evals import quality
    response = quality.trim_truncated(call.text or "", finish_reason(call))
    ok, reason, results = verify(p.prompt, response, p.metadata, p.request)
    if ok:
        fluent, why = quality.fluency(response, p.prompt, p.metadata, finish_reason(call),
                                      min_alpha=min_alpha or (guide or {}).get("min_alpha") or quality.MIN_ALPHA)
        if not fluent:
            ok, reason = False, f"not_fluent: {why}"
    eid = example_id(cluster["cluster_id"], call.request_hash or "", extra)
    record = guide_record if guide_record is not None else (_guide_record(guide) if guide else None)
    row = {"example_id": eid, "cluster_id": cluster["cluster_id"], "seed_trace_id": p.seed_trace_id,
           "mode": mode, "messages": json.dumps(p.messages), "prompt": p.prompt, "response": response,
           "metadata": json.dumps(p.metadata), "guidance": json.dumps(record) if record else None,
           "teacher_model": teacher_model, "request_hash": call.request_hash,
           "status": "verified" if ok else "failed_verification", "reason": reason,
           "strategy": strategy, "source_id": source_id}
    checks = [(eid, i, cid, bool(r.passed), r.reason) for i, (cid, r) in enumerate(results)]
    return row, checks


def finish_reason(call) -> str | None:
    """The first choice's finish_reason of a teacher call ("stop", "length"), None when unknown."""
    try:
        return call.response["choices"][0].get("finish_reason")
    except (AttributeError, TypeError, KeyError, IndexError):
        return None


def _guide_record(guide: dict) -> dict:
    """What the example records about how it was produced (the bias table only by size)."""
    from curate.synth.guidance import record
    return record(guide)


COLS = ["example_id", "cluster_id", "seed_trace_id", "mode", "messages", "prompt", "response", "metadata",
        "guidance", "teacher_model", "request_hash", "status", "reason", "strategy", "source_id"]


def write_rows(rows: list[dict], checks: list[tuple]) -> int:
    """Insert new candidates (a re-run answered from the cache writes nothing twice). The same id twice in one
    batch is the same request answered twice (a small cluster repeats a prompt), so it is written once: the first
    default nightly failed its synth stage on a duplicate key here."""
    seen: set = set()
    rows = [r for r in rows if not (r["example_id"] in seen or seen.add(r["example_id"]))]
    if not rows:
        return 0
    try:
        return _insert_rows(rows, checks)
    except duckdb.Error as e:  # a failed COMMIT (a full disk): this batch is not stored, the ones before it are
        raise store.write_failed(f"curate synth (cluster {rows[0]['cluster_id']})", f"{len(rows)} candidates",
                                 e) from e


def _insert_rows(rows: list[dict], checks: list[tuple]) -> int:
    import pyarrow as pa
    table = pa.table({c: [r[c] for r in rows] for c in COLS})
    with store.connect() as con, store.transaction(con):
        before = con.execute("SELECT count(*) FROM examples").fetchall()[0][0]
        con.register("new_rows", table)
        con.execute(f"""INSERT INTO examples ({', '.join(COLS)})
            SELECT {', '.join(c + ('::JSON' if c in ('messages', 'metadata', 'guidance') else '') for c in COLS)}
            FROM new_rows WHERE example_id NOT IN (SELECT example_id FROM examples)""")
        if checks:
            ct = pa.table({"example_id": [c[0] for c in checks], "check_idx": [c[1] for c in checks],
                           "check_id": [c[2] for c in checks], "passed": [c[3] for c in checks],
                           "reason": [c[4] for c in checks]})
            con.register("new_checks", ct)
            con.execute("""INSERT OR IGNORE INTO example_checks SELECT example_id, check_idx::INTEGER, check_id,
                           passed, reason FROM new_checks""")
        return con.execute("SELECT count(*) FROM examples").fetchall()[0][0] - before


def make_client(s, base_url: str, model: str):
    from evals.client import Client
    ev = settings_mod.load("evals")
    return Client(base_url, model, purpose="teacher", api_key_env=s.teacher_api_key_env or "OPENAI_API_KEY",
                  concurrency=s.teacher_concurrency, max_retries=ev.client_max_retries, timeout_s=s.teacher_timeout_s,
                  allow_remote=s.teacher_allow_remote or ev.allow_remote, prices=ev.prices, rpm=s.teacher_rpm,
                  tpm=s.teacher_tpm)


@contextlib.contextmanager
def teacher(s, continuous_batching: bool = True):
    """Yields a Client: the local server (started and stopped here) or the configured endpoint,
    checked before any work is queued."""
    if s.teacher_url == "local":
        from curate.synth.teacher import local_teacher
        with local_teacher(s.teacher_model, continuous_batching=continuous_batching, settings=s) as info:
            # its /v1/models answers 500 offline: /health (waited on) is the check here
            yield make_client(s, info["base_url"], info["model"]), info["folder"]
        return
    client = make_client(s, s.teacher_url, s.teacher_model)
    client.check_endpoint()
    yield client, None


# errors (evals.client._describe: the openai error's name first) that say the teacher is down or overloaded, not
# that one request was bad
UNAVAILABLE = ("RateLimitError", "APITimeoutError", "APIConnectionError", "InternalServerError")


def failures_in_row(client, calls: list, before: int) -> int:
    """Requests the teacher failed in a row, `before` these calls included. After CHUNK of them (each after the
    client's retries) synthesis stops with a TeacherError naming the endpoint and the setting to change: before, it
    went on through every batch left, printing one yellow line per cluster, and the stage ended `done`."""
    n = before
    for call in calls:
        n = n + 1 if (call.error or "").startswith(UNAVAILABLE) else 0
    if n >= CHUNK and hasattr(client, "endpoint"):  # a teacher endpoint (the student answers in-process)
        from curate.synth.teacher import TeacherError
        raise TeacherError(_unavailable(client, n, next(c.error for c in reversed(calls) if c.error)))
    return n


def _unavailable(client, n: int, error: str) -> str:
    if error.startswith("RateLimitError"):
        fix = (f"it is rate limiting: lower [tool.mend.curate] teacher_concurrency (now {client.concurrency}), or "
               f"raise [tool.mend.evals] client_max_retries (now {client.max_retries}; each retry waits as the "
               "server's Retry-After says)")
    elif error.startswith("APITimeoutError"):
        fix = (f"no answer came within [tool.mend.curate] teacher_timeout_s (now {client.timeout_s:g} s): raise it, "
               f"or lower teacher_concurrency (now {client.concurrency})")
    else:
        fix = "is the server behind [tool.mend.curate] teacher_url up and healthy?"
    return (f"the teacher at {client.endpoint} failed {n} requests in a row (each retried {client.max_retries}x; "
            f"last: {error[:200]}): {fix}. Synthesis stopped; the candidates written so far are kept, and a re-run "
            "repeats no request already answered (llm_calls)")


def run_calls(client, requests: list[dict], budget: Budget, progress, task) -> list:
    """Send requests in chunks, stopping between chunks when a budget is spent; returns the calls made."""
    calls, failed = [], 0
    for i in range(0, len(requests), CHUNK):
        if budget.spent:
            break
        chunk = requests[i:i + min(CHUNK, budget.calls_left)]
        got = client.complete_many(chunk, progress=lambda n: progress.advance(task, n))
        budget.take(got)
        calls.extend(got)
        failed = failures_in_row(client, got, failed)  # answered calls are cached: a re-run writes their rows
    return calls


@contextlib.contextmanager
def progress_bars(console):
    """rich bars on a terminal; plain progress lines (stage, done/total, rate, ETA) in a log (traces.progress)."""
    with progress_mod.progress(console, stage="synth") as progress:
        yield progress


# ------------------------------------------------------------------ prompts from traces, requests

def with_checks(metadata: dict, specs: list[dict]) -> dict:
    """The metadata plus, under "checks", each spec it does not name yet: the example then carries what verifies
    it (verify_instructions, a reviewer's edit). A check the metadata already names (an IFEval instruction, or a
    `from_metadata: checks` entry) is not added twice, so IFEval prompts are unchanged."""
    named = set(metadata.get("instruction_id_list") or [])
    have = [{"check": c.get("check"), "args": c.get("args") or {}} for c in metadata.get("checks") or []
            if isinstance(c, dict)]
    new = [s for s in specs if s["check"] not in named and s not in have]
    return {**metadata, "checks": [*(metadata.get("checks") or []), *new]} if new else metadata


def from_trace(t: dict, check_id: str) -> Prompt:
    """A failing trace as a prompt: its messages and metadata (plus the checks that verify it), and the
    description of the cluster's instruction when IFEval can build it."""
    md = with_checks({k: v for k, v in (t["metadata"] or {}).items() if k != "generation"}, t.get("checks") or [])
    desc = ""
    with contextlib.suppress(Exception):
        for iid, kw in ifeval.instruction_specs(md):
            if iid == check_id:
                desc = ifeval.build_instruction(iid, kw, t["prompt"])[1]
    return Prompt(t["messages"], t["prompt"], md, t["trace_id"], desc, t.get("request") or {})


def sample_requests(p: Prompt, s, k: int, guide: dict | None = None) -> list[dict]:
    """k requests for one prompt, one per seed (the seed is part of the cache key: k distinct calls)."""
    messages = p.messages
    if guide:
        from curate.synth.guidance import guided_messages
        messages = guided_messages(p, guide)
    base = {"messages": messages, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": token_budget(s)}
    if guide and guide.get("logit_bias"):
        base["logit_bias"] = guide["logit_bias"]
    return [{**base, "seed": j} for j in range(k)]


def token_budget(s) -> int:
    """Completion tokens per sample: `max_tokens`, or (0, the default) the student's own budget
    `[tool.mend.train] max_new_tokens`, which the gate generates with too. One budget for teacher, student and gate:
    a target longer than the student may write is one it learns to cut mid-sentence."""
    from train.generate import token_budget as student_budget
    return student_budget(s.max_tokens or None)
