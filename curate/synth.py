"""python -m curate synth [--cluster ID | --max-clusters N [--order fixable|size]] [--per-cluster N] [--k K]
                         [--mode compose|full] [--guidance auto|never|always]

Targeted synthesis per failure cluster, from the seed split only (holdout traces never seed it):
- compose (default, works with a weak teacher): mend builds the prompts itself — the cluster's failing
  seed prompts, then other seed base requests recombined with the cluster's failing instruction (fresh
  arguments from the instruction's own lm-eval builder, stored in the example's metadata) — and asks
  the teacher for k samples per prompt (k requests with distinct seeds; servers may ignore `n`).
- full (strong teacher): the teacher writes new requests and ideal responses as JSON.
Every candidate is verified by the checks its own metadata names (evals.checks.verify_instructions);
failures stay in `examples` with their reason. Clusters whose unguided yield is below
`guidance_threshold` are sampled again with guidance (curate/guidance.py). Then the new candidates go
through `curate filter` (dedup, decontamination) unless --no-filter.
"""
from __future__ import annotations

import argparse
import contextlib
import json
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.candidates import Budget, Prompt, candidate_row, progress_bars, run_calls, teacher, write_rows
from curate.synth_full import full_mode
from evals import ifeval
from evals.ifeval import fresh_instruction
from traces import settings as settings_mod
from traces import store
from traces.terminal import safe

@dataclass
class Tally:
    """Per-cluster counts for the yield table."""
    label: str
    check_id: str
    candidates: int = 0
    verified: int = 0
    guided_candidates: int = 0
    guided_verified: int = 0
    errors: int = 0
    notes: list = field(default_factory=list)


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
    clusters its teacher cannot fix. "fixable" puts first the clusters whose check the teacher can be steered on
    (a token ban in curate.guidance) or whose past candidates verified at least `guidance_threshold` of the
    time (at least 8 of them), then orders by size."""
    from curate.guidance import steerable
    threshold = settings_mod.load("curate").guidance_threshold
    rows = con.execute("""SELECT c.cluster_id, c.check_id, c.size,
                                 coalesce(h.n, 0), coalesce(h.verified, 0) FROM clusters c
                          LEFT JOIN (SELECT c2.check_id, count(*) AS n,
                                            count(*) FILTER (WHERE e.status <> 'failed_verification') AS verified
                                     FROM examples e JOIN clusters c2 USING (cluster_id) GROUP BY 1) h
                          USING (check_id)
                          ORDER BY c.size DESC, c.cluster_id""").fetchall()

    def fixable(check_id, n, verified) -> bool:
        return steerable(check_id) or (n >= 8 and verified / n >= threshold)
    if order == "fixable":
        rows.sort(key=lambda r: not fixable(r[1], r[3], r[4]))  # stable: size order kept within each group
    return [r[0] for r in (rows[:top] if top > 0 else rows)]


def failing_seed_traces(con, cluster_id: str) -> list[dict]:
    """The cluster's members from the seed split; both the membership and the trace must say seed."""
    rows = con.execute("""
        SELECT DISTINCT t.trace_id, t.messages, t.prompt, t.metadata, t.response
        FROM cluster_members m JOIN traces t ON t.trace_id = m.trace_id
        WHERE m.cluster_id = ? AND m.split = 'seed' AND t.split = 'seed'
        ORDER BY t.trace_id""", [cluster_id]).fetchall()
    return [_trace(r) for r in rows]


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
    prompts = [_from_trace(t, cluster["check_id"]) for t in failing[:n_failing]]
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
    prompts += [_from_trace(t, cluster["check_id"]) for t in failing[n_failing:n_failing + max(more, 0)]]
    return prompts


def _from_trace(t: dict, check_id: str) -> Prompt:
    md = {k: v for k, v in (t["metadata"] or {}).items() if k != "generation"}
    desc = ""
    with contextlib.suppress(Exception):
        for iid, kw in ifeval.instruction_specs(md):
            if iid == check_id:
                desc = ifeval.build_instruction(iid, kw, t["prompt"])[1]
    return Prompt(t["messages"], t["prompt"], md, t["trace_id"], desc)


# ------------------------------------------------------------------ requests, verification, storage

def sample_requests(p: Prompt, s, k: int, guide: dict | None = None) -> list[dict]:
    """k requests for one prompt, one per seed (the seed is part of the cache key: k distinct calls)."""
    messages = p.messages
    if guide:
        from curate.guidance import guided_messages
        messages = guided_messages(p, guide)
    base = {"messages": messages, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
    if guide and guide.get("logit_bias"):
        base["logit_bias"] = guide["logit_bias"]
    return [{**base, "seed": j} for j in range(k)]


# ------------------------------------------------------------------ the teacher

# ------------------------------------------------------------------ compose mode

def compose_cluster(con_prompts: list[Prompt], cluster: dict, client, s, k: int, budget: Budget,
                    progress, guide: dict | None = None) -> tuple[list, list, int]:
    """Ask for k samples of every prompt (within the cluster's call budget); verify; write."""
    cap = min(s.max_calls_per_cluster, s.max_examples_per_cluster)
    pairs = [(p, r) for p in con_prompts for r in sample_requests(p, s, k, guide)][:cap]
    label = f"{'guided ' if guide else ''}{cluster['label'][:40]}"
    task = progress.add_task(safe(label), total=len(pairs))
    calls = run_calls(client, [r for _, r in pairs], budget, progress, task)
    rows, checks, errors = [], [], 0
    for (p, _), call in zip(pairs, calls):
        if call.error:
            errors += 1
            if errors == 1:
                progress.console.print(f"[yellow]teacher error[/] ({escape(cluster['cluster_id'])}): "
                                       f"{escape(call.error[:300])}")
            continue
        row, ch = candidate_row(cluster, p, call, "compose", client.model, guide)
        rows.append(row)
        checks.extend(ch)
    write_rows(rows, checks)
    return rows, calls, errors


# ------------------------------------------------------------------ driver

def synthesize(cluster_id: str | list[str] | None = None, per_cluster: int | None = None, k: int | None = None,
               mode: str | None = None, guidance: str | None = None, console: Console | None = None,
               max_clusters: int | None = None, order: str | None = None) -> dict:
    """Run synthesis for the named clusters, else for `max_clusters` chosen by `cluster_order` (0: all);
    returns {cluster_id: Tally}."""
    s = settings_mod.load("curate", {"per_cluster": per_cluster, "k": k, "mode": mode, "guidance": guidance,
                                     "max_clusters": max_clusters, "cluster_order": order})
    console = console or Console()
    with store.connect() as con:
        todo = clusters(con, cluster_id or choose_clusters(con, s.max_clusters, s.cluster_order))
        prompts = {c["cluster_id"]: _prompts_for(con, c, s) for c in todo}
    if not todo:
        console.print("no clusters: run `python -m evals clusters` first")
        return {}
    budget = Budget(s.max_calls_total, s.max_cost_usd)
    tallies = {c["cluster_id"]: Tally(c["label"], c["check_id"]) for c in todo}
    if s.mode == "full":
        full_mode(todo, prompts, s, budget, tallies, console)
    else:
        _compose_all(todo, prompts, s, budget, tallies, console)
    show_yield(tallies, budget, console)
    return tallies


def _prompts_for(con, cluster: dict, s) -> list:
    """compose: Prompts to answer; full: the failing seed traces the teacher writes new requests from."""
    if s.mode == "compose":
        return compose_prompts(con, cluster, s.per_cluster, s.failing_share)
    return failing_seed_traces(con, cluster["cluster_id"])


def _compose_all(todo, prompts, s, budget, tallies, console) -> None:
    need_guide = []
    if s.guidance != "always":
        with teacher(s, continuous_batching=True) as (client, _), progress_bars(console) as progress:
            for c in todo:
                rows, calls, errors = compose_cluster(prompts[c["cluster_id"]], c, client, s, s.k, budget, progress)
                t = tallies[c["cluster_id"]]
                t.candidates, t.errors = len(rows), errors
                t.verified = sum(r["status"] == "verified" for r in rows)
                if s.guidance == "auto" and rows and t.verified / len(rows) < s.guidance_threshold:
                    need_guide.append(c)
    else:
        need_guide = list(todo)
    if need_guide and budget.calls_left > 0:
        # guided requests carry per-request logit_bias: a server without continuous batching honours it
        with teacher(s, continuous_batching=False) as (client, folder), progress_bars(console) as progress:
            _guided(need_guide, prompts, s, client, folder, budget, tallies, progress)


def _guided(need_guide, prompts, s, client, folder, budget, tallies, progress) -> None:
    from curate.guidance import guide_for
    for c in need_guide:
        guide = guide_for(c["check_id"], s, folder, c["cluster_id"])
        k = s.guidance_k or s.k
        rows, calls, errors = compose_cluster(prompts[c["cluster_id"]], c, client, s, k, budget, progress, guide)
        t = tallies[c["cluster_id"]]
        t.guided_candidates, t.errors = len(rows), t.errors + errors
        t.guided_verified = sum(r["status"] == "verified" for r in rows)


def show_yield(tallies: dict, budget: Budget, console: Console) -> None:
    table = Table(title="verification yield per cluster")
    for col in ("cluster", "check", "samples", "verified", "guided", "verified ", "errors"):
        table.add_column(col, justify="right" if col not in ("cluster", "check") else "left")
    for cid, t in tallies.items():  # ids, not labels: the table must stay readable in 80 columns
        table.add_row(escape(cid), escape(t.check_id), str(t.candidates), _share(t.verified, t.candidates),
                      str(t.guided_candidates), _share(t.guided_verified, t.guided_candidates), str(t.errors))
    console.print(table)
    console.print(f"teacher calls made: {budget.spent_calls} (cache hits are free), cost ${budget.spent_cost:.4f}")


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
    p.add_argument("--guidance", choices=["auto", "never", "always"])
    p.add_argument("--no-filter", action="store_true", help="skip dedup/decontamination (`curate filter`) afterwards")
    args = p.parse_args(argv)
    from curate.teacher import TeacherError
    from evals.client import EndpointError, RemoteNotAllowed
    try:
        synthesize(args.cluster, args.per_cluster, args.k, args.mode, args.guidance,
                   max_clusters=args.max_clusters, order=args.order)
    except (TeacherError, EndpointError, RemoteNotAllowed) as e:
        Console(stderr=True).print(f"[red]error:[/] {escape(str(e))}")
        return 2
    if not args.no_filter:
        from curate.filters import main as filter_main
        return filter_main([])
    return 0
