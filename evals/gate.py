"""The gate: compare a candidate with a baseline on the holdout split, apply the policy, store the decision.

`run_gate` is the Python entry point (the nightly calls it); the command line and its exit codes are
evals.gate_cli, the JSON report CI reads is evals.gate_report, the statistics are evals.stats and finding an
eval run to reuse is evals.runs.

Both models are evaluated greedily on the holdout traces with every configured suite, in-process or by the served
student (`student_url`, evals.student). A complete eval run with the same (model, adapter hash, suite version,
split, generation settings, which say who answered) is reused; the rest is run.
The logged responses of the traffic count as the base model's run when the baseline is the base model
without an adapter and every holdout trace's `metadata.generation` says it was produced greedily by that
model (see `evals.runs._logged_matches`); otherwise the baseline is regenerated.

Statistics, per suite (trace-level: a trace passes when all its checks pass) and per target cluster (the
cluster's check on the holdout traces assigned to it): pass-rate delta in points, the exact two-sided
McNemar p-value on the paired results, and a paired bootstrap 95% interval of the delta.
Policy (settings `gate_*`): the target clusters improve by >= gate_min_improvement points with
p < gate_alpha (pooled over the targets by default); no suite drops by more than gate_max_regression points;
the lm-eval perplexity guard and the drift guard stay within tolerance.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

import numpy as np

from evals.clusters import assign_holdout
from evals.runner import SuiteSkipped, run_suite
from evals.runs import find_run, given_run_mismatch, holdout_results, holdout_selection
from evals.stats import compare, min_discordant
from evals.student import answer_settings
from traces import store
from traces.hashing import adapter_hash
from traces.settings import as_dict, load, resolve_path


class GateError(RuntimeError):
    """The gate cannot decide; exit code 2."""


# ---------------------------------------------------------------- eval runs

def suite_version(suite: str) -> str:
    """The suite's current version (the versioned YAML is the contract)."""
    from evals.suites import SuiteError, load as load_suite
    try:
        return str(load_suite(suite).version)
    except SuiteError as e:
        raise GateError(str(e)) from None


def run_missing(suite: str, side: Side, trace_ids: list[str] | None = None) -> str:
    """Evaluate (model, adapter) greedily on the suite's holdout traces (or these of them) with the runner.
    The side's adapter hash is passed down: the weights are hashed once per gate run, not once per suite."""
    return run_suite(suite, "holdout", model=side.ref, adapter=side.adapter, trace_ids=trace_ids,
                     a_hash=side.adapter_hash)


def check_run(con, run_id: str) -> tuple[str, str]:
    row = con.execute("SELECT status, suite_version FROM eval_runs WHERE run_id = ?", [run_id]).fetchone()
    if row is None:
        raise GateError(f"eval run {run_id} does not exist")
    if row[0] != "complete":
        raise GateError(f"eval run {run_id} is {row[0]}, not complete: resume it with `python -m evals run` "
                        "or let the gate run it")
    return row


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

def power_groups(per_cluster: dict[str, int], pooled: int, s) -> dict[str, int]:
    """The groups the target test is run on, as the policy says: name -> paired items."""
    if s.gate_target_policy == "pooled" or not per_cluster:
        return {"pooled targets": pooled}
    return {f"cluster {label}": n for label, n in per_cluster.items()}


def power_shortfall(groups: dict[str, int], s) -> str | None:
    """Why the target test could not reach alpha even if every paired item flipped (None: it could). Also asked
    before training (curate.loop.holdout), with the holdout failures as the paired items."""
    need = min_discordant(s.gate_alpha)
    if s.gate_target_policy == "any":
        small = [] if any(n >= need for n in groups.values()) else list(groups)
    else:
        small = [name for name, n in groups.items() if n < need]
    if not small:
        return None
    sizes = ", ".join(f"{name}: {groups[name]}" for name in small)
    return (f"holdout too small: the exact McNemar test needs at least {need} discordant pairs "
            f"(2 * 0.5^{need} = {2 * 0.5 ** need:.4f} < alpha {s.gate_alpha}); paired items: {sizes}")


def check_power(comp: Comparison, s) -> None:
    """Refuse (GateError) when the target test could not reach alpha even if every item flipped."""
    per = {c["label"]: c["n"] for c in comp.clusters.values()}
    why = power_shortfall(power_groups(per, comp.target["n"], s), s)
    if why:
        raise GateError(why)


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
    gen, base_ref = answer_settings(), load("train").model  # in-process or served: runs of the other never count
    for suite in suites:
        if given and suite in given:
            with store.connect(read_only=True) as con:
                why = given_run_mismatch(con, given[suite], suite, side.ref, side.adapter_hash, gen, base_ref)
            if why:
                raise GateError(f"eval run {given[suite]} given for suite {suite} is not a run of {side.ref} + "
                                f"{side.adapter or 'no adapter'}: {why}")
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
                run_id = run_missing(suite, side, subset)
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
    if (base.ref, base.adapter_hash) == (cand.ref, cand.adapter_hash):
        raise GateError(f"the candidate and the baseline are the same model ({cand.ref} + "
                        f"{cand.adapter or 'no adapter'}): there is nothing to compare")
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
