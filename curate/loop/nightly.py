"""python -m curate nightly [--demo] [--new] [--stop-after STAGE] [--train-anyway]

The whole regression-fix cycle, one stage after another:
  ingest (inbox) -> eval (logged traffic, every suite) -> clusters -> holdout (can the gate decide?) -> synth
  -> filter (dedup/decontam) -> accept (policy `nightly_review`: verified | sample) -> export (less the
  validation split) -> train -> validate (which trained clusters validation supports) -> focus (train again on
  those clusters only, validate again) -> gate (the claimed clusters) -> promote -> report

Each stage records running/done/skipped/failed, a summary and its duration in `nightly_ledger`. A nightly
that did not finish (killed, failed, or waiting for a review) is resumed by the next call: stages already
done are skipped and the interrupted one runs again (each stage is itself resumable: ingest skips files,
synth reuses cached teacher calls, the trainer resumes from its last checkpoint, the gate reuses complete
eval runs); a resumed nightly names the settings changed since it started (data/nightly/<id>.settings.json).
`--new` starts a fresh nightly instead. A file lock (data/nightly.lock) keeps two nightlies
from running at once and names the pid holding it.

Exit codes: 0 every stage ran; 1 a stage failed (the next call resumes it); 2 another nightly holds the lock;
3 waiting for a review; 4 every stage ran, but an inbox file failed to ingest or stored nothing (every item
quarantined). One bad file never holds the night back: it is named in the ingest stage's summary and the report;
the next nightly tries a failed file again, not one that stored nothing (the same bytes would be quarantined again);
5 stopped before synthesis because the gate could not decide for the chosen clusters (the holdout stage,
curate.loop.holdout, names the fix; `--train-anyway` or `nightly_train_anyway = true` goes on): the later stages are
recorded skipped, the report is written, and the next call starts a new nightly.

`--demo` applies configs/demo.toml (demo-sized settings for every stage, as MEND_<STAGE>_<KEY> environment
variables, unless already set) and first copies the committed sample traffic into the inbox.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.table import Table

from curate.accept import accept_verified
from curate.export import export
from curate.filters import run_filters
from curate.loop.claims import stage_validate
from curate.loop.focus import gated, stage_focus
from curate.loop.holdout import stage_holdout
from curate.loop.profile import apply_profile, settings_changed
from curate.loop.report import write_report
from curate.loop.validation import validation_groups
from curate.review.screen import main as review_main
from curate.synth.driver import synthesize
from evals import registry
from evals.clusters import build_clusters, print_clusters
from evals.gate import GateError, run_gate
from evals.gate_report import print_result
from evals.runner import SuiteSkipped, run_suite
from traces import store
from traces.ingest import ingest_inbox, problem
from traces.scrub import scrub_text
from traces.settings import load, project_root, resolve_path
from traces.terminal import safe

console = Console()
DEMO_CONFIG = "configs/demo.toml"
SAMPLE_TRAFFIC = "examples/traffic/sample-traffic.jsonl.gz"


FAILED_FILES = 4  # exit code: every stage ran, but inbox files failed to ingest or stored nothing (in the report)
STOPPED = 5  # exit code: a stage stopped the night (the holdout stage: the gate could not decide)
ALWAYS = ("report",)  # stages that run after a stop too


class StageError(RuntimeError):
    pass


class Waiting(RuntimeError):
    """A stage needs a person (e.g. the sampled review) before the nightly can go on."""


@dataclass
class Context:
    nightly_id: str
    demo: bool = False
    done: dict = field(default_factory=dict)   # stage -> summary of stages finished in this nightly
    console: Console = console
    train_anyway: bool = False  # go on when the holdout stage says the gate cannot decide
    stopped: str | None = None  # "stage: why" once a stage's summary said `stop`
    memo: dict = field(default_factory=dict)  # what one stage computed for a later one (lost on resume: recomputed)


# ---------------------------------------------------------------- lock

class NightlyLocked(RuntimeError):
    pass


def lock(path: Path | None = None):
    """A held filelock on data/nightly.lock; the holder's pid and start time go into nightly.lock.holder."""
    from filelock import FileLock, Timeout
    path = path or resolve_path("data/nightly.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = path.with_suffix(".lock.holder")
    fl = FileLock(str(path))
    try:
        fl.acquire(timeout=0)
    except Timeout:
        who = holder.read_text().strip() if holder.exists() else "an unknown process"
        raise NightlyLocked(f"another nightly is running ({who}); lock file {path}. "
                            "Wait for it, or stop that process.") from None
    holder.write_text(f"pid {os.getpid()} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
    return fl


# ---------------------------------------------------------------- ledger

def ledger(nightly_id: str) -> dict[str, dict]:
    with store.connect(read_only=True) as con:
        rows = con.execute("""SELECT stage, status, summary, started_at, finished_at FROM nightly_ledger
                              WHERE nightly_id = ? ORDER BY started_at""", [nightly_id]).fetchall()
    return {r[0]: {"status": r[1], "summary": json.loads(r[2]) if r[2] else {}, "started_at": r[3],
                   "finished_at": r[4]} for r in rows}


def _record(nightly_id: str, stage: str, status: str, summary: dict | None = None, start: bool = False) -> None:
    with store.connect() as con:
        if start:
            con.execute("""INSERT OR REPLACE INTO nightly_ledger (nightly_id, stage, status, summary, started_at)
                           VALUES (?, ?, ?, ?, now())""", [nightly_id, stage, status, json.dumps(summary or {})])
        else:
            con.execute("""UPDATE nightly_ledger SET status = ?, summary = ?, finished_at = now()
                           WHERE nightly_id = ? AND stage = ?""",
                        [status, json.dumps(summary or {}, default=str), nightly_id, stage])


def unfinished_nightly(stage_names: list[str], demo: bool = False) -> str | None:
    """The newest nightly (demo or not) whose last stage is not done: the one to resume."""
    with store.connect(read_only=True) as con:
        row = con.execute("""SELECT nightly_id, bool_or(stage = ? AND status IN ('done', 'skipped'))
                             FROM nightly_ledger WHERE starts_with(nightly_id, ?)
                             GROUP BY nightly_id ORDER BY max(started_at) DESC LIMIT 1""",
                          [stage_names[-1], "demo-" if demo else "nightly-"]).fetchone()
    return row[0] if row and not row[1] else None


def new_nightly_id(demo: bool) -> str:
    return f"{'demo' if demo else 'nightly'}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:4]}"


# ---------------------------------------------------------------- running stages

def run_stages(stages: list[tuple[str, Callable]], ctx: Context, stop_after: str | None = None) -> int:
    """Run every stage not yet done in this nightly; returns 0 when all finished, 1 on failure, 3 if waiting,
    5 when a stage's summary said `stop` (the stages after it, but ALWAYS, are recorded skipped with its reason)."""
    seen = ledger(ctx.nightly_id)
    for name, fn in stages:
        if seen.get(name, {}).get("status") in ("done", "skipped"):
            ctx.done[name] = seen[name]["summary"]
            if seen[name]["summary"].get("stop"):  # resumed after the stop: the stages after it stay skipped
                ctx.stopped = f"{name}: {seen[name]['summary']['stop']}"
            if name == stop_after:  # a resumed nightly stops where it was told to, too
                break
            continue
        _record(ctx.nightly_id, name, "running", start=True)
        if ctx.stopped and name not in ALWAYS:
            _record(ctx.nightly_id, name, "skipped", {"why": f"stopped at {ctx.stopped}"})
            continue
        started = time.perf_counter()
        ctx.console.rule(f"[bold]{name}[/]")
        try:
            summary = fn(ctx) or {}
        except Waiting as e:
            _record(ctx.nightly_id, name, "waiting", {"waiting": str(e)})
            ctx.console.print(f"[yellow]waiting:[/] {safe(str(e))}")
            return 3
        except Exception as e:  # any stage error: recorded, shown, nightly stops (resume later)
            error = scrub_text(f"{type(e).__name__}: {e}")  # it may quote the value at fault, a key in a log
            _record(ctx.nightly_id, name, "failed", {"error": error})
            ctx.console.print(f"[red]stage {name} failed:[/] {safe(error)}")
            return 1
        summary["seconds"] = round(time.perf_counter() - started, 1)
        status = "skipped" if summary.pop("skipped", False) else "done"
        _record(ctx.nightly_id, name, status, summary)
        ctx.done[name] = summary
        if summary.get("stop"):
            ctx.stopped = f"{name}: {summary['stop']}"
            ctx.console.print(f"[red]the nightly stops after {name}:[/] {safe(summary['stop'])}", highlight=False)
        if name == stop_after:
            break
    return STOPPED if ctx.stopped else 0


def stage_table(nightly_id: str) -> Table:
    table = Table(title=f"nightly {nightly_id}")
    for col in ["stage", "status", "seconds", "summary"]:
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for stage, row in ledger(nightly_id).items():
        summary = {k: v for k, v in row["summary"].items() if k != "seconds"}
        secs = row["summary"].get("seconds", "")
        colour = {"done": "green", "skipped": "dim", "failed": "red", "waiting": "yellow"}.get(row["status"], "")
        table.add_row(stage, f"[{colour}]{row['status']}[/]" if colour else row["status"], str(secs),
                      safe(_short(summary)))
    return table


def _short(summary: dict, width: int = 100) -> str:
    text = ", ".join(f"{k}={v}" for k, v in summary.items())
    return text if len(text) <= width else text[:width - 1] + "…"


# ---------------------------------------------------------------- the stages
# One calling convention: every stage calls the next package's Python function in this process, never its CLI
# in a subprocess. The ids a stage made (eval runs, clusters, the training set, the train run, the decision)
# come back as values and go forward in `ctx.done`, so no stage re-queries "the newest" row, and errors come
# back as exceptions of their own class. Heavy libraries (torch, the teacher server) are still started by the
# stage that needs them; the teacher server runs in its own process because it is a server.

def stage_ingest(ctx: Context) -> dict:
    """The inbox's new files. One that fails (unreadable, truncated, refused) or stores nothing (every item
    quarantined: a wrong format, a broken exporter) does not hold the night back: the stage is done with the
    others, names it under `failed_files`, and the nightly exits 4 once every stage ran. The next nightly tries a
    failed file again (only `complete` files are skipped), not one that stored nothing."""
    if ctx.demo:
        copy_sample_traffic()
    summaries = ingest_inbox(console=ctx.console)
    summary = {"files": len(summaries), "stored": sum(s.counts.stored for s in summaries),
               "quarantined": sum(s.counts.quarantined for s in summaries), "traces": _trace_count()}
    failed = [problem(s) for s in summaries if problem(s)]
    if failed:
        summary["failed_files"] = failed
        ctx.console.print(f"[red]{len(failed)} inbox file(s) failed to ingest or stored nothing[/]; the nightly goes "
                          "on without them:")
        for line in failed:
            ctx.console.print(f"  {safe(line)}", highlight=False)
    return summary


def copy_sample_traffic() -> None:
    src = project_root() / SAMPLE_TRAFFIC
    inbox = resolve_path(load("traces").inbox)
    inbox.mkdir(parents=True, exist_ok=True)
    if not src.is_file():
        raise StageError(f"the demo needs the committed sample traffic {src}")
    if not (inbox / src.name).exists():
        shutil.copy2(src, inbox / src.name)


def _trace_count() -> int:
    with store.connect(read_only=True) as con:
        return con.execute("SELECT count(*) FROM traces").fetchone()[0]


def stage_eval(ctx: Context) -> dict:
    """Score the logged traffic of every suite (split all: seed failures feed clusters, holdout the gate). Each run
    scores only the traces new since the suite version's last complete run and chains to it (evals.runner), so
    the run named here stands for every trace; with nothing new, it is that run."""
    runs, n_traces = {}, _trace_count()
    for suite in load("evals").suites:
        try:
            runs[suite] = run_suite(suite, "all")
        except SuiteSkipped as e:  # a suite that cannot run here (judge without endpoint) is reported, not fatal
            runs[suite] = f"skipped: {e}"
    # a loop that checks nothing would report success while doing nothing
    if all(run.startswith("skipped") for run in runs.values()):
        raise StageError(_nothing_ran(runs))
    empty = [suite for suite, run in runs.items() if not run.startswith("skipped") and _scored(run) == 0]
    if empty:
        raise StageError(f"suite(s) {', '.join(empty)} matched none of the {n_traces} traces: the loop has nothing "
                         f"to fix. {HINT}")
    return {"runs": runs, "traces": n_traces}


HINT = ("Point [tool.mend.evals] suites at a suite that applies to your traces (README: 'Your own logs, your own "
        "checks, your own teacher').")


def _nothing_ran(runs: dict) -> str:
    if not runs:
        return f"[tool.mend.evals] suites is empty: nothing scores the traces. {HINT}"
    reasons = "; ".join(run.removeprefix("skipped: ") for run in runs.values())
    return (f"every suite was skipped, so nothing was scored ({reasons}). Give them what they need, or add a suite "
            f"that runs here. {HINT}")


def _scored(run_id: str) -> int:
    """Traces scored by the run and the runs it chains to (an incremental run may itself score none)."""
    with store.connect(read_only=True) as con:
        return con.execute("""SELECT coalesce(sum(e.n_traces), 0) FROM eval_run_chain c
                              JOIN eval_runs e ON e.run_id = c.member_run_id WHERE c.run_id = ?""",
                           [run_id]).fetchone()[0]


def stage_clusters(ctx: Context) -> dict:
    runs = [r for r in ctx.done.get("eval", {}).get("runs", {}).values() if not r.startswith("skipped")]
    if not runs:
        return {"skipped": True, "why": "no suite could run, so there are no failures to cluster"}
    # One run only, on purpose for now: the gate assigns holdout failures to the newest clustering alone
    # (evals.clusters.current_clusters), so clustering a second suite's run after this one would leave this one's
    # clusters without holdout traces to gate on. Clustering every suite needs per-suite current clusters first.
    made = build_clusters(runs[0])
    print_clusters(made, runs[0], ctx.console)
    return {"run": runs[0], "clusters": len(made)}


def stage_synth(ctx: Context) -> dict:
    """Synthesize for `max_clusters` clusters chosen by `cluster_order` (curate settings; 0: every cluster).
    Filtering is its own stage (one pass over everything synthesized)."""
    tallies = synthesize(console=ctx.console)
    return {"clusters": list(tallies), "candidates": sum(t.candidates + t.guided_candidates for t in tallies.values()),
            "verified": sum(t.verified + t.guided_verified for t in tallies.values())}


def stage_filter(ctx: Context) -> dict:
    return {"decisions": run_filters(), "examples": _example_counts()}


def stage_accept(ctx: Context) -> dict:
    s = load("curate")
    if s.nightly_review == "sample":
        if not sys.stdin.isatty():
            raise Waiting(f"review policy 'sample': run `python -m curate review --sample {s.nightly_review_sample}`"
                          " in a terminal, then `make nightly` again to resume")
        review_main(["--sample", str(s.nightly_review_sample)])
        return {"examples": _example_counts()}
    result = accept_verified()
    summary = {"accepted": result.accepted, "examples": _example_counts()}
    if result.why_waiting():  # examples only narrow checks verified (curate.accept): a person or the judge decides
        ctx.console.print(f"[yellow]{safe(result.why_waiting())}[/]", highlight=False)
        summary.update(waiting=sum(result.waiting.values()), attention=result.why_waiting())
    return summary


def _example_counts() -> dict:
    with store.connect(read_only=True) as con:
        return dict(con.execute("SELECT status, count(*) FROM examples GROUP BY 1 ORDER BY 1").fetchall())


def stage_export(ctx: Context) -> dict:
    with store.connect(read_only=True) as con:
        accepted = con.execute("SELECT count(*) FROM examples WHERE status = 'accepted'").fetchone()[0]
    if accepted == 0:  # an honest outcome, not a crash: the report says so
        return {"accepted": 0, "why": "no accepted examples to train on (see `python -m curate status`)"}
    manifest = export(exclude_groups=_validation_groups())
    return {"accepted": accepted, "exported": manifest["counts"]["example"], "training_set": manifest["out"],
            "replay": manifest["counts"]["replay"]}


def _validation_groups() -> frozenset:
    """The validate stage's groups, kept out of the training set (none when nightly_validate is off)."""
    cs = load("curate")
    if not cs.nightly_validate:
        return frozenset()
    with store.connect(read_only=True) as con:
        return validation_groups(con, cs.sweep_val_fraction)


def stage_train(ctx: Context) -> dict:
    training_set = ctx.done.get("export", {}).get("training_set")
    if not training_set:
        return {"skipped": True, "why": "no accepted examples"}
    from train.lora import (
        run as train_lora,  # imports torch: only when a nightly trains
    )
    result = train_lora(["--training-set", training_set])
    if result.status != "complete":
        raise StageError(f"training run {result.run_id} failed: {result.error}")
    m = result.metrics
    return {"train_run": result.run_id, "adapter": str(result.adapter_dir),
            **{k: m[k] for k in ("n_examples", "last_step", "final_loss", "best_eval_loss", "tokens_per_s")
               if m.get(k) is not None}}


def stage_gate(ctx: Context) -> dict:
    train, claims = gated(ctx)  # the focus stage's adapter when it trained one
    if not train.get("adapter"):
        return {"skipped": True, "why": "no new adapter to gate"}
    clusters = claims.get("claimed")  # None: the validate stage was skipped, every trained cluster is a target
    if clusters == []:
        why = claims.get("why") or "it supports none of the trained clusters"
        return {"skipped": True, "why": f"validation: {why} (see the validate stage); the holdout is not spent on "
                                        "this candidate"}
    try:
        result = run_gate(load("train").model, train["adapter"], "production", train_run=train.get("train_run"),
                          clusters=clusters)
    except GateError as e:
        return {"verdict": "ERROR", "decision_id": getattr(e, "decision_id", None), "error": str(e)}
    print_result(result, ctx.console)
    return {"verdict": result["verdict"], "decision_id": result["decision_id"],
            "failed": [r for r in result["reasons"] if r.startswith("FAIL")]}


def stage_promote(ctx: Context) -> dict:
    gate = ctx.done.get("gate", {})
    why = _not_promoting(gate)
    if why:
        return {"skipped": True, "why": why}
    with store.connect(read_only=True) as con:  # resumed after a kill between promote and ledger: no double entry
        row = con.execute("SELECT entry_id FROM registry WHERE decision_id = ? AND action = 'promote'",
                          [gate["decision_id"]]).fetchone()
    entry = row[0] if row else registry.promote(decision_id=gate["decision_id"])
    return {"entry": entry, "decision_id": gate["decision_id"]}


def _not_promoting(gate: dict) -> str | None:
    """Why this nightly does not promote, in words (None: it does)."""
    verdict = gate.get("verdict")
    if verdict is None:  # the gate stage was skipped: its summary says why
        return f"gate not run: {gate.get('why') or 'no verdict'}"
    if verdict != "PROMOTE":
        return f"gate said {verdict}"
    if not load("curate").nightly_promote:
        return ("gate said PROMOTE; nightly_promote is false, so promoting is left to `python -m evals registry "
                f"promote --decision {gate.get('decision_id')}`")
    return None


def stage_report(ctx: Context) -> dict:
    path = write_report(ctx.nightly_id, console=ctx.console)
    return {"report": str(path)}


STAGES: list[tuple[str, Callable]] = [
    ("ingest", stage_ingest), ("eval", stage_eval), ("clusters", stage_clusters), ("holdout", stage_holdout),
    ("synth", stage_synth),
    ("filter", stage_filter), ("accept", stage_accept), ("export", stage_export), ("train", stage_train),
    ("validate", stage_validate), ("focus", stage_focus), ("gate", stage_gate), ("promote", stage_promote),
    ("report", stage_report),
]


# ---------------------------------------------------------------- CLI

def run(stages=None, demo: bool = False, new: bool = False, stop_after: str | None = None,
        profile: str | None = None, train_anyway: bool = False) -> int:
    stages = stages or STAGES
    if demo or profile:
        apply_profile(project_root() / (profile or DEMO_CONFIG))
    fl = lock()
    try:
        names = [n for n, _ in stages]
        resume = None if new else unfinished_nightly(names, demo)
        ctx = Context(resume or new_nightly_id(demo), demo=demo, train_anyway=train_anyway)
        console.print(f"{'resuming' if resume else 'starting'} nightly [bold]{ctx.nightly_id}[/]")
        changed = settings_changed(ctx.nightly_id)
        if changed:
            console.print(f"[yellow]it started under other settings[/] ({safe(', '.join(changed))}): the stages it "
                          "ran keep theirs; `python -m curate nightly --new` starts afresh", highlight=False)
        code = run_stages(stages, ctx, stop_after)
        console.print(stage_table(ctx.nightly_id))
        failed = ctx.done.get("ingest", {}).get("failed_files")
        if code == 0 and failed:
            console.print(f"[red]{len(failed)} inbox file(s) failed to ingest or stored nothing[/] (listed in the "
                          "ingest stage and the report); exit 4")
            return FAILED_FILES
        return code
    finally:
        fl.release()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m curate nightly", description=__doc__.splitlines()[0])
    ap.add_argument("--demo", action="store_true", help="demo-sized settings + the committed sample traffic")
    ap.add_argument("--profile", help=f"settings profile TOML applied as env vars (--demo uses {DEMO_CONFIG})")
    ap.add_argument("--new", action="store_true", help="start a new nightly even if the last one did not finish")
    ap.add_argument("--stop-after", choices=[n for n, _ in STAGES], help="stop after this stage")
    ap.add_argument("--train-anyway", action="store_true",
                    help="go on when the holdout is too small for the gate to decide (otherwise: exit 5 before synth)")
    args = ap.parse_args(argv)
    try:
        return run(demo=args.demo, new=args.new, stop_after=args.stop_after, profile=args.profile,
                   train_anyway=args.train_anyway)
    except NightlyLocked as e:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/] {safe(str(e))}")
        return 2
