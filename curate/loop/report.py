"""The nightly report: reports/<nightly_id>/report.md and PNG plots (its command: curate/loop/report_cli.py).

Written by the last stage of `python -m curate nightly`; run by hand to rewrite a nightly's report (the newest
nightly when no id is given). It shows the stages (ledger) with each stage's wall time and the total, per-cluster
holdout pass rate before/after with Wilson 95% intervals (and the paired bootstrap interval of the delta), examples
kept and dropped per reason, the strategies that made the examples this nightly's adapter trained on (per cluster),
the training loss curve (the adapter's metrics.json), the sweep and its chosen config, the IFEval gain measured by
`python bench/bench_evals.py ifeval-gain` when it was measured for this nightly, the gate's verdict and reasons, the
lineage (the `lineage` view: traces -> clusters -> examples -> adapter -> gate) and the teacher cost per fixed
holdout failure. A rich summary is printed in the terminal.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from curate.loop.claims import claims_md
from curate.loop.report_plots import plot_clusters, plot_examples, plot_loss
from traces import store
from traces.settings import resolve_path
from traces.store import json_value
from traces.terminal import safe


# written by `python bench/bench_evals.py ifeval-gain` (bench/ is not part of the product: read by path, not imported)
IFEVAL_GAIN = "data/bench/ifeval_gain.json"
STRATEGIES = ["repair", "constrained", "sample", "revise", "full", "edited", "unknown"]  # column order


def gather(nightly_id: str) -> dict:
    """Everything the report shows, read from DuckDB (one read-only connection)."""
    with store.connect(read_only=True) as con:
        ledger = con.execute("""SELECT stage, status, summary, started_at, finished_at,
                                       epoch(finished_at - started_at) FROM nightly_ledger
                                WHERE nightly_id = ? ORDER BY started_at""", [nightly_id]).fetchall()
        stages = {r[0]: {"status": r[1], "summary": json_value(r[2], {}), "wall_s": r[5]} for r in ledger}
        gate_id = stages.get("gate", {}).get("summary", {}).get("decision_id")
        decision = _decision(con, gate_id)
        train_run = (stages.get("focus", {}).get("summary", {}).get("train_run")  # the adapter the gate judged
                     or stages.get("train", {}).get("summary", {}).get("train_run") or (decision or {}).get("train_run"))
        synthesized = stages.get("synth", {}).get("summary", {}).get("clusters")
        return {"nightly_id": nightly_id, "ledger": ledger, "stages": stages, "decision": decision,
                "train_run": train_run, "examples": _examples(con, synthesized), "synthesized": synthesized,
                "strategies": _strategies(con, train_run), "ifeval": _ifeval(nightly_id),
                "metrics": _metrics(con, train_run), "lineage": _lineage(con, train_run),
                "cost": _cost(con, train_run), "sweep": _sweep(con, train_run)}


def _decision(con, decision_id):
    if not decision_id:
        return None
    row = con.execute("""SELECT decision_id, verdict, reasons, details, candidate_ref, candidate_adapter,
                                baseline_ref, baseline_adapter, train_run_id, eval_run_ids
                         FROM gate_decisions WHERE decision_id = ?""", [decision_id]).fetchone()
    if row is None:
        return None
    keys = ["decision_id", "verdict", "reasons", "details", "candidate_ref", "candidate_adapter", "baseline_ref",
            "baseline_adapter", "train_run", "eval_runs"]
    out = dict(zip(keys, row))
    for k in ("reasons", "details", "eval_runs"):
        out[k] = json_value(out[k], {})
    return out


def _examples(con, clusters: list[str] | None) -> list[tuple]:
    """(status, reason kind, count) of the examples of the clusters this nightly synthesized for (all if unknown)."""
    return con.execute("""SELECT status, coalesce(split_part(reason, ':', 1), ''), count(*) FROM examples
                          WHERE ? IS NULL OR list_contains(?, cluster_id)
                          GROUP BY ALL ORDER BY 1, 3 DESC""", [clusters, clusters]).fetchall()


def _strategies(con, train_run) -> list[tuple]:
    """(cluster label, strategy, count) of the examples the train run trained on: its `example` items and the
    chosen examples of its DPO pairs. A NULL strategy is a reviewer's edit (edited_from set) or a row from before
    strategies were recorded (unknown)."""
    if not train_run:
        return []
    return con.execute("""
        WITH kept AS (SELECT DISTINCT example_id FROM trained_examples
                      WHERE run_id = $run AND origin IN ('example', 'pair'))
        SELECT coalesce(any_value(c.label), e.cluster_id, '?') AS label,
               coalesce(e.strategy, if(e.edited_from IS NULL, 'unknown', 'edited')) AS kind, count(*)
        FROM kept JOIN examples e USING (example_id) LEFT JOIN clusters c ON c.cluster_id = e.cluster_id
        GROUP BY e.cluster_id, kind ORDER BY label, kind""", {"run": train_run}).fetchall()


def _ifeval(nightly_id: str) -> dict | None:
    """The IFEval gain file (lm-eval, base vs a nightly's adapter), with the avg of prompt- and inst-level strict
    accuracy in %; None when it was never measured. `match`: it was measured for this nightly's adapter."""
    path = resolve_path(IFEVAL_GAIN)
    if not path.is_file():
        return None
    try:
        r = json.loads(path.read_text())
        base, cand = (100 * (m["prompt_level_strict_acc"] + m["inst_level_strict_acc"]) / 2
                      for m in (r["base"], r["adapter_metrics"]))
    except (ValueError, KeyError, TypeError) as e:
        return {"error": f"{IFEVAL_GAIN} unreadable ({type(e).__name__}: {e})"}
    return {"nightly_id": r.get("nightly_id"), "match": r.get("nightly_id") == nightly_id, "limit": r.get("limit"),
            "base": base, "adapter": cand, "delta": cand - base, "raw_base": r["base"], "raw": r["adapter_metrics"],
            "contaminated": r.get("contaminated_training_prompts"), "parity": r.get("parity")}


def _num(x, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, (int, float)) else "?"


def _metrics(con, train_run) -> dict:
    if not train_run:
        return {}
    row = con.execute("""SELECT adapter_path, metrics, json_extract_string(settings, '$.method')
                         FROM train_runs WHERE run_id = ?""", [train_run]).fetchone()
    if row is None:
        return {}
    path = resolve_path(row[0]) / "metrics.json" if row[0] else None
    metrics = json.loads(path.read_text()) if path and path.is_file() else json_value(row[1], {})
    return {**metrics, "method": row[2] or "sft"} if metrics else {}


def _lineage(con, train_run) -> dict:
    """Counts along the lineage view for this train run: traces -> clusters -> examples -> adapter -> gate."""
    if not train_run:
        return {}
    row = con.execute("""SELECT count(DISTINCT trace_id), count(DISTINCT cluster_id), count(DISTINCT example_id),
                                count(DISTINCT decision_id), any_value(adapter_path), any_value(registry_entry)
                         FROM lineage WHERE train_run_id = ?""", [train_run]).fetchone()
    return dict(zip(["traces", "clusters", "examples", "decisions", "adapter", "registry_entry"], row))


def _sweep(con, train_run) -> dict | None:
    """The latest sweep (curate/loop/sweep.py) carved from the training set this run trained on: matched by the set hash
    of the run's SFT items (train_examples without DPO pairs), which is the exported set's hash."""
    from types import SimpleNamespace

    from train.lora_data import set_hash
    if not train_run:
        return None
    items = con.execute("SELECT item_id, content_hash FROM train_examples WHERE run_id = ? AND origin <> 'pair'",
                        [train_run]).fetchall()
    if not items:
        return None
    key = set_hash([SimpleNamespace(id=i, content_hash=h) for i, h in items])
    rows = con.execute("""SELECT sweep_id, config_idx, config, run_id, status, metrics, chosen, rule FROM sweeps
                          WHERE sweep_id = (SELECT sweep_id FROM sweeps WHERE source_set_hash = ?
                                            ORDER BY created_at DESC LIMIT 1) ORDER BY config_idx""", [key]).fetchall()
    if not rows:
        return None
    return {"sweep_id": rows[0][0], "rule": rows[0][7],
            "rows": [{"config_idx": r[1], "config": json_value(r[2], {}), "run_id": r[3], "status": r[4],
                      "metrics": json_value(r[5], {}), "chosen": r[6]} for r in rows]}


def _cost(con, train_run) -> dict:
    """Teacher cost (llm_calls) of every candidate for the clusters the adapter trained on: the samples that
    failed verification or were filtered out were paid for too (the first demo counted 8 of 96 calls)."""
    if not train_run:
        return {"usd": 0.0, "calls": 0, "tokens": 0}
    usd, calls, tokens = con.execute("""
        SELECT coalesce(sum(c.cost_usd), 0), count(*), coalesce(sum(c.prompt_tokens + c.completion_tokens), 0)
        FROM llm_calls c WHERE c.request_hash IN (
            SELECT request_hash FROM examples WHERE cluster_id IN (
                SELECT e.cluster_id FROM trained_examples te JOIN examples e USING (example_id)
                WHERE te.run_id = ?))""", [train_run]).fetchone()
    return {"usd": float(usd), "calls": int(calls), "tokens": int(tokens)}


# ---------------------------------------------------------------- markdown

def _md_table(header: list[str], rows: list[list]) -> list[str]:
    """Cells are one line each (a newline in a cluster label would end the row), their `|` escaped."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(safe(c, markup=False).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines + [""]


STATS_HEADER = ["scope", "n", "before % [Wilson 95%]", "after % [Wilson 95%]", "delta pts",
                "delta 95% CI (paired bootstrap)", "fixed/broken", "McNemar p"]


def _rate(k: int, n: int, rate: float) -> str:
    from evals.stats import wilson
    lo, hi = wilson(k, n)
    return f"{rate:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def _stats_rows(decision: dict) -> list[list]:
    d = (decision or {}).get("details", {})
    groups = [(f"suite {k}", v) for k, v in (d.get("suites") or {}).items()]
    groups += [(f"cluster {v['label']}", v) for v in (d.get("clusters") or {}).values()]
    groups += [("pooled targets", d["target"])] if d.get("target") else []
    return [[name, g["n"], _rate(g["base_pass"], g["n"], g["base_rate"]), _rate(g["cand_pass"], g["n"], g["cand_rate"]),
             f"{g['delta']:+.1f}", f"[{g['ci'][0]:+.1f}, {g['ci'][1]:+.1f}]", f"{g['fixes']}/{g['breaks']}",
             f"{g['p']:.3g}"] for name, g in groups]


def fixed_failures(decision: dict) -> int:
    d = (decision or {}).get("details", {})
    return sum(g.get("fixes", 0) for g in (d.get("suites") or {}).values())


def markdown(data: dict, plots: dict) -> str:
    dec, nid = data["decision"], data["nightly_id"]
    out = [f"# mend nightly report: {nid}", ""]
    verdict = dec["verdict"] if dec else data["stages"].get("gate", {}).get("summary", {}).get("verdict", "not run")
    out += [f"**Gate verdict: {verdict}**" + (f" (decision `{dec['decision_id']}`)" if dec else ""), ""]
    out += _failed_files_md(data)
    out += _attention_md(data)
    if dec:
        out += [f"Candidate `{dec['candidate_ref']}` + `{dec['candidate_adapter'] or 'no adapter'}` vs baseline "
                f"`{dec['baseline_ref']}` + `{dec['baseline_adapter'] or 'no adapter'}`, holdout split.", ""]
        out += [f"- {safe(r, markup=False)}" for r in dec["reasons"]] + [""]
        out += ["## Holdout pass rates", ""]
        out += _md_table(STATS_HEADER, _stats_rows(dec))
        for name, g in (dec["details"].get("guards") or {}).items():
            out.append(f"- guard **{name}**: {g['summary']} ({'ok' if g['ok'] else 'FAIL'})")
        out.append("")
    out += claims_md(data["stages"].get("validate", {}).get("summary", {}))
    out += claims_md(data["stages"].get("focus", {}).get("summary", {}), "Claims of the focused adapter")
    if plots.get("clusters"):
        out += ["![pass rates](clusters.png)", ""]
    out += _stages_md(data)
    scope = (f"the {len(data['synthesized'])} clusters this nightly synthesized for" if data["synthesized"] is not None
             else "every cluster (this nightly did not synthesize)")
    out += ["## Examples kept and dropped", "", f"Examples of {scope}.", ""]
    out += _md_table(["status", "reason", "count"], [list(r) for r in data["examples"]])
    if plots.get("examples"):
        out += ["![examples](examples.png)", ""]
    out += _strategies_md(data)
    m = data["metrics"]
    out += ["## Training", ""]
    if m:
        items = "preference pairs" if m.get("method") == "dpo" else "examples"
        out += [f"Train run `{data['train_run']}` ({m.get('method', 'sft')}): {m.get('n_examples', '?')} {items}, "
                f"steps {m.get('last_step', '?')}, final loss {_num(m.get('final_loss'))}, best eval loss "
                f"{_num(m.get('best_eval_loss'))}, {_num(m.get('tokens_per_s'), 1)} tokens/s.", ""]
        if m.get("rewards/margins") is not None:  # DPO: how far from the reference, and is the chosen still likely
            out += [f"Preference figures at the last step (TRL): reward margin {_num(m.get('rewards/margins'))} "
                    f"(beta x log-ratio, nats), chosen reward {_num(m.get('rewards/chosen'))}, log-likelihood of the "
                    f"chosen answers {_num(m.get('logps/chosen'))} (falling: likelihood displacement).", ""]
    if plots.get("loss"):
        out += ["![loss](loss.png)", ""]
    out += _sweep_md(data.get("sweep"))
    out += _ifeval_md(data.get("ifeval"))
    out += _lineage_md(data)
    # labels, reasons and summaries come from models and logs: no control or bidi character reaches a reader
    return safe("\n".join(out) + "\n", newlines=True, markup=False)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unfinished"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes < 60 else f"{minutes // 60}h {minutes % 60:02d}m {secs:02d}s"


def _stage_rows(data: dict) -> list[tuple[str, dict]]:
    return [(s, st) for s, st in data["stages"].items() if s != "report"]  # the report is being written


def _wall_total(data: dict) -> str:
    """The stages' wall times added up, and first start to last finish (with any wait between resumes)."""
    total = sum(st["wall_s"] or 0 for _, st in _stage_rows(data))
    starts = [r[3] for r in data["ledger"] if r[0] != "report" and r[3]]
    ends = [r[4] for r in data["ledger"] if r[0] != "report" and r[4]]
    span = (max(ends) - min(starts)).total_seconds() if starts and ends else None
    return f"{_duration(total)} in stages" + (f", {_duration(span)} from first start to last finish" if span else "")


def failed_files(data: dict) -> list[str]:
    """The inbox files this nightly's ingest could not read or stored nothing of (curate.loop.nightly.stage_ingest)."""
    return data["stages"].get("ingest", {}).get("summary", {}).get("failed_files") or []


def attention(data: dict) -> list[str]:
    """What a stage asked a person to see: a stop (exit 5), examples waiting for review, training on regardless."""
    return [f"{stage}: {st['summary'][key]}" for stage, st in data["stages"].items()
            for key in ("stop", "attention") if st.get("summary", {}).get(key)]


def _attention_md(data: dict) -> list[str]:
    notes = attention(data)
    return ["## Needs attention", ""] + [f"- {line}" for line in notes] + [""] if notes else []


def _failed_files_md(data: dict) -> list[str]:
    failed = failed_files(data)
    if not failed:
        return []
    return ["## Inbox files that failed to ingest or stored nothing", "",
            f"{len(failed)} file(s) could not be ingested, or had every item quarantined; the nightly went on without "
            "them (exit code 4). The next nightly tries a failed file again, not one that stored nothing (its items "
            "would be quarantined again): fix the export and put the new file in the inbox. The files:", ""] + \
        [f"- {safe(line, markup=False)}" for line in failed] + [""]


def _stages_md(data: dict) -> list[str]:
    rows = [[s, st["status"], _duration(st["wall_s"]),
             ", ".join(f"{k}={v}" for k, v in st["summary"].items() if k != "seconds")[:160]]
            for s, st in _stage_rows(data)]
    return ["## Stages", ""] + _md_table(["stage", "status", "wall time", "summary"], rows) + \
        [f"Wall time: {_wall_total(data)}.", ""]


def strategy_table(rows: list[tuple]) -> tuple[list[str], list[list]]:
    """(cluster, strategy, n) rows as one row per cluster, a column per strategy, a total column and row."""
    names = sorted({r[1] for r in rows}, key=lambda n: (STRATEGIES.index(n) if n in STRATEGIES else 99, n))
    per: dict[str, dict] = {}
    for label, name, n in rows:
        per.setdefault(label, {})[name] = n
    body = [[label, *(c.get(n, 0) for n in names), sum(c.values())] for label, c in per.items()]
    total = [sum(r[i] for r in body) for i in range(1, len(names) + 2)]
    return ["cluster", *names, "total"], body + [["total", *total]]


def _strategies_md(data: dict) -> list[str]:
    out = ["## Strategies of the kept examples", ""]
    if not data["train_run"]:
        return out + ["No train run in this nightly, so no kept examples.", ""]
    if not data["strategies"]:
        return out + [f"Train run `{data['train_run']}` trained on no synthesized examples.", ""]
    out += [f"The examples train run `{data['train_run']}` trained on (its SFT examples and the chosen side of its "
            "DPO pairs), by the strategy that made them. edited: a reviewer's edit; unknown: made before "
            "strategies were recorded.", ""]
    return out + _md_table(*strategy_table(data["strategies"]))


def _ifeval_md(ife: dict | None) -> list[str]:
    if not ife:
        return []
    out = ["## IFEval (lm-eval)", ""]
    if ife.get("error"):
        return out + [ife["error"] + ".", ""]
    if not ife["match"]:
        return out + [f"The IFEval gain in `{IFEVAL_GAIN}` was measured for nightly `{ife['nightly_id']}`, "
                      "not this one.", ""]
    return out + [f"Base student vs this nightly's adapter, same lm-eval run, first {ife['limit']} IFEval prompts: "
                  f"avg prompt/inst strict {ife['base']:.1f}% -> {ife['adapter']:.1f}% "
                  f"(**{ife['delta']:+.1f} points**); {_ifeval_parts(ife)}. Training prompts sharing a 13-gram "
                  f"with these prompts: {ife['contaminated']}; mend's checks agree with lm-eval: {ife['parity']}.", ""]


def _ifeval_parts(ife: dict) -> str:
    return ", ".join(f"{name} strict {100 * ife['raw_base'][key]:.1f} -> {100 * ife['raw'][key]:.1f}"
                     for name, key in [("prompt", "prompt_level_strict_acc"), ("inst", "inst_level_strict_acc")])


def _sweep_md(sw: dict | None) -> list[str]:
    if not sw:
        return []
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    base = next((r["metrics"] for r in sw["rows"] if r["metrics"]), {})
    out = ["## Sweep", "", f"Sweep `{sw['sweep_id']}` on a validation split of this training set (seed groups only, "
           f"never the holdout): base targeted checks {pct(base.get('base_target_pass'))}%, all checks "
           f"{pct(base.get('base_checks_pass'))}%, anchor NLL "
           f"{'-' if base.get('base_anchor_nll') is None else round(base['base_anchor_nll'], 4)}."
           f" Rule: {sw['rule']}.", ""]
    rows = [[r["config_idx"], " ".join(f"{k}={v}" for k, v in r["config"].items() if k != "lora_alpha"),
             r["run_id"] or "-", pct(r["metrics"].get("target_pass")), pct(r["metrics"].get("checks_pass")),
             "-" if r["metrics"].get("anchor_nll") is None else f"{r['metrics']['anchor_nll']:.4f}",
             pct(r["metrics"].get("rise")) if r["status"] == "complete" else "-",
             "**chosen**" if r["chosen"] else r["status"]] for r in sw["rows"]]
    out += _md_table(["#", "config", "run", "target %", "checks %", "anchor NLL", "ppl rise %", ""], rows)
    return out + [f"Chosen: {chosen_config(sw)}.", ""]


def chosen_config(sw: dict) -> str:
    row = next((r for r in sw["rows"] if r["chosen"]), None)
    if row is None:
        return "none yet (no config finished within the rule)"
    return f"config {row['config_idx']} (" + " ".join(f"{k}={v}" for k, v in row["config"].items()) + \
        f"), run {row['run_id']}"


def _lineage_md(data: dict) -> list[str]:
    lin, cost = data["lineage"], data["cost"]
    fixed = fixed_failures(data["decision"])
    per_fix = f"${cost['usd'] / fixed:.4f}" if fixed else "n/a (no holdout failure fixed)"
    out = ["## Lineage and cost", ""]
    if lin:
        out += [f"{lin['traces']} failing traces -> {lin['clusters']} clusters -> {lin['examples']} examples -> "
                f"adapter `{lin['adapter']}` -> {lin['decisions']} gate decision(s)"
                + (f" -> registry entry `{lin['registry_entry']}`" if lin.get("registry_entry") else ""), ""]
        out += ["Query it yourself: `SELECT * FROM lineage WHERE train_run_id = "
                f"'{data['train_run']}'` in `data/mend.duckdb`.", ""]
    out += [f"Teacher: {cost['calls']} calls, {cost['tokens']} tokens, ${cost['usd']:.4f}; holdout failures fixed: "
            f"{fixed}; cost per fixed failure: {per_fix}.", ""]
    return out


# ---------------------------------------------------------------- entry points

def report_dir(nightly_id: str) -> Path:
    """reports/<nightly_id>; an id is one plain name, so that nothing is written outside reports/."""
    if nightly_id in ("", ".", "..") or Path(nightly_id).name != nightly_id or "\\" in nightly_id:
        raise ValueError(f"not a nightly id: {nightly_id!r}")
    return resolve_path("reports") / nightly_id


def write_report(nightly_id: str, console: Console | None = None) -> Path:
    out = report_dir(nightly_id)
    data = gather(nightly_id)
    out.mkdir(parents=True, exist_ok=True)
    plots = {"clusters": plot_clusters(data["decision"], out), "examples": plot_examples(data["examples"], out),
             "loss": plot_loss(data["metrics"], out)}
    path = out / "report.md"
    path.write_text(markdown(data, plots))
    print_summary(data, path, console or Console())
    return path


def print_summary(data: dict, path: Path, console: Console) -> None:
    dec = data["decision"]
    if dec:
        console.print(_table(f"holdout, {safe(dec['verdict'])}", STATS_HEADER, _stats_rows(dec)))
    console.print(_table("stages", ["stage", "status", "wall time"],
                         [[s, st["status"], _duration(st["wall_s"])] for s, st in _stage_rows(data)]))
    console.print(f"wall time: {_wall_total(data)}")
    for line in failed_files(data):
        console.print(f"[red]inbox file failed to ingest or stored nothing:[/] {safe(line)}", highlight=False)
    for line in attention(data):
        console.print(f"[yellow]needs attention:[/] {safe(line)}", highlight=False)
    if data["strategies"]:
        header, rows = strategy_table(data["strategies"])
        console.print(_table("kept examples by strategy", header, rows))
    for line in _extra_lines(data):
        console.print(line)
    console.print(f"report: {path}", markup=False)


def _table(title: str, header: list[str], rows: list[list]) -> Table:
    """A rich table; every cell is escaped (cluster labels and summaries come from models and logs)."""
    table = Table(title=title)
    for col in header:
        table.add_column(safe(col))
    for row in rows:
        table.add_row(*[safe(str(c)) for c in row])
    return table


def _extra_lines(data: dict) -> list[str]:
    """The sweep's choice, the IFEval gain and the teacher cost, as rich markup (untrusted text escaped)."""
    out = []
    if data.get("sweep"):
        out.append(f"sweep {safe(data['sweep']['sweep_id'])} chose {safe(chosen_config(data['sweep']))}")
    ife = data.get("ifeval")
    if ife and ife.get("error"):
        out.append(f"IFEval: {safe(ife['error'])}")
    elif ife and ife["match"]:
        out.append(f"IFEval avg prompt/inst strict {ife['base']:.1f}% -> {ife['adapter']:.1f}% "
                   f"([bold]{ife['delta']:+.1f} points[/], first {ife['limit']} prompts)")
    elif ife:
        out.append(f"IFEval gain last measured for nightly {safe(str(ife['nightly_id']))}, not this one")
    cost = data["cost"]
    out.append(f"teacher cost ${cost['usd']:.4f} over {cost['calls']} calls; "
               f"holdout failures fixed: {fixed_failures(data['decision'])}")
    return out
