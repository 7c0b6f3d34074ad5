"""python -m curate synth [--cluster ID | --max-clusters N [--order fixable|size]] [--per-cluster N] [--k K]
                         [--mode compose|full] [--guidance auto|never|always] [--strategies repair,constrained,sample]

Targeted synthesis per failure cluster, from the seed split only (holdout traces never seed it):
- compose (default, works with a weak teacher): mend builds the prompts itself — the cluster's failing
  seed prompts, then other seed base requests recombined with the cluster's failing instruction (fresh
  arguments from the instruction's own lm-eval builder, stored in the example's metadata) — and makes
  candidates with the strategies of curate/synth/strategies.py, cheapest first, until the cluster has
  `target_per_cluster` kept candidates: repair (no teacher call: production's failing answer and failing
  teacher samples, fixed deterministically), constrained (the teacher decodes under the check's grammar),
  sample (best-of-k; k requests with distinct seeds: servers may ignore `n`), revise (strong teachers).
- full (strong teacher): the teacher writes new requests and ideal responses as JSON.
Every candidate is verified by the checks its own metadata names (evals.checks.verify_instructions): its IFEval
instructions, and the cluster's own check as the cluster's eval run scored its failing trace (cluster_checks: a
suite's YAML `checks:`, put into the prompt's metadata `checks`), then by the quality filter (evals/quality.py);
a check that cannot run here (judge without an endpoint) fails it with a reason that says so. Failures stay in
`examples` with their reason, and every row records its strategy and source. Then the new candidates go through
`curate filter` (dedup, decontamination) unless --no-filter. The yield table shows candidates, verified and kept
per cluster and strategy; in a log (not a terminal) progress is printed as plain lines.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.synth import strategies
from curate.synth.candidates import (Budget, Prompt, candidate_row, from_trace, progress_bars,  # noqa: F401
                                     sample_requests, teacher, with_checks, write_rows)
from curate.synth.strategies import Tally
from curate.synth.full import full_mode
from evals import ifeval
from evals.ifeval import fresh_instruction
from traces import settings as settings_mod
from traces import store
from traces.terminal import safe

# ------------------------------------------------------------------ reading the seed split

def clusters(con, cluster_id: str | list[str] | None = None) -> list[dict]:
    """All clusters, or the ones named (one id or a list), largest first."""
    wanted = [cluster_id] if isinstance(cluster_id, str) else list(cluster_id or [])
    sql = "SELECT cluster_id, check_id, label, size FROM clusters"
    rows = con.execute(sql + (" WHERE list_contains(?, cluster_id)" if wanted else "")
                       + " ORDER BY size DESC, cluster_id", [wanted] if wanted else []).fetchall()
    missing = set(wanted) - {r[0] for r in rows}
    if missing:
        raise SystemExit(f"no cluster {', '.join(sorted(missing))} (run `python -m evals clusters` first)")
    return [{"cluster_id": r[0], "check_id": r[1], "label": r[2], "size": r[3]} for r in rows]


def choose_clusters(con, top: int, order: str = "fixable") -> list[str]:
    """The `top` clusters to synthesize for (0: all). By size alone, a run can spend its whole teacher budget on
    clusters its teacher cannot fix. "fixable" puts first the clusters some strategy can fix (fixable()) or whose
    past candidates verified at least `guidance_threshold` of the time (at least 8 of them), then orders by size."""
    s = settings_mod.load("curate")
    rows = con.execute("""SELECT c.cluster_id, c.check_id, c.size,
                                 coalesce(h.n, 0), coalesce(h.verified, 0) FROM clusters c
                          LEFT JOIN (SELECT c2.check_id, count(*) AS n,
                                            count(*) FILTER (WHERE e.status <> 'failed_verification') AS verified
                                     FROM examples e JOIN clusters c2 USING (cluster_id) GROUP BY 1) h
                          USING (check_id)
                          ORDER BY c.size DESC, c.cluster_id""").fetchall()
    names = set(s.strategies)
    if order == "fixable":  # stable: size order kept within each group
        rows.sort(key=lambda r: not (fixable(r[1], names, s.layout_targets)
                                     or (r[3] >= 8 and r[4] / r[3] >= s.guidance_threshold)))
    return [r[0] for r in (rows[:top] if top > 0 else rows)]


def fixable(check_id: str, names, layout_targets: bool = True) -> bool:
    """Whether a strategy among `names` can force this check whatever the teacher writes: a deterministic repair
    (curate.synth.repair.FIXES; fluent: a loop cut where it starts), a grammar (curate.synth.constraints) or a token
    ban (curate.synth.guidance.steerable). A layout repair counts only when `layout_targets` lets export train on
    it: otherwise its cluster would take a place among `max_clusters` and give the trainer nothing."""
    from curate.export import LAYOUT_CHECKS
    from curate.synth.constraints import constraint_for
    from curate.synth.guidance import steerable
    from curate.synth.repair import FIXES
    repairable = check_id in FIXES and (layout_targets or check_id not in LAYOUT_CHECKS)
    if "repair" in names and (repairable or check_id == "fluent"):  # fluent: a loop is cut where it starts
        return True
    if "constrained" in names:
        if steerable(check_id):
            return True
        with contextlib.suppress(Exception):  # not an IFEval id, or kwargs its builder must draw
            return constraint_for([check_id], [{}]) is not None
    return False


def failing_seed_traces(con, cluster_id: str) -> list[dict]:
    """The cluster's members from the seed split; both the membership and the trace must say seed. Each carries
    its request's tools and params and the cluster's check as its suite ran it on that trace (cluster_checks)."""
    rows = con.execute("""
        SELECT DISTINCT t.trace_id, t.messages, t.prompt, t.metadata, t.response, t.usage, t.params, t.tools
        FROM cluster_members m JOIN traces t ON t.trace_id = m.trace_id
        WHERE m.cluster_id = ? AND m.split = 'seed' AND t.split = 'seed'
        ORDER BY t.trace_id""", [cluster_id]).fetchall()
    checks = cluster_checks(con, cluster_id)
    return [{**_trace(r[:5]), "finish_reason": logged_finish(r[5], r[6]), "checks": checks.get(r[0], []),
             "request": {k: json.loads(v) for k, v in (("params", r[6]), ("tools", r[7])) if v}} for r in rows]


def cluster_checks(con, cluster_id: str) -> dict[str, list[dict]]:
    """trace id -> [{"check", "args"}]: the cluster's check with the arguments its eval run scored each seed member
    with (results). A suite's own `checks:` list lives in no trace's metadata, so this is what verifies a candidate
    for a cluster of a YAML suite (regex, tool_calls, judge, ...)."""
    rows = con.execute("""
        SELECT DISTINCT r.trace_id, r.check_idx, r.check_id, r.check_args::VARCHAR
        FROM cluster_members m JOIN clusters c ON c.cluster_id = m.cluster_id
        JOIN run_results r ON r.run_id = c.run_id AND r.trace_id = m.trace_id AND r.check_id = c.check_id
        WHERE m.cluster_id = ? AND m.split = 'seed' ORDER BY r.trace_id, r.check_idx""", [cluster_id]).fetchall()
    out: dict[str, list[dict]] = {}
    for trace_id, _, check_id, args in rows:
        spec = {"check": check_id, "args": json.loads(args) if args else {}}
        if spec not in out.setdefault(trace_id, []):
            out[trace_id].append(spec)
    return out


def logged_finish(usage, params) -> str | None:
    """"length" when the logged completion used its whole token budget (the answer was cut), "stop" when it used
    less, None when the log does not say (no usage or no max_tokens)."""
    usage, params = json.loads(usage) if usage else {}, json.loads(params) if params else {}
    used = (usage or {}).get("completion_tokens")
    limit = (params or {}).get("max_tokens") or (params or {}).get("max_completion_tokens")
    if not isinstance(used, int) or not isinstance(limit, int):
        return None
    return "length" if used >= limit else "stop"


def seed_traces_with_instructions(con, limit: int = 2000) -> list[dict]:
    """Seed traces whose metadata lists instructions (their base request can be recovered), with the base
    request clustering stored for them (trace_base_requests)."""
    rows = con.execute("""
        SELECT t.trace_id, t.messages, t.prompt, t.metadata, t.response, b.base_request, b.trace_id IS NOT NULL
        FROM traces t LEFT JOIN trace_base_requests b ON b.trace_id = t.trace_id
        WHERE t.split = 'seed' AND json_array_length(json_extract(t.metadata, '$.instruction_id_list')) > 0
        ORDER BY t.trace_id LIMIT ?""", [limit]).fetchall()
    return [_trace(r) for r in rows]


def _trace(r) -> dict:
    trace = {"trace_id": r[0], "messages": json.loads(r[1]), "prompt": r[2],
             "metadata": json.loads(r[3]) if r[3] else {}, "response": r[4]}
    if len(r) > 6 and r[6]:  # clustering stored its base request (possibly NULL: none could be found)
        trace["base_request"] = r[5]
    return trace


# ------------------------------------------------------------------ composing prompts

def base_request(trace: dict) -> str | None:
    """The request without its verifiable instructions (evals.ifeval.base_request): the one clustering stored
    (trace_base_requests), else computed here. Computing it here is the fallback for traces without a stored
    row: seed traces that failed no check (never clustered) and traces clustered before m009_base_request.
    None: no instruction to strip, or a description that cannot be found."""
    if "base_request" in trace:
        return trace["base_request"]
    return ifeval.base_request(trace["prompt"], trace["metadata"])


def compose_prompts(con, cluster: dict, per_cluster: int, failing_share: float = 1.0) -> list[Prompt]:
    """Failing seed prompts first (up to failing_share of per_cluster), then other seed bases + the cluster's
    instruction alone, up to per_cluster. Failing prompts keep production's context but carry 1-3 other
    instructions a candidate must also pass (a weak teacher rarely passes them all: the demo's guided
    no-comma samples verified 3 of 16, failing mostly on the other instructions); single-instruction
    recombinations teach the cluster's check itself, which is what the gate measures on the holdout."""
    failing = failing_seed_traces(con, cluster["cluster_id"])
    n_failing = per_cluster if failing_share >= 1 else max(1, round(per_cluster * failing_share))
    prompts = [from_trace(t, cluster["check_id"]) for t in failing[:n_failing]]
    used_bases = {(t["metadata"] or {}).get("base_id") for t in failing}
    for t in seed_traces_with_instructions(con):
        if len(prompts) >= per_cluster:
            break
        base_id = (t["metadata"] or {}).get("base_id") or t["trace_id"]
        base = base_request(t)
        if base is None or base_id in used_bases:
            continue
        fresh = fresh_instruction(cluster["check_id"], base, f"mend-compose:{cluster['cluster_id']}:{t['trace_id']}")
        if fresh is None:
            break  # not an IFEval instruction: only the failing prompts themselves can be re-answered
        used_bases.add(base_id)
        desc, kwargs = fresh
        text = f"{base} {desc}"
        md = {"base_id": base_id, "instruction_id_list": [cluster["check_id"]], "kwargs": [kwargs],
              "base_request": base, "composed_from": t["trace_id"]}
        prompts.append(Prompt([{"role": "user", "content": text}], text, md, t["trace_id"], desc))
    more = per_cluster - len(prompts)  # too few other bases (or no IFEval builder): more failing prompts
    prompts += [from_trace(t, cluster["check_id"]) for t in failing[n_failing:n_failing + max(more, 0)]]
    return prompts


# ------------------------------------------------------------------ compose mode

def compose_cluster(con_prompts: list[Prompt], cluster: dict, client, s, k: int, budget: Budget,
                    progress, guide: dict | None = None) -> tuple[list, list, int]:
    """The sample strategy alone on one cluster with a client already made (k samples per prompt, no target);
    returns (rows written, [], errors)."""
    import dataclasses
    s = dataclasses.replace(s, k=k, target_per_cluster=0, strategies=("sample",))
    job = strategies.Job(cluster, con_prompts, [], Tally(cluster["label"], cluster["check_id"]))
    env = strategies.Env(s, budget, progress, strategies.FixedTeacher(client), "none", ("sample",))
    task = progress.add_task(safe(f"sample {cluster['label'][:40]}"), total=len(con_prompts) * k)
    rows = strategies.sample(job, env, task=task)
    return rows, [], job.tally.errors


# ------------------------------------------------------------------ driver

def synthesize(cluster_id: str | list[str] | None = None, per_cluster: int | None = None, k: int | None = None,
               mode: str | None = None, guidance: str | None = None, console: Console | None = None,
               max_clusters: int | None = None, order: str | None = None,
               strategy_names: list[str] | None = None) -> dict:
    """Run synthesis for the named clusters, else for `max_clusters` chosen by `cluster_order` (0: all);
    returns {cluster_id: Tally}."""
    s = settings_mod.load("curate", {"per_cluster": per_cluster, "k": k, "mode": mode, "guidance": guidance,
                                     "max_clusters": max_clusters, "cluster_order": order,
                                     "strategies": tuple(strategy_names) if strategy_names else None})
    console = console or Console()
    from evals.checks import load_check_modules
    load_check_modules()  # a suite's own checks from check_modules verify candidates too
    if s.mode == "compose":
        strategies.active(s)  # an unknown strategy name fails before any work
    with store.connect() as con:
        todo = clusters(con, cluster_id or choose_clusters(con, s.max_clusters, s.cluster_order))
        prompts = {c["cluster_id"]: _prompts_for(con, c, s) for c in todo}
        failing = {c["cluster_id"]: failing_seed_traces(con, c["cluster_id"]) for c in todo} \
            if s.mode == "compose" else {}
    if not todo:
        console.print("no clusters: run `python -m evals clusters` first")
        return {}
    budget = Budget(s.max_calls_total, s.max_cost_usd, minutes=s.synth_minutes, turn_calls=s.synth_turn_calls)
    tallies = {c["cluster_id"]: Tally(c["label"], c["check_id"]) for c in todo}
    if s.mode == "full":
        full_mode(todo, prompts, s, budget, tallies, console)
    else:
        jobs = [strategies.Job(c, prompts[c["cluster_id"]], failing[c["cluster_id"]], tallies[c["cluster_id"]])
                for c in todo]
        with progress_bars(console) as progress:
            strategies.run(jobs, s, budget, progress)
    show_yield(tallies, budget, console, s.target_per_cluster if s.mode == "compose" else 0)
    return tallies


def _prompts_for(con, cluster: dict, s) -> list:
    """compose: Prompts to answer; full: the failing seed traces the teacher writes new requests from."""
    if s.mode == "compose":
        return compose_prompts(con, cluster, s.per_cluster, s.failing_share)
    return failing_seed_traces(con, cluster["cluster_id"])


def show_yield(tallies: dict, budget: Budget, console: Console, target: int = 0) -> None:
    """One row per cluster and strategy: candidates written, verified (passed every check), kept (verified and
    fluent: status `verified`, on to dedup/decontamination), then one total row per strategy."""
    table = Table(title="synthesis yield per cluster and strategy" + (f" (target {target} kept)" if target else ""))
    for col in ("cluster", "check", "strategy", "candidates", "verified", "kept", "errors"):
        table.add_column(col, justify="left" if col in ("cluster", "check", "strategy") else "right")
    totals: dict[str, list] = {}
    for cid, t in tallies.items():  # ids, not labels: the table must stay readable in 80 columns
        rows = [(name, c) for name, c in t.by_strategy.items() if c.candidates] or [("-", strategies.Counts())]
        for i, (name, c) in enumerate(rows):
            table.add_row(escape(cid) if i == 0 else "", escape(t.check_id) if i == 0 else "", name,
                          str(c.candidates), _share(c.verified, c.candidates), _share(c.kept, c.candidates),
                          str(t.errors) if i == 0 else "")
            if name != "-":
                tot = totals.setdefault(name, [0, 0, 0])
                tot[0], tot[1], tot[2] = tot[0] + c.candidates, tot[1] + c.verified, tot[2] + c.kept
    for name, (n, v, k) in totals.items():
        table.add_row("[bold]all[/]", "", name, str(n), _share(v, n), _share(k, n), "")
    console.print(table)
    for cid, t in tallies.items():
        for note in t.notes:
            console.print(f"{escape(cid)}: {safe(note)}")
    console.print(f"teacher and student calls made: {budget.spent_calls} (cache hits are free), cost ${budget.spent_cost:.4f}")
    if budget.skipped:
        short = ", ".join(f"{name} for {n} cluster(s)" for name, n in budget.skipped.items())
        console.print(f"[yellow]budget spent:[/] {budget.why()}; not run: {short}. A re-run continues "
                      "(calls made are cached); raise the budget to reach them in one run")
    if budget.clock_turns:
        console.print(f"[yellow]the clock ended {budget.clock_turns} turn(s) before synth_turn_calls[/] "
                      f"(synth_minutes {budget.minutes:g}): what they kept depends on this machine's speed, so a "
                      "rerun elsewhere may train on other data; raise synth_minutes for a reproducible run")


def _share(n: int, total: int) -> str:
    return f"{n} ({n / total:.0%})" if total else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m curate synth", description=__doc__.split("\n")[0])
    p.add_argument("--cluster", action="append", help="only this cluster id (repeat for several)")
    p.add_argument("--max-clusters", type=int, help="target N clusters, chosen by --order (settings max_clusters; 0: all)")
    p.add_argument("--order", choices=["fixable", "size"], help="how --max-clusters chooses (settings cluster_order)")
    p.add_argument("--per-cluster", type=int, help="prompts per cluster (settings per_cluster)")
    p.add_argument("--k", type=int, help="samples per prompt (settings k)")
    p.add_argument("--mode", choices=["compose", "full"])
    p.add_argument("--guidance", choices=["auto", "never", "always"], help="never: no constrained strategy")
    p.add_argument("--strategies", help="comma-separated, in order (settings strategies), e.g. repair,sample")
    p.add_argument("--no-filter", action="store_true", help="skip dedup/decontamination (`curate filter`) afterwards")
    args = p.parse_args(argv)
    from curate.synth.teacher import TeacherError
    from evals.client import EndpointError, RemoteNotAllowed
    from traces.settings import SettingsError
    try:
        synthesize(args.cluster, args.per_cluster, args.k, args.mode, args.guidance,
                   max_clusters=args.max_clusters, order=args.order,
                   strategy_names=[x.strip() for x in args.strategies.split(",") if x.strip()] if args.strategies
                   else None)
    except (TeacherError, EndpointError, RemoteNotAllowed, SettingsError) as e:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}")
        return 2
    if not args.no_filter:
        from curate.filters import main as filter_main
        return filter_main([])
    return 0
