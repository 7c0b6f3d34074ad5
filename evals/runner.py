"""python -m evals run [--suite NAME] [--model REF] [--adapter PATH] [--split seed|holdout|all] [--limit N]

Scores a suite's traces and stores the run:
- logged mode (no --model): the responses stored in the traces are scored;
- generate mode (--model REF, optionally --adapter PATH): the student regenerates every response greedily
  (evals.student: in-process, or the served student at `student_url`) and those are scored. REF "production"
  resolves through evals.registry.

Writes `eval_runs` (status running -> complete) and `results` (one row per trace and check; the output scored in
generate mode, a reference to the trace's own response in logged mode). Incremental: a logged run of a whole split
scores only the traces added since the last complete run of the same suite version (and suite file), and names it
as its parent; `run_results` reads a run's results with its whole chain's, and when nothing is new the parent run
itself is returned. A new suite version scores everything again. Traces stream in Arrow record batches (BATCH),
so memory is bounded by the batch, not the store. A run killed before it finishes stays `running` with a dead pid and is reported as
`incomplete` (refresh_stale); Ctrl-C marks it `incomplete` at once; it is never mistaken for complete:
results and the `complete` status are written in one transaction. A trace whose metadata cannot name its checks
fails the run (`failed`) with an error naming the suite and the trace.

Python API (gate, nightly): run_suite(...) -> run_id; evals.runs.find_run finds a complete run to reuse.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
from rich.console import Console

from evals import checks, suites
from evals.checks import UnknownCheck, ifeval_check, run_check
from evals.registry import resolve_ref
from evals.reports import print_run
from evals.runs import refresh_stale
from evals.student import Student, answer_settings
from evals.suites import SuiteError, selection_sql
from traces import progress as progress_mod
from traces import settings as settings_mod
from traces import store
from traces.hashing import adapter_hash
from traces.settings import db_path
from traces.terminal import safe

console = Console(stderr=True)


class SuiteSkipped(RuntimeError):
    """The suite cannot run here (e.g. the judge suite without a judge endpoint); the message says why."""


# ------------------------------------------------------------------ run bookkeeping

def _set_status(run_id: str, status: str) -> None:
    """Best effort: it runs while another error is raised, and on a full disk it fails too; the row then stays
    `running` until refresh_stale finds its process gone (`incomplete`), and the first error is the one shown."""
    with contextlib.suppress(duckdb.Error, store.StoreError), store.connect() as con:
        con.execute("UPDATE eval_runs SET status = ?, finished_at = now() WHERE run_id = ? AND status = 'running'",
                    [status, run_id])


def new_run_id() -> str:
    return f"run-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


# ------------------------------------------------------------------ the run

def run_suite(suite, split: str | None = None, model: str | None = None, adapter: str | None = None,
              limit: int | None = None, trace_ids=None, *, settings=None, progress: bool = True,
              a_hash: str | None = None) -> str:
    """Run one suite (name, path or Suite) and return its run_id. Raises SuiteSkipped when it cannot run.
    a_hash: the adapter's hash when the caller has it (the gate hashes each adapter once per decision)."""
    s = settings or settings_mod.load("evals")
    checks.load_check_modules(s.check_modules)
    suite = suite if isinstance(suite, suites.Suite) else suites.load(suite)
    _require_judge(suite, s)
    split = split or suite.select.get("split") or s.split
    if split not in ("seed", "holdout", "all"):
        raise ValueError(f"--split must be seed, holdout or all (got {split!r})")
    model_ref, adapter = resolve_ref(model, adapter) if model else (None, None)
    if adapter and not model_ref:
        raise ValueError("--adapter needs --model (the base model the adapter was trained on)")
    a_hash = a_hash or adapter_hash(adapter)  # hashed here once: the run row and the generation cache use it
    plan = _plan(suite, split, trace_ids, limit, chain=model_ref is None and trace_ids is None and not limit)
    if plan.parent and plan.n == 0:
        return plan.parent  # nothing new since the suite version's last complete run: it already covers all
    run_id = _start(suite, split, model_ref, adapter, a_hash, plan, s)
    try:
        workers = 1 if model_ref else score_workers(s, plan.n)  # no fork after torch has run
        _stream(run_id, suite, plan, model_ref, adapter, a_hash, s, progress, workers)
    except KeyboardInterrupt:
        _set_status(run_id, "incomplete")
        raise
    except BaseException:
        _set_status(run_id, "failed")
        raise
    return run_id


def _require_judge(suite, s) -> None:
    needs = suite.requires == "judge" or "judge" in suite.check_names()
    if needs:
        from evals.checks_judge import JudgeNotConfigured, judge_client
        try:
            judge_client(s).check_endpoint()
        except JudgeNotConfigured as e:
            raise SuiteSkipped(f"suite {suite.name!r} skipped: {e}") from None


BATCH = 20_000  # traces per Arrow record batch: what a run holds in memory at once, however large the store


@dataclass(frozen=True)
class Plan:
    """What a run scores: `sql` selects its `n` traces. A logged run of a whole split continues the suite version's
    last complete such run (`parent`): it selects only the traces with seq in (the parent's upto_seq, upto]."""
    sql: str
    params: list
    n: int
    parent: str | None
    upto: int | None  # None: the run covers a subset (--limit, trace ids, a model) and is never a parent


def _plan(suite, split, trace_ids, limit, chain: bool) -> Plan:
    with store.connect() as con:
        refresh_stale(con)
        upto = con.execute("SELECT coalesce(max(seq), 0) FROM traces").fetchall()[0][0] if chain else None
        parent, after = _parent(con, suite, split) if chain else (None, None)
        # ordered only for a --limit (deterministic): an unordered scan streams, a sort holds the whole selection
        sql, params = selection_sql(suite, split, trace_ids, limit, seq=(after, upto) if chain else None,
                                    ordered=bool(limit))
        n = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchall()[0][0]
    return Plan(sql, params, n, parent, upto)


def _parent(con, suite, split) -> tuple[str | None, int | None]:
    """(run id, its upto_seq) of the newest complete logged run of this suite version, split and suite file that
    covers its whole selection, or (None, None): the run scores every trace."""
    rows = con.execute("""SELECT run_id, upto_seq FROM eval_runs WHERE suite = ? AND suite_version = ?
                          AND mode = 'logged' AND split = ? AND status = 'complete' AND upto_seq IS NOT NULL
                          AND json_extract_string(settings, '$.suite_sha256') = ?
                          ORDER BY upto_seq DESC, started_at DESC LIMIT 1""",
                       [suite.name, suite.version, split, suite.sha256]).fetchall()
    return rows[0] if rows else (None, None)


def _start(suite, split, model_ref, adapter, a_hash, plan: Plan, s) -> str:
    run_id = new_run_id()
    gen = answer_settings(s) if model_ref else None
    with store.connect() as con:
        con.execute("""INSERT INTO eval_runs (run_id, suite, suite_version, mode, model_ref, adapter_path,
                       adapter_hash, split, gen_settings, settings, status, n_traces, started_at, pid,
                       parent_run_id, upto_seq)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'running', ?, now(), ?, ?, ?)""",
                    [run_id, suite.name, suite.version, "generate" if model_ref else "logged", model_ref,
                     adapter, a_hash, split, json.dumps(gen) if gen else None,
                     json.dumps({**settings_mod.as_dict(s), "suite_sha256": suite.sha256}, default=str), plan.n,
                     os.getpid(), plan.parent, plan.upto])
    return run_id


def conversation(trace: dict) -> list[dict]:
    """The request messages of a trace, as the student's chat template wants them."""
    messages = trace.get("messages")
    messages = store.json_value(messages, [])
    out = [{"role": m.get("role", "user"), "content": m.get("content") or ""} for m in messages
           if m.get("role") in ("system", "user", "assistant")]
    while out and out[-1]["role"] == "assistant":  # the answer is what we regenerate
        out.pop()
    return out or [{"role": "user", "content": trace.get("prompt") or ""}]


def generation_cache(model_ref: str, a_hash: str | None, s=None) -> Path:
    """JSONL of finished generations for (model, adapter weights by their hash, generation settings, so who
    answered): a killed --model run started again regenerates only what is missing (greedy: a cached answer is the
    answer)."""
    key = json.dumps([model_ref, a_hash, answer_settings(s)], sort_keys=True)
    # next to the store (data/cache/evals by default), so a test's or a user's own MEND_DB keeps its own cache
    return db_path().parent / "cache" / "evals" / f"gen-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def _conversation_key(conv: list[dict]) -> str:
    return hashlib.sha256(json.dumps(conv, sort_keys=True).encode()).hexdigest()


def _read_cache(path: Path) -> dict[str, str]:
    done = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                done[row["key"]] = row["text"]
            except (ValueError, KeyError):  # a line cut short by a kill: generate it again
                continue
    return done


def _regenerate(traces, model_ref, adapter, a_hash, s, progress) -> list[str]:
    """Greedy responses for every trace, in chunks appended to the generation cache as they finish."""
    convs = [conversation(t) for t in traces]
    keys = [_conversation_key(c) for c in convs]
    path = generation_cache(model_ref, a_hash, s)
    done = _read_cache(path)
    todo = list(dict.fromkeys(k for k in keys if k not in done))  # unique, in order
    if todo:
        if done:
            console.print(f"resuming: {len(done)} generations cached, {len(todo)} to go")
        student = Student(model_ref, adapter, a_hash, s)
        _generate_into(path, {k: c for k, c in zip(keys, convs)}, todo, student, progress, done)
    return [done[k] for k in keys]


def _generate_into(path, conv_by_key, todo, student: Student, progress, done) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    chunk = student.chunk
    with _advance(progress, f"generating with {student.model_ref} {student.where}", len(todo)) as advance:
        for i in range(0, len(todo), chunk):
            part = todo[i:i + chunk]
            gens = student.generate([conv_by_key[k] for k in part], progress=False)
            with path.open("a") as f:
                f.writelines(json.dumps({"key": k, "text": g.text}) + "\n" for k, g in zip(part, gens))
            done.update((k, g.text) for k, g in zip(part, gens))
            advance(len(part))


COLUMNS = ("trace_id", "check_idx", "check_id", "check_args", "passed", "passed_loose", "score", "reason",
           "output", "details")


def score(suite, traces: list[dict], outputs: list[str] | None = None, progress: bool = False, workers: int = 1,
          settings=None):
    """Score traces (their own responses, or `outputs` in generate mode) -> a Polars frame of result rows; `output`
    is the regenerated text, NULL where the trace's own response was scored (results reference it, run_results
    joins it back). workers > 1 scores chunks in forked processes (deterministic checks only: judge checks talk to
    the DB); settings with engine = "ray" score them on Ray Data (evals/engine_ray.py), the same rows."""
    import polars as pl
    from traces.ray_engine import engine_of
    if outputs is not None:  # regenerated: the logged tool_calls are not this model's
        traces = [{**t, "response": o, "tool_calls": None} for t, o in zip(traces, outputs)]
    judged = _prefetch_judge(suite, traces, progress)
    if engine_of(settings) == "ray" and not judged:  # the judge's verdicts were prefetched into this machine's DB
        from evals.engine_ray import score_on_ray
        cols = score_on_ray(functools.partial(_score_chunk, regenerated=outputs is not None), suite, traces, settings)
    elif workers > 1 and not judged and len(traces) >= 1000:
        cols = _score_parallel(suite, traces, workers, outputs is not None)
    else:
        cols = _score_chunk(suite, _progress(traces, progress, f"scoring {suite.name}"), outputs is not None)
    return pl.DataFrame(cols, schema={"trace_id": pl.Utf8, "check_idx": pl.Int32, "check_id": pl.Utf8,
                                      "check_args": pl.Utf8, "passed": pl.Boolean, "passed_loose": pl.Boolean,
                                      "score": pl.Float64, "reason": pl.Utf8, "output": pl.Utf8, "details": pl.Utf8})


def _score_chunk(suite, traces, regenerated: bool) -> dict[str, list]:
    cols = {k: [] for k in COLUMNS}
    for trace in traces:
        response = trace.get("response") or ""
        output = response if regenerated else None
        for idx, (check_id, args) in enumerate(_checks_of(suite, trace)):
            result = run_check(check_id, response, args, trace)
            if result is None:
                continue  # not applicable to this trace
            for key, value in zip(COLUMNS, (trace["trace_id"], idx, check_id, json.dumps(args, default=str),
                                            result.passed, result.passed_loose, float(result.score), result.reason,
                                            output, json.dumps(result.details) if result.details else None)):
                cols[key].append(value)
    return cols


class TraceMetadataError(ValueError):
    """A trace whose metadata cannot name its checks; the message names the suite and the trace."""


def _checks_of(suite, trace: dict) -> list[tuple[str, dict]]:
    """The trace's checks. Metadata of the wrong shape (3 instruction ids but 2 kwargs, a `checks` entry that is not
    an object) fails the run, which is then marked failed, with the suite and the trace named: the bare "metadata
    has 3 instruction ids but 2 kwargs entries" said neither, in a nightly's ledger or on the terminal."""
    try:
        return suite.checks_for(trace)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise TraceMetadataError(f"suite {suite.name}: trace {trace['trace_id']}: its metadata cannot name its checks "
                                 f"({type(e).__name__}: {e}); fix that trace's metadata or leave it out with the "
                                 "suite's `select`") from None


_FORK_STATE: tuple | None = None  # (suite, traces, regenerated) inherited by forked workers, so nothing is pickled but indices


def _score_range(bounds: tuple[int, int]) -> dict[str, list]:
    suite, traces, regenerated = _FORK_STATE
    return _score_chunk(suite, traces[bounds[0]:bounds[1]], regenerated)


def _score_parallel(suite, traces, workers: int, regenerated: bool) -> dict[str, list]:
    import multiprocessing
    global _FORK_STATE
    ifeval_check("punctuation:no_comma", "warm", {}, "")  # import lm-eval once, before forking
    _FORK_STATE = (suite, traces, regenerated)
    step = max(250, len(traces) // (workers * 4))
    bounds = [(i, min(i + step, len(traces))) for i in range(0, len(traces), step)]
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            parts = pool.map(_score_range, bounds)
    finally:
        _FORK_STATE = None
    return {k: [v for part in parts for v in part[k]] for k in COLUMNS}


def score_workers(s, n_traces: int) -> int:
    if s.score_workers:
        return int(s.score_workers)
    return min(4, os.cpu_count() or 1) if n_traces >= 1000 else 1


def _prefetch_judge(suite, traces, progress) -> None:
    items = [(t.get("response") or "", args, t) for t in traces
             for check_id, args in _checks_of(suite, t) if check_id == "judge"]
    if items:
        from evals.checks_judge import prefetch
        prefetch(items, progress=progress)
    return bool(items)


def _progress(items, enabled: bool, label: str):
    if not enabled or len(items) < 500:
        yield from items
        return
    with _advance(True, label, len(items)) as advance:
        for i, item in enumerate(items):
            yield item
            if i % 200 == 199 or i == len(items) - 1:  # every 200 items, and the rest: a log sees "done"
                advance(i % 200 + 1)


@contextlib.contextmanager
def _advance(enabled: bool, label: str, total: int):
    """`advance(k)` on a bar on a terminal or plain lines in a log (traces.progress), on stderr; or a no-op."""
    if not enabled:
        yield lambda k: None
        return
    with progress_mod.progress(console, transient=True) as bar:
        task = bar.add_task(safe(label), total=total)
        yield lambda k: bar.advance(task, k)


def _stream(run_id, suite, plan: Plan, model_ref, adapter, a_hash, s, progress, workers) -> None:
    """Score the plan's traces one Arrow record batch at a time (memory bounded by the batch, not the store), every
    batch's results and the 'complete' status in one transaction: a crash leaves no half-finished 'complete' run,
    and a COMMIT that fails (a full disk) none at all, with an error naming the run and the database. DuckDB writes
    a large transaction's rows to the file as row groups fill, so the transaction is not held in memory either."""
    written = 0
    with store.connect() as con, contextlib.closing(con.cursor()) as reader:
        batches = reader.sql(plan.sql, params=plan.params).to_arrow_reader(BATCH)  # its own connection: streams
        try:
            with store.transaction(con):
                for batch in batches:
                    traces = batch.to_pylist()
                    outputs = _regenerate(traces, model_ref, adapter, a_hash, s, progress) if model_ref else None
                    written += _insert(con, run_id, score(suite, traces, outputs, progress=progress, workers=workers,
                                                                  settings=s))
                con.execute("UPDATE eval_runs SET status = 'complete', finished_at = now() WHERE run_id = ?",
                            [run_id])
        except duckdb.Error as e:
            raise store.write_failed(f"evals run {run_id} (suite {suite.name})", f"{written:,} results", e) from e


def _insert(con, run_id: str, frame) -> int:
    con.register("new_results", frame.to_arrow())
    con.execute("""INSERT INTO results (run_id, trace_id, check_idx, check_id, check_args, passed,
                   passed_loose, score, reason, output, details)
                   SELECT ?, trace_id, check_idx, check_id, check_args::JSON, passed, passed_loose, score,
                          reason, output, details::JSON FROM new_results""", [run_id])
    con.unregister("new_results")
    return frame.height


# ------------------------------------------------------------------ CLI

def _args(argv):
    p = argparse.ArgumentParser(prog="python -m evals run", description=__doc__.split("\n\n")[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", action="append", help="suite name or YAML path (repeatable; default: settings suites)")
    p.add_argument("--model", help="regenerate with this model ref (folder, hub id, 'production')")
    p.add_argument("--adapter", help="LoRA adapter folder applied to --model")
    p.add_argument("--split", choices=["seed", "holdout", "all"], help="which traces (default: settings split)")
    p.add_argument("--limit", type=int, help="score only the first N selected traces (by trace_id)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv=None) -> int:
    from evals.client import EndpointError, RemoteNotAllowed
    a = _args(argv)
    s = settings_mod.load("evals")
    names = a.suite or list(s.suites)
    code = 0
    for name in names:
        started = time.perf_counter()
        try:
            run_id = run_suite(name, a.split, a.model, a.adapter, a.limit, settings=s, progress=not a.quiet)
        except SuiteSkipped as e:
            console.print(f"[yellow]{safe(str(e))}[/]", highlight=False)
            continue
        except (SuiteError, EndpointError, RemoteNotAllowed, UnknownCheck, ValueError) as e:
            console.print(f"[red]error:[/] {safe(str(e))}", highlight=False)
            code = 2
            continue
        print_run(run_id)
        console.print(f"[dim]{run_id} in {time.perf_counter() - started:.1f}s[/]")
    return code
