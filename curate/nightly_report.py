"""python -m evals.report [NIGHTLY_ID] — the nightly report: reports/<nightly_id>/report.md + PNG plots.

Written by the last stage of `python -m evals nightly`; run by hand to rewrite a nightly's report. It shows
the stages (ledger), per-cluster holdout pass rate before/after with Wilson 95% intervals, examples kept and
dropped per reason, the training loss curve (the adapter's metrics.json), the gate's verdict and reasons,
the lineage (the `lineage` view: traces -> clusters -> examples -> adapter -> gate) and the teacher cost per
fixed holdout failure. A rich summary is printed in the terminal.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from traces import store
from traces.settings import resolve_path
from traces.store import json_value
from traces.terminal import safe


def gather(nightly_id: str) -> dict:
    """Everything the report shows, read from DuckDB (one read-only connection)."""
    with store.connect(read_only=True) as con:
        ledger = con.execute("""SELECT stage, status, summary, started_at, finished_at FROM nightly_ledger
                                WHERE nightly_id = ? ORDER BY started_at""", [nightly_id]).fetchall()
        stages = {r[0]: {"status": r[1], "summary": json_value(r[2], {})} for r in ledger}
        gate_id = stages.get("gate", {}).get("summary", {}).get("decision_id")
        decision = _decision(con, gate_id)
        train_run = stages.get("train", {}).get("summary", {}).get("train_run") or (decision or {}).get("train_run")
        return {"nightly_id": nightly_id, "ledger": ledger, "stages": stages, "decision": decision,
                "train_run": train_run, "examples": _examples(con, train_run),
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


def _examples(con, train_run) -> list[tuple]:
    """(status, reason, count) of the examples of the clusters this nightly synthesized for (all if unknown)."""
    return con.execute("""SELECT status, coalesce(split_part(reason, ':', 1), ''), count(*) FROM examples
                          GROUP BY ALL ORDER BY 1, 3 DESC""").fetchall()


def _metrics(con, train_run) -> dict:
    if not train_run:
        return {}
    row = con.execute("SELECT adapter_path, metrics FROM train_runs WHERE run_id = ?", [train_run]).fetchone()
    if row is None:
        return {}
    path = resolve_path(row[0]) / "metrics.json" if row[0] else None
    if path and path.is_file():
        return json.loads(path.read_text())
    return json_value(row[1], {})


def _lineage(con, train_run) -> dict:
    """Counts along the lineage view for this train run: traces -> clusters -> examples -> adapter -> gate."""
    if not train_run:
        return {}
    row = con.execute("""SELECT count(DISTINCT trace_id), count(DISTINCT cluster_id), count(DISTINCT example_id),
                                count(DISTINCT decision_id), any_value(adapter_path), any_value(registry_entry)
                         FROM lineage WHERE train_run_id = ?""", [train_run]).fetchone()
    return dict(zip(["traces", "clusters", "examples", "decisions", "adapter", "registry_entry"], row))


def _sweep(con, train_run) -> dict | None:
    """The latest sweep (curate/sweep.py) carved from the training set this run trained on: matched by the set hash
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
                SELECT e.cluster_id FROM train_examples te JOIN examples e ON e.example_id = te.item_id
                WHERE te.run_id = ?))""", [train_run]).fetchone()
    return {"usd": float(usd), "calls": int(calls), "tokens": int(tokens)}


# ---------------------------------------------------------------- plots

def plot_clusters(decision: dict, out: Path) -> Path | None:
    from evals.stats import wilson
    clusters = (decision or {}).get("details", {}).get("clusters") or {}
    suites = (decision or {}).get("details", {}).get("suites") or {}
    groups = [(f"suite {k}", v) for k, v in suites.items()] + [(v["label"][:28], v) for v in clusters.values()]
    if not groups:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(groups)), 4))
    for offset, key, rate, colour, name in [(-0.2, "base_pass", "base_rate", "#999999", "before (baseline)"),
                                            (0.2, "cand_pass", "cand_rate", "#2a7ab0", "after (candidate)")]:
        rates, errs = [], [[], []]
        for _, g in groups:
            lo, hi = wilson(g[key], g["n"])
            rates.append(g[rate])
            errs[0].append(max(0.0, g[rate] - 100 * lo))
            errs[1].append(max(0.0, 100 * hi - g[rate]))
        ax.bar([i + offset for i in range(len(groups))], rates, 0.4, yerr=errs, capsize=3, color=colour, label=name)
    ax.set_xticks(range(len(groups)), [f"{name}\n(n={g['n']})" for name, g in groups], fontsize=7, rotation=20)
    ax.set_ylabel("holdout pass rate (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Holdout pass rate before/after, Wilson 95% intervals")
    ax.legend(fontsize=8)
    return _save(fig, out / "clusters.png")


def plot_examples(rows: list[tuple], out: Path) -> Path | None:
    if not rows:
        return None
    plt = _pyplot()
    labels = [f"{s}: {r}" if r else s for s, r, _ in rows]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.2))
    colours = ["#3a9a4a" if s == "accepted" else "#c0504d" for s, _, _ in rows]
    ax.barh(labels, [n for _, _, n in rows], color=colours)
    ax.invert_yaxis()
    ax.set_xlabel("examples")
    ax.set_title("Synthesized examples: kept (green) and dropped per reason")
    ax.tick_params(axis="y", labelsize=7)
    return _save(fig, out / "examples.png")


def plot_loss(metrics: dict, out: Path) -> Path | None:
    steps = metrics.get("steps") or []
    if not steps:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([s["step"] for s in steps], [s["loss"] for s in steps], label="train loss")
    evals = metrics.get("evals") or []
    if evals:
        ax.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title("LoRA training loss")
    ax.legend()
    return _save(fig, out / "loss.png")


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


# ---------------------------------------------------------------- markdown

def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines + [""]


def _stats_rows(decision: dict) -> list[list]:
    d = (decision or {}).get("details", {})
    groups = [(f"suite {k}", v) for k, v in (d.get("suites") or {}).items()]
    groups += [(f"cluster {v['label']}", v) for v in (d.get("clusters") or {}).values()]
    groups += [("pooled targets", d["target"])] if d.get("target") else []
    return [[name, g["n"], f"{g['base_rate']:.1f}", f"{g['cand_rate']:.1f}", f"{g['delta']:+.1f}",
             f"[{g['ci'][0]:+.1f}, {g['ci'][1]:+.1f}]", f"{g['fixes']}/{g['breaks']}", f"{g['p']:.3g}"]
            for name, g in groups]


def fixed_failures(decision: dict) -> int:
    d = (decision or {}).get("details", {})
    return sum(g.get("fixes", 0) for g in (d.get("suites") or {}).values())


def markdown(data: dict, plots: dict) -> str:
    dec, nid = data["decision"], data["nightly_id"]
    out = [f"# mend nightly report: {nid}", ""]
    verdict = dec["verdict"] if dec else data["stages"].get("gate", {}).get("summary", {}).get("verdict", "not run")
    out += [f"**Gate verdict: {verdict}**" + (f" (decision `{dec['decision_id']}`)" if dec else ""), ""]
    if dec:
        out += [f"Candidate `{dec['candidate_ref']}` + `{dec['candidate_adapter'] or 'no adapter'}` vs baseline "
                f"`{dec['baseline_ref']}` + `{dec['baseline_adapter'] or 'no adapter'}`, holdout split.", ""]
        out += [f"- {r}" for r in dec["reasons"]] + [""]
        out += ["## Holdout pass rates", ""]
        out += _md_table(["scope", "n", "before %", "after %", "delta pts", "95% CI", "fixed/broken", "McNemar p"],
                         _stats_rows(dec))
        for name, g in (dec["details"].get("guards") or {}).items():
            out.append(f"- guard **{name}**: {g['summary']} ({'ok' if g['ok'] else 'FAIL'})")
        out.append("")
    if plots.get("clusters"):
        out += ["![pass rates](clusters.png)", ""]
    out += ["## Stages", ""]
    out += _md_table(["stage", "status", "seconds", "summary"],
                     [[s, st["status"], st["summary"].get("seconds", ""),
                       ", ".join(f"{k}={v}" for k, v in st["summary"].items() if k != "seconds")[:160]]
                      for s, st in data["stages"].items() if s != "report"])  # the report is being written
    out += ["## Examples kept and dropped", ""]
    out += _md_table(["status", "reason", "count"], [list(r) for r in data["examples"]])
    if plots.get("examples"):
        out += ["![examples](examples.png)", ""]
    m = data["metrics"]
    out += ["## Training", ""]
    if m:
        out += [f"Train run `{data['train_run']}`: {m.get('n_examples', '?')} examples, steps "
                f"{m.get('last_step', '?')}, final loss {m.get('final_loss')}, best eval loss "
                f"{m.get('best_eval_loss')}, {m.get('tokens_per_s', '?')} tokens/s.", ""]
    if plots.get("loss"):
        out += ["![loss](loss.png)", ""]
    out += _sweep_md(data.get("sweep"))
    out += _lineage_md(data)
    return "\n".join(out) + "\n"


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
    return out + _md_table(["#", "config", "run", "target %", "checks %", "anchor NLL", "ppl rise %", ""], rows)


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

def write_report(nightly_id: str, console: Console | None = None) -> Path:
    data = gather(nightly_id)
    out = resolve_path("reports") / nightly_id
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
        table = Table(title=f"holdout, {safe(dec['verdict'])}")
        for col in ["scope", "n", "before %", "after %", "delta pts", "95% CI", "fixed/broken", "McNemar p"]:
            table.add_column(col)
        for row in _stats_rows(dec):
            table.add_row(*[safe(str(c)) for c in row])
        console.print(table)
    cost = data["cost"]
    console.print(f"teacher cost ${cost['usd']:.4f} over {cost['calls']} calls; "
                  f"holdout failures fixed: {fixed_failures(dec)}")
    console.print(f"report: {path}", markup=False)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with store.connect(read_only=True) as con:
        row = con.execute("SELECT nightly_id FROM nightly_ledger ORDER BY started_at DESC LIMIT 1").fetchone()
    nightly_id = argv[0] if argv else (row[0] if row else None)
    if not nightly_id:
        Console(stderr=True).print("no nightly in the ledger yet: run `make nightly`")
        return 2
    write_report(nightly_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
