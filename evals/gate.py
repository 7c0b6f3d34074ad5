"""python -m evals gate --candidate REF [--adapter PATH] --baseline production [--suite NAME ...] [--json] [--report FILE]

PROMOTE or REJECT a candidate against a baseline on the holdout split. Exit 0 = PROMOTE, 1 = REJECT,
2 = the gate could not decide (incomplete runs, suite version mismatch, a holdout too small for the test
to ever reach alpha, a guard that failed to run, or any crash). `--json` / `--report FILE` give the decision
as a JSON object for CI (see CONTRACT below, also printed by `--help`).

Both models are evaluated greedily on the holdout traces with every configured suite. A complete eval run
with the same (model, adapter hash, suite version, split, generation settings) is reused; the rest is run.
The logged responses of the traffic count as the base model's run when the baseline is the base model
without an adapter and every holdout trace's `metadata.generation` says it was produced greedily by that
model (see `_logged_matches`); otherwise the baseline is regenerated.

Statistics, per suite (trace-level: a trace passes when all its checks pass) and per target cluster (the
cluster's check on the holdout traces assigned to it): pass-rate delta in points, the exact two-sided
McNemar p-value on the paired results, and a paired bootstrap 95% interval of the delta.
Policy (settings `gate_*`): the target clusters improve by >= gate_min_improvement points with
p < gate_alpha (pooled over the targets by default); no suite drops by more than gate_max_regression points;
the lm-eval perplexity guard and the drift guard stay within tolerance.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from evals.clusters import assign_holdout
from evals.runner import SuiteSkipped, run_suite
from evals.stats import mcnemar_exact, wilson  # noqa: F401  (wilson: used by tests and the report)
from traces import store
from traces.hashing import adapter_hash
from traces.settings import as_dict, load, resolve_path
from traces.terminal import safe
from train.generate import greedy_settings


class GateError(RuntimeError):
    """The gate cannot decide; exit code 2."""


# ---------------------------------------------------------------- statistics
def min_discordant(alpha: float) -> int:
    """Smallest n with 2 * 0.5**n < alpha: fewer paired items can never be significant."""
    return math.floor(math.log2(2 / alpha)) + 1


def paired_bootstrap(base: np.ndarray, cand: np.ndarray, iters: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the pass-rate delta in points, resampling paired items."""
    from evals.stats import paired_bootstrap as bootstrap
    _, lo, hi = bootstrap(base, cand, n_boot=iters, seed=seed)
    return 100 * lo, 100 * hi


def compare(base: np.ndarray, cand: np.ndarray, iters: int = 2000) -> dict:
    """Paired comparison of two boolean vectors over the same items."""
    base, cand = np.asarray(base, bool), np.asarray(cand, bool)
    n = len(base)
    fixes, breaks = int((~base & cand).sum()), int((base & ~cand).sum())
    b_rate = 100 * base.mean() if n else 0.0
    c_rate = 100 * cand.mean() if n else 0.0
    lo, hi = paired_bootstrap(base, cand, iters)
    return {"n": n, "base_pass": int(base.sum()), "cand_pass": int(cand.sum()),
            "base_rate": round(float(b_rate), 2), "cand_rate": round(float(c_rate), 2),
            "delta": round(float(c_rate - b_rate), 2), "fixes": fixes, "breaks": breaks,
            "p": mcnemar_exact(fixes, breaks), "ci": [round(lo, 2), round(hi, 2)]}


# ---------------------------------------------------------------- eval runs

def suite_version(suite: str) -> str:
    """The suite's current version (the versioned YAML is the contract)."""
    from evals.suites import SuiteError, load as load_suite
    try:
        return str(load_suite(suite).version)
    except SuiteError as e:
        raise GateError(str(e)) from None


def _same_gen(stored, wanted: dict, exact: bool = True) -> bool:
    """exact: the stored settings are the wanted ones; else every wanted key is present with the same value
    (a trace's metadata.generation may carry more, e.g. the model or a seed)."""
    stored = json.loads(stored) if isinstance(stored, str) else (stored or {})
    if exact:
        return stored == wanted
    return all(k in stored and stored[k] == v for k, v in wanted.items())


def find_run(con, suite: str, version: str, model_ref: str, a_hash: str | None, gen: dict,
             base_ref: str, wanted: list[str] | None = None) -> tuple[str | None, str | None]:
    """(complete run id, None) to reuse, or (None, why-not) — why-not names an incomplete run if one exists.
    With `wanted` trace ids, a run is reused only if it scored all of them."""
    rows = con.execute("""SELECT run_id, status, gen_settings FROM eval_runs
                          WHERE suite = ? AND suite_version = ? AND mode = 'generate' AND model_ref = ?
                            AND adapter_hash IS NOT DISTINCT FROM ? AND split IN ('holdout', 'all')
                          ORDER BY started_at DESC""", [suite, version, model_ref, a_hash]).fetchall()
    for run_id, status, gs in rows:
        if status == "complete" and _same_gen(gs, gen) and _covers(con, run_id, wanted):
            return run_id, None
    if a_hash is None and model_ref == base_ref:
        run_id = _logged_run(con, suite, version, model_ref, gen)
        if run_id and _covers(con, run_id, wanted):
            return run_id, None
    stale = [r[0] for r in rows if r[1] != "complete"]
    return None, (f"incomplete run {stale[0]}" if stale else "no run yet")


def _covers(con, run_id: str, wanted: list[str] | None) -> bool:
    if not wanted:
        return True
    n = con.execute("""SELECT count(DISTINCT trace_id) FROM results WHERE run_id = ?
                       AND list_contains(?, trace_id)""", [run_id, wanted]).fetchone()[0]
    return n == len(set(wanted))


def holdout_selection(suite: str, clusters: list[str], limit: int) -> list[str] | None:
    """At most `limit` holdout trace ids of the suite: members of the target clusters first (so the target
    test keeps its power), then a fixed pseudo-random order (hash of the trace id). None = all of them."""
    if limit <= 0:
        return None
    from evals.suites import load as load_suite, selection_sql
    sql, params = selection_sql(load_suite(suite), "holdout")
    with store.connect(read_only=True) as con:
        rows = con.execute(f"""SELECT s.trace_id FROM ({sql}) s ORDER BY
                                 s.trace_id IN (SELECT trace_id FROM cluster_members
                                                WHERE list_contains(?, cluster_id)) DESC,
                                 hash(s.trace_id) LIMIT {int(limit)}""", [*params, clusters]).fetchall()
    return [r[0] for r in rows]


def _logged_run(con, suite: str, version: str, model_ref: str, gen: dict) -> str | None:
    for (run_id,) in con.execute("""SELECT run_id FROM eval_runs WHERE suite = ? AND suite_version = ?
                                    AND mode = 'logged' AND status = 'complete' AND split IN ('holdout', 'all')
                                    ORDER BY started_at DESC""", [suite, version]).fetchall():
        if _logged_matches(con, run_id, model_ref, gen):
            return run_id
    return None


def _logged_matches(con, run_id: str, model_ref: str, gen: dict) -> bool:
    """Logged responses stand for the base model only if every scored holdout trace says (metadata.generation)
    it was generated by that model with the same greedy settings; `model` may also be the trace's model field."""
    rows = con.execute("""SELECT DISTINCT t.trace_id, t.model, json_extract(t.metadata, '$.generation')
                          FROM results r JOIN traces t USING (trace_id)
                          WHERE r.run_id = ? AND t.split = 'holdout'""", [run_id]).fetchall()
    if not rows:
        return False
    for _, model, g in rows:
        g = json.loads(g) if isinstance(g, str) else (g or {})
        if not g or (g.get("model") or model) != model_ref:
            return False
        if not _same_gen(g, gen, exact=False):
            return False
    return True


def run_missing(suite: str, model_ref: str, adapter: str | None, trace_ids: list[str] | None = None) -> str:
    """Evaluate (model, adapter) greedily on the suite's holdout traces (or these of them) with the runner."""
    return run_suite(suite, "holdout", model=model_ref, adapter=adapter, trace_ids=trace_ids)


def check_run(con, run_id: str) -> tuple[str, str]:
    row = con.execute("SELECT status, suite_version FROM eval_runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise GateError(f"eval run {run_id} does not exist")
    if row[0] != "complete":
        raise GateError(f"eval run {run_id} is {row[0]}, not complete: resume it with `python -m evals run` "
                        "or let the gate run it")
    return row


def holdout_results(con, run_id: str) -> dict[tuple[str, int], tuple[str, bool]]:
    """(trace_id, check_idx) -> (check_id, passed), holdout traces only (a logged run may cover 'all')."""
    rows = con.execute("""SELECT r.trace_id, r.check_idx, r.check_id, r.passed FROM results r
                          JOIN traces t USING (trace_id) WHERE r.run_id = ? AND t.split = 'holdout'""",
                       [run_id]).fetchall()
    return {(t, i): (c, bool(p)) for t, i, c, p in rows}


# ---------------------------------------------------------------- comparison

@dataclass
class Comparison:
    suites: dict = field(default_factory=dict)      # suite -> compare() stats
    clusters: dict = field(default_factory=dict)    # cluster_id -> compare() stats + label, check_id
    target: dict | None = None                      # pooled target stats
    guards: dict = field(default_factory=dict)


def suite_compare(base: dict, cand: dict, iters: int) -> dict:
    """Trace-level: a trace passes when all its checks pass; only traces scored in both runs are paired."""
    def per_trace(res):
        out = {}
        for (t, _), (_, p) in res.items():
            out[t] = out.get(t, True) and p
        return out
    b, c = per_trace(base), per_trace(cand)
    common = sorted(set(b) & set(c))
    stats = compare(np.array([b[t] for t in common]), np.array([c[t] for t in common]), iters)
    stats["unpaired"] = len(set(b) ^ set(c))
    return stats


def cluster_units(con, cluster_ids: list[str], runs: list[str]) -> dict[str, dict]:
    """cluster -> {label, check_id, traces}: holdout traces assigned to it by the failures of either compared
    run (both sides' failures, so a candidate's new failures count against it too)."""
    out = {}
    for cid in cluster_ids:
        row = con.execute("SELECT label, check_id FROM clusters WHERE cluster_id = ?", [cid]).fetchone()
        if row is None:
            raise GateError(f"unknown target cluster {cid}")
        traces = [r[0] for r in con.execute("""SELECT DISTINCT trace_id FROM cluster_members
                                               WHERE cluster_id = ? AND split = 'holdout'
                                                 AND run_id IN (SELECT unnest(?::VARCHAR[]))""",
                                            [cid, runs]).fetchall()]
        out[cid] = {"label": row[0], "check_id": row[1], "traces": traces}
    return out


def _unit_pairs(units: dict, base: dict, cand: dict) -> list[tuple[bool, bool]]:
    """Paired (base, cand) outcomes of the cluster's check on its holdout traces."""
    wanted = set(units["traces"])
    pairs = []
    for key, (check_id, b) in base.items():
        if key[0] in wanted and check_id == units["check_id"] and key in cand:
            pairs.append((b, cand[key][1]))
    return pairs


def cluster_compare(units: dict, base_by_suite: dict, cand_by_suite: dict, iters: int):
    """Per target cluster stats, and pooled stats over every target unit."""
    per, pooled = {}, []
    for cid, u in units.items():
        pairs = [p for s in base_by_suite for p in _unit_pairs(u, base_by_suite[s], cand_by_suite[s])]
        pooled += pairs
        arr = np.array(pairs, bool).reshape(-1, 2)
        per[cid] = {"label": u["label"], "check_id": u["check_id"], **compare(arr[:, 0], arr[:, 1], iters)}
    arr = np.array(pooled, bool).reshape(-1, 2)
    return per, compare(arr[:, 0], arr[:, 1], iters)


# ---------------------------------------------------------------- policy

def check_power(comp: Comparison, s) -> None:
    """Refuse (GateError) when the target test could not reach alpha even if every item flipped."""
    need = min_discordant(s.gate_alpha)
    groups = ({"pooled targets": comp.target} if s.gate_target_policy == "pooled" or not comp.clusters
              else {f"cluster {c['label']}": c for c in comp.clusters.values()})
    if s.gate_target_policy == "any":
        small = [] if any(g["n"] >= need for g in groups.values()) else list(groups)
    else:
        small = [name for name, g in groups.items() if g["n"] < need]
    if small:
        sizes = ", ".join(f"{name}: {groups[name]['n']}" for name in small)
        raise GateError(f"holdout too small: the exact McNemar test needs at least {need} discordant pairs "
                        f"(2 * 0.5^{need} = {2 * 0.5 ** need:.4f} < alpha {s.gate_alpha}); paired items: {sizes}")


def _target_ok(g: dict, s) -> bool:
    return g["delta"] >= s.gate_min_improvement and g["p"] < s.gate_alpha


def decide(comp: Comparison, s) -> tuple[str, list[str]]:
    """PROMOTE only if every rule holds; every reason (passing or failing) is returned."""
    reasons, ok = [], True
    if s.gate_target_policy == "pooled" or not comp.clusters:
        groups = {"pooled target clusters": comp.target}
    else:
        groups = {f"cluster {c['label']}": c for c in comp.clusters.values()}
    verdicts = {name: _target_ok(g, s) for name, g in groups.items()}
    for name, g in groups.items():
        mark = "ok" if verdicts[name] else "FAIL"
        reasons.append(f"{mark}: {name} {g['base_rate']:.1f}% -> {g['cand_rate']:.1f}% ({g['delta']:+.1f} pts, "
                       f"p={g['p']:.3g}; need >= +{s.gate_min_improvement} pts and p < {s.gate_alpha})")
    ok &= any(verdicts.values()) if s.gate_target_policy == "any" else all(verdicts.values())
    for suite, g in comp.suites.items():
        good = g["delta"] >= -s.gate_max_regression
        ok &= good
        reasons.append(f"{'ok' if good else 'FAIL'}: suite {suite} {g['base_rate']:.1f}% -> {g['cand_rate']:.1f}% "
                       f"({g['delta']:+.1f} pts; may drop at most {s.gate_max_regression})")
    for name, g in comp.guards.items():
        ok &= bool(g["ok"])
        reasons.append(f"{'ok' if g['ok'] else 'FAIL'}: guard {name}: {g['summary']}")
    return ("PROMOTE" if ok else "REJECT"), reasons


# ---------------------------------------------------------------- the gate

@dataclass
class Side:
    ref: str
    adapter: str | None
    adapter_hash: str | None
    runs: dict = field(default_factory=dict)  # suite -> run_id
    skipped: dict = field(default_factory=dict)  # suite -> why it could not run here


def resolve_side(ref: str, adapter: str | None) -> Side:
    from evals.registry import resolve_ref
    model_ref, adapter = resolve_ref(ref, adapter)
    try:
        return Side(model_ref, adapter, adapter_hash(adapter))
    except FileNotFoundError as e:
        raise GateError(str(e)) from None


def ensure_runs(side: Side, suites: list[str], allow_run: bool, given: dict | None = None,
                wanted: dict | None = None) -> None:
    """Fill side.runs: given run ids, else a reusable complete run, else run it (or refuse).
    wanted: suite -> the holdout trace ids to cover (None: all of the suite's holdout traces)."""
    gen, base_ref = greedy_settings(), load("train").model
    for suite in suites:
        if given and suite in given:
            side.runs[suite] = given[suite]
            continue
        subset = (wanted or {}).get(suite)
        with store.connect(read_only=True) as con:
            run_id, why = find_run(con, suite, suite_version(suite), side.ref, side.adapter_hash, gen, base_ref,
                                   subset)
        if run_id is None:
            if not allow_run:
                raise GateError(f"no complete holdout run of suite {suite} for {side.ref} "
                                f"+ {side.adapter or 'no adapter'} ({why}); run without --no-run")
            try:
                run_id = run_missing(suite, side.ref, side.adapter, subset)
            except SuiteSkipped as e:  # this suite cannot run here (e.g. the judge without an endpoint)
                side.skipped[suite] = str(e)
                continue
        side.runs[suite] = run_id


def target_clusters(con, adapter: str | None, train_run: str | None) -> tuple[list[str], str | None]:
    """The clusters the candidate's training examples targeted (trained_examples: SFT rows and the chosen
    example of each DPO pair -> examples)."""
    if train_run is None and adapter:
        row = con.execute("""SELECT run_id FROM train_runs WHERE adapter_path = ? OR adapter_path = ?
                             ORDER BY started_at DESC LIMIT 1""",
                          [adapter, str(resolve_path(adapter))]).fetchone()
        train_run = row[0] if row else None
    if train_run is None:
        return [], None
    rows = con.execute("""SELECT DISTINCT e.cluster_id FROM trained_examples te JOIN examples e
                          ON e.example_id = te.example_id WHERE te.run_id = ? AND e.cluster_id IS NOT NULL
                          ORDER BY 1""", [train_run]).fetchall()
    return [r[0] for r in rows], train_run


def build_comparison(base: Side, cand: Side, clusters: list[str], s) -> Comparison:
    comp = Comparison()
    with store.connect(read_only=True) as con:
        base_res, cand_res = {}, {}
        for suite in [x for x in base.runs if x in cand.runs]:
            vb, vc = check_run(con, base.runs[suite])[1], check_run(con, cand.runs[suite])[1]
            if vb != vc:
                raise GateError(f"suite {suite}: baseline run {base.runs[suite]} is version {vb}, candidate run "
                                f"{cand.runs[suite]} is version {vc}; the gate compares only the same version")
            base_res[suite] = holdout_results(con, base.runs[suite])
            cand_res[suite] = holdout_results(con, cand.runs[suite])
            comp.suites[suite] = suite_compare(base_res[suite], cand_res[suite], s.gate_bootstrap)
        units = cluster_units(con, clusters, [*base.runs.values(), *cand.runs.values()])
    if clusters:
        comp.clusters, comp.target = cluster_compare(units, base_res, cand_res, s.gate_bootstrap)
    else:  # no known targets (any two refs): the whole suites are the target
        pooled = [(b, cand_res[su][k][1]) for su in base_res for k, (_, b) in base_res[su].items()
                  if k in cand_res[su]]
        arr = np.array(pooled, bool).reshape(-1, 2)
        comp.target = compare(arr[:, 0], arr[:, 1], s.gate_bootstrap)
    return comp


def assign_clusters(runs: list[str]) -> None:
    """Put each run's holdout failures into the existing clusters, so both sides' failures count."""
    for run_id in runs:
        assign_holdout(run_id)


def store_decision(base: Side, cand: Side, train_run, verdict, reasons, comp: Comparison | None, s,
                   error: str | None = None) -> str:
    decision_id = f"gate-{uuid.uuid4().hex[:12]}"
    details = {"suites": comp.suites, "clusters": comp.clusters, "target": comp.target, "guards": comp.guards,
               "settings": as_dict(s), "error": error} if comp else {"error": error, "settings": as_dict(s)}
    runs = {"baseline": base.runs, "candidate": cand.runs}
    with store.connect() as con:
        con.execute("""INSERT INTO gate_decisions (decision_id, candidate_ref, candidate_adapter,
                       candidate_adapter_hash, baseline_ref, baseline_adapter, train_run_id, verdict, reasons,
                       details, eval_run_ids, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now())""",
                    [decision_id, cand.ref, cand.adapter, cand.adapter_hash, base.ref, base.adapter, train_run,
                     verdict, json.dumps(reasons), json.dumps(details, default=str), json.dumps(runs)])
    return decision_id


def run_gate(candidate: str, adapter: str | None = None, baseline: str = "production",
             baseline_adapter: str | None = None, suites: list[str] | None = None,
             clusters: list[str] | None = None, train_run: str | None = None, allow_run: bool = True,
             guards: bool = True, given_runs: dict | None = None, flags: dict | None = None) -> dict:
    """Evaluate, compare, decide and store. Returns {decision_id, verdict, reasons, comparison, ...}.
    Raises GateError (after storing an ERROR decision) when it cannot decide."""
    from train.models import ModelError
    s = load("evals", flags)
    suites = list(suites or s.suites)
    base, cand = resolve_side(baseline, baseline_adapter), resolve_side(candidate, adapter)  # before any work
    comp = None
    try:
        with store.connect(read_only=True) as con:
            if clusters is None:
                clusters, train_run = target_clusters(con, cand.adapter, train_run)
        collect_runs(base, cand, suites, clusters, s, allow_run, given_runs or {})
        comp = build_comparison(base, cand, clusters, s)
        check_power(comp, s)
        if guards:
            comp.guards = run_guards(base, cand, s)
    except (GateError, ModelError) as e:  # ModelError: e.g. an adapter trained on another base
        error = GateError(str(e))
        error.decision_id = store_decision(base, cand, train_run, "ERROR", [str(e)], comp, s, error=str(e))
        raise error from e
    verdict, reasons = decide(comp, s)
    decision_id = store_decision(base, cand, train_run, verdict, reasons, comp, s)
    return {"decision_id": decision_id, "verdict": verdict, "reasons": reasons, "comparison": comp,
            "baseline": base, "candidate": cand, "train_run": train_run}


def collect_runs(base: Side, cand: Side, suites: list[str], clusters: list[str], s, allow_run: bool,
                 given: dict) -> None:
    """Both sides' holdout runs (given, reused or run), then both sides' failures assigned to the clusters.
    With gate_max_traces, the subset is chosen after the baseline's failures are assigned (targets first)."""
    wanted = None
    if s.gate_max_traces > 0 and not given:
        wanted = {suite: holdout_selection(suite, clusters, s.gate_max_traces) for suite in suites}
    ensure_runs(base, suites, allow_run, given.get("baseline"), wanted)
    if wanted and clusters:
        assign_clusters(list(base.runs.values()))
        wanted = {suite: holdout_selection(suite, clusters, s.gate_max_traces) for suite in suites}
        base.runs = {}
        ensure_runs(base, suites, allow_run, None, wanted)  # reuses the run when it covers them (logged)
    ensure_runs(cand, suites, allow_run, given.get("candidate"), wanted)
    assign_clusters([*base.runs.values(), *cand.runs.values()])


def run_guards(base: Side, cand: Side, s) -> dict:
    from evals import guards
    out = {}
    try:
        if s.gate_lm_eval:
            out["lm-eval perplexity"] = guards.perplexity_guard(base.ref, base.adapter, cand.ref, cand.adapter,
                                                                s.gate_lm_eval_docs, s.gate_ppl_tolerance)
        if s.gate_drift_samples > 0:
            out["drift"] = guards.drift_guard(base, cand, s.gate_drift_samples, s.gate_drift_tolerance)
        if s.gate_degeneration:
            out["degeneration"] = guards.degeneration_guard(list(base.runs.values()), list(cand.runs.values()),
                                                            s.gate_degeneration_tolerance)
    except guards.GuardError as e:
        raise GateError(f"guard could not run: {e}") from e
    return out


# ---------------------------------------------------------------- terminal

def print_result(result: dict, console: Console) -> None:
    """Table, verdict and reasons. Labels come from trace text and refs from users: every one goes through
    `safe` (a `[link=…]` label must not become a live hyperlink, an ESC must not clear the screen)."""
    comp: Comparison = result["comparison"]
    cand, base = result["candidate"], result["baseline"]
    table = Table(title=safe(f"gate: {cand.ref} + {cand.adapter or 'no adapter'} vs "
                             f"{base.ref} + {base.adapter or 'no adapter'} (holdout)"))
    for col in ["scope", "n", "before %", "after %", "delta pts", "95% CI", "fixed/broken", "McNemar p"]:
        table.add_column(col, justify="left" if col == "scope" else "right")
    rows = [(f"suite {k}", v) for k, v in comp.suites.items()]
    rows += [(f"cluster {v['label']}", v) for v in comp.clusters.values()]
    rows += [("pooled targets", comp.target)] if comp.target else []
    for name, g in rows:
        table.add_row(safe(name), str(g["n"]), f"{g['base_rate']:.1f}", f"{g['cand_rate']:.1f}",
                      f"{g['delta']:+.1f}", f"[{g['ci'][0]:+.1f}, {g['ci'][1]:+.1f}]", f"{g['fixes']}/{g['breaks']}",
                      f"{g['p']:.3g}")
    console.print(table)
    colour = "green" if result["verdict"] == "PROMOTE" else "red"
    console.print(f"[bold {colour}]{result['verdict']}[/]  (decision {safe(result['decision_id'])})")
    for r in result["reasons"]:
        console.print(f"  {'[green]' if r.startswith('ok') else '[red]'}{safe(r)}[/]")


# ---------------------------------------------------------------- the CI contract: exit code and JSON report

EXIT_CODES = {"PROMOTE": 0, "REJECT": 1, "ERROR": 2}
REPORT_VERSION = 1  # bump when a key of the JSON report changes meaning or disappears

CONTRACT = """exit codes (the deployment contract):
  0  PROMOTE: deploy the candidate
  1  REJECT: the gate decided against the candidate
  2  no decision: a refusal (incomplete runs, suite version mismatch, holdout too small, a guard that could
     not run, bad arguments) or any crash; the message is on stderr. Never 1, so a crash is never read as a
     REJECT. Ctrl-C exits 130, like every mend command.

--json prints one JSON object to stdout (the table and progress go to stderr); --report FILE writes the
same object to FILE (removed first, written atomically). Keys: report_version, verdict (PROMOTE | REJECT |
ERROR), exit_code (what this process exits with: act on it), decision_id (the gate_decisions row; null if
the gate stopped before storing one), reasons (one line per rule, "ok: ..." or "FAIL: ..."), error (null,
or why there is no decision), candidate / baseline ({ref, adapter, adapter_hash, eval_runs: {suite: run
id}, skipped_suites}), train_run, suites ({suite: figures}), clusters ({cluster id: figures + label,
check_id}), target (pooled target figures), guards ({name: {ok, summary, ...}}). Figures: n, base_pass,
cand_pass, base_rate, cand_rate (%), delta (points), ci ([lo, hi] points, paired bootstrap 95%), fixes,
breaks, p (exact McNemar); suites add unpaired.

Through make: `make gate` writes this report to data/gate-report.json and the gate's own exit code to
data/gate-exit-code (make itself turns every failing recipe into 2)."""


def result_report(result: dict) -> dict:
    """The JSON report of a decided gate (PROMOTE or REJECT)."""
    comp: Comparison = result["comparison"]
    return _report(result["verdict"], result["decision_id"], result["reasons"],
                   candidate=_side_report(result["candidate"]), baseline=_side_report(result["baseline"]),
                   train_run=result["train_run"], suites=comp.suites, clusters=comp.clusters, target=comp.target,
                   guards=comp.guards)


def error_report(error: BaseException, decision_id: str | None = None) -> dict:
    """The JSON report when the gate could not decide: a refusal (GateError) or a crash."""
    why = _error_text(error)
    return _report("ERROR", getattr(error, "decision_id", None) or decision_id, [why], error=why)


def _report(verdict: str, decision_id: str | None, reasons: list[str], **parts) -> dict:
    out = {"report_version": REPORT_VERSION, "verdict": verdict, "exit_code": EXIT_CODES[verdict],
           "decision_id": decision_id, "reasons": list(reasons), "error": None, "candidate": None,
           "baseline": None, "train_run": None, "suites": {}, "clusters": {}, "target": None, "guards": {}}
    out.update(parts)
    return _plain(out)


def _side_report(side: Side) -> dict:
    return {"ref": side.ref, "adapter": side.adapter, "adapter_hash": side.adapter_hash,
            "eval_runs": dict(side.runs), "skipped_suites": dict(side.skipped)}


def _plain(x):
    """JSON-safe values: numpy scalars as Python numbers, NaN/inf as null (strict JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x if x is None or isinstance(x, (str, int, float, bool)) else str(x)


def _error_text(e: BaseException) -> str:
    if isinstance(e, GateError):
        return str(e)
    frames = traceback.extract_tb(e.__traceback__)
    where = f" (at {'/'.join(Path(frames[-1].filename).parts[-2:])}:{frames[-1].lineno})" if frames else ""
    return f"the gate crashed before deciding: {type(e).__name__}: {e}{where}"


def write_report(text: str, path: str) -> None:
    """Write atomically: a CI job reading FILE never sees half a report."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool):
    """With --json, stdout carries the JSON object alone: whatever else the gate prints (the runner's
    progress, library messages, even at the file-descriptor level) goes to stderr meanwhile."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="python -m evals gate", description=__doc__.splitlines()[0],
                                 epilog=CONTRACT, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", help="model ref (embedded name, folder, hub id or 'production'); default: the "
                                        "student with the newest trained adapter")
    ap.add_argument("--adapter", help="candidate LoRA adapter folder")
    ap.add_argument("--baseline", default="production", help="baseline model ref (default: production)")
    ap.add_argument("--baseline-adapter", help="baseline adapter folder (when the baseline is not 'production')")
    ap.add_argument("--suite", action="append", help="suite to use (repeatable; default: every configured suite)")
    ap.add_argument("--cluster", action="append", help="target cluster id (default: those the adapter trained on)")
    ap.add_argument("--train-run", help="train run whose examples define the target clusters")
    ap.add_argument("--baseline-run", action="append", default=[], metavar="SUITE=RUN", help="use this eval run")
    ap.add_argument("--candidate-run", action="append", default=[], metavar="SUITE=RUN", help="use this eval run")
    ap.add_argument("--no-run", action="store_true", help="never generate: refuse when a run is missing")
    ap.add_argument("--no-guards", action="store_true", help="skip the lm-eval and drift guards")
    for key in ["alpha", "min_improvement", "max_regression"]:
        ap.add_argument(f"--{key.replace('_', '-')}", type=float, dest=f"gate_{key}")
    ap.add_argument("--target-policy", dest="gate_target_policy", choices=["pooled", "all", "any"])
    ap.add_argument("--json", action="store_true",
                    help="print the decision as one JSON object on stdout (everything else goes to stderr)")
    ap.add_argument("--report", metavar="FILE", help="also write that JSON object to FILE")
    return ap.parse_args(argv)


def _given(pairs: list[str]) -> dict:
    out = {}
    for p in pairs:
        suite, _, run = p.partition("=")
        if not run:
            raise GateError(f"expected SUITE=RUN, got {p!r}")
        out[suite] = run
    return out


def newest_candidate() -> tuple[str, str]:
    """(base model, adapter) of the newest complete train run: what `make gate` compares by default."""
    with store.connect(read_only=True) as con:
        row = con.execute("""SELECT base_model, adapter_path FROM train_runs WHERE status = 'complete'
                             AND adapter_path IS NOT NULL ORDER BY coalesce(finished_at, started_at) DESC
                             LIMIT 1""").fetchone()
    if row is None:
        raise GateError("no --candidate given and no trained adapter yet (run `make train`)")
    return load("train").model, row[1]


def gate_from_args(args) -> dict:
    flags = {k: v for k, v in vars(args).items() if k.startswith("gate_")}
    if args.candidate is None:
        args.candidate, args.adapter = newest_candidate()
    given = {"baseline": _given(args.baseline_run), "candidate": _given(args.candidate_run)}
    return run_gate(args.candidate, args.adapter, args.baseline, args.baseline_adapter, args.suite, args.cluster,
                    args.train_run, not args.no_run, not args.no_guards, given, flags)


def main(argv=None) -> int:
    """Exit 0 PROMOTE, 1 REJECT, 2 no decision (a refusal or any crash: never REJECT's 1); see CONTRACT."""
    args = parse_args(argv)
    if args.report:
        with contextlib.suppress(OSError):  # if it cannot go, writing the new one fails too: exit 2 then
            Path(args.report).unlink(missing_ok=True)  # a stale report must never stand for this run
    decision_id = None
    with stdout_to_stderr(args.json):
        try:
            result = gate_from_args(args)
            decision_id = result["decision_id"]
            print_result(result, Console())
            payload = result_report(result)
        except Exception as e:  # a refusal (GateError) or a crash: no decision, exit 2
            payload = error_report(e, decision_id)
            Console(stderr=True, soft_wrap=True).print(
                f"[red]gate error[/] (exit 2, no decision): {safe(payload['error'], newlines=True)}", highlight=False)
    return emit(payload, args)


def emit(payload: dict, args) -> int:
    """--report FILE and --json; the exit code. A report that cannot be written is exit 2 (CI would read none)."""
    if args.report:
        try:
            write_report(json.dumps(payload, indent=2, allow_nan=False) + "\n", args.report)
        except (OSError, ValueError) as e:
            payload = {**payload, "exit_code": 2, "error": f"could not write the report {args.report}: {e}"}
            Console(stderr=True, soft_wrap=True).print(
                f"[red]gate error[/] (exit 2): {safe(payload['error'])} (the verdict was {payload['verdict']})",
                highlight=False)
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        sys.stdout.flush()
    return payload["exit_code"]
