"""python -m evals report [--run ID]   |   python -m evals compare RUN_A RUN_B

report: pass rate per suite (trace level: every check of the trace passed) and per check, strict and
loose, with Wilson 95% intervals. Without --run: the newest complete run of each suite.
compare: paired deltas (the same traces and checks in both runs) with exact McNemar p-values, per suite,
per check and per failure cluster; the runs must be of the same suite version.

All analysis is Polars on frames read from DuckDB through Arrow (`frame()`), no row loops.
"""
from __future__ import annotations

import argparse

import polars as pl
from rich.console import Console
from rich.table import Table

from evals.runs import refresh_stale
from evals.stats import mcnemar_exact, wilson
from traces.terminal import safe

console = Console()


def _connect():
    from traces import store
    return store.connect()


def frame(con, sql: str, params=()) -> pl.DataFrame:
    """A query's result as a Polars frame, through Arrow."""
    return pl.from_arrow(con.sql(sql, params=list(params)).to_arrow_table())


def run_row(con, run_id: str) -> dict:
    refresh_stale(con)
    df = frame(con, "SELECT * FROM eval_runs WHERE run_id = ?", [run_id])
    if df.is_empty():
        raise ValueError(f"no eval run {run_id!r}")
    return df.row(0, named=True)


def results(con, run_id: str) -> pl.DataFrame:
    return frame(con, "SELECT trace_id, check_idx, check_id, passed, passed_loose, score FROM run_results "
                      "WHERE run_id = ?", [run_id])


def with_wilson(df: pl.DataFrame, k: str = "passed", n: str = "n") -> pl.DataFrame:
    lo_hi = [wilson(a, b) for a, b in zip(df[k].to_list(), df[n].to_list())]  # one call per row of a summary
    return df.with_columns(rate=pl.col(k) / pl.col(n), lo=pl.Series([x[0] for x in lo_hi]),
                           hi=pl.Series([x[1] for x in lo_hi]))


def per_check(res: pl.DataFrame) -> pl.DataFrame:
    agg = res.group_by("check_id").agg(n=pl.len(), passed=pl.col("passed").sum(),
                                       loose=pl.col("passed_loose").sum(), loose_n=pl.col("passed_loose").count())
    return with_wilson(agg).sort(["rate", "check_id"])


def per_trace(res: pl.DataFrame) -> pl.DataFrame:
    """Trace level (IFEval's prompt level): a trace passes when all its checks pass."""
    return res.group_by("trace_id").agg(passed=pl.col("passed").all(),
                                        passed_loose=pl.col("passed_loose").fill_null(pl.col("passed")).all())


def summary(res: pl.DataFrame) -> dict:
    t = per_trace(res)
    n, k, kl = t.height, int(t["passed"].sum()), int(t["passed_loose"].sum())
    ci, cn = int(res["passed"].sum()), res.height
    return {"traces": n, "trace_pass": k, "trace_pass_loose": kl, "trace_ci": wilson(k, n),
            "checks": cn, "check_pass": ci, "check_ci": wilson(ci, cn),
            "check_pass_loose": int(res["passed_loose"].fill_null(res["passed"]).sum())}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def print_run(run_id: str, out: Console | None = None) -> None:
    out = out or console
    with _connect() as con:
        run = run_row(con, run_id)
        res = results(con, run_id)
    who = run["model_ref"] or "logged responses"
    if run["adapter_path"]:
        who += f" + {run['adapter_path']}"
    out.print(f"[bold]{safe(run['suite'])}[/] v{safe(run['suite_version'])} · {safe(who)} · split "
              f"{safe(run['split'])} · {safe(run['status'])} · {safe(run_id)}", highlight=False)
    if res.is_empty():
        out.print("  no results (no trace matched the suite's selection)")
        return
    s = summary(res)
    table = Table(title=None, show_edge=False)
    for col, just in (("level / check", "left"), ("n", "right"), ("pass %", "right"), ("95% CI", "right"),
                      ("loose %", "right")):
        table.add_column(col, justify=just)
    table.add_row("[bold]traces (all checks)", str(s["traces"]), _pct(s["trace_pass"] / s["traces"]),
                  _ci(s["trace_ci"]), _pct(s["trace_pass_loose"] / s["traces"]))
    table.add_row("[bold]checks", str(s["checks"]), _pct(s["check_pass"] / s["checks"]), _ci(s["check_ci"]),
                  _pct(s["check_pass_loose"] / s["checks"]))
    for r in per_check(res).iter_rows(named=True):
        loose = r["loose"] / r["loose_n"] if r["loose_n"] else None
        table.add_row(safe(r["check_id"]), str(r["n"]), _pct(r["rate"]), _ci((r["lo"], r["hi"])), _pct(loose))
    out.print(table)


def _ci(lo_hi) -> str:
    return f"{100 * lo_hi[0]:.1f}-{100 * lo_hi[1]:.1f}"


def latest_runs(con) -> list[str]:
    refresh_stale(con)
    rows = con.execute("""SELECT arg_max(run_id, finished_at) FROM eval_runs WHERE status = 'complete'
                          GROUP BY suite ORDER BY suite""").fetchall()
    return [r[0] for r in rows]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals report", description="pass rates with Wilson 95% intervals")
    p.add_argument("--run", action="append", help="eval run id (repeatable; default: newest complete per suite)")
    a = p.parse_args(argv)
    with _connect() as con:
        runs = a.run or latest_runs(con)
    if not runs:
        console.print("no complete eval run yet: run `python -m evals run` first")
        return 1
    for run_id in runs:
        print_run(run_id)
    return 0


# ------------------------------------------------------------------ compare

def paired(a: pl.DataFrame, b: pl.DataFrame) -> pl.DataFrame:
    """Results present in both runs (same trace, check position and check), side by side."""
    return a.join(b, on=["trace_id", "check_idx", "check_id"], how="inner", suffix="_b").rename(
        {"passed": "passed_a"})


def paired_stats(pa: pl.Series, pb: pl.Series) -> dict:
    n = pa.len()
    b = int((pa & ~pb).sum())  # passed only in A
    c = int((~pa & pb).sum())  # passed only in B
    rate_a, rate_b = (pa.sum() / n, pb.sum() / n) if n else (0.0, 0.0)
    return {"n": n, "rate_a": rate_a, "rate_b": rate_b, "delta": rate_b - rate_a, "a_only": b, "b_only": c,
            "p": mcnemar_exact(b, c)}


def compare_runs(run_a: str, run_b: str) -> dict:
    """{'suite': stats, 'checks': {check: stats}, 'clusters': {cluster_id: stats + label}} (B minus A)."""
    from evals.suites import require_same_version
    with _connect() as con:
        ra, rb = run_row(con, run_a), run_row(con, run_b)
        require_same_version(ra, rb)
        pairs = paired(results(con, run_a), results(con, run_b))
        members = frame(con, """SELECT DISTINCT m.cluster_id, c.check_id, c.label, m.trace_id
                                 FROM cluster_members m JOIN clusters c USING (cluster_id)""")
    traces = pairs.group_by("trace_id").agg(a=pl.col("passed_a").all(), b=pl.col("passed_b").all())
    out = {"run_a": ra, "run_b": rb, "suite": paired_stats(traces["a"], traces["b"]), "checks": {}, "clusters": {}}
    for (check,), g in pairs.group_by(["check_id"]):
        out["checks"][check] = paired_stats(g["passed_a"], g["passed_b"])
    joined = pairs.join(members, on=["trace_id", "check_id"], how="inner")
    for (cid, label), g in joined.group_by(["cluster_id", "label"]):
        out["clusters"][cid] = {"label": label, **paired_stats(g["passed_a"], g["passed_b"])}
    return out


def compare_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m evals compare", description="paired deltas and McNemar p-values")
    p.add_argument("run_a")
    p.add_argument("run_b")
    a = p.parse_args(argv)
    from evals.suites import SuiteError
    try:
        comp = compare_runs(a.run_a, a.run_b)
    except (SuiteError, ValueError) as e:
        Console(stderr=True).print(f"[red]error:[/] {safe(str(e), newlines=True)}", highlight=False)
        return 2
    print_comparison(comp)
    return 0


def print_comparison(comp: dict, out: Console | None = None) -> None:
    out = out or console
    ra, rb = comp["run_a"], comp["run_b"]
    out.print(f"[bold]{safe(ra['suite'])}[/] v{safe(ra['suite_version'])}: A = {safe(ra['run_id'])} "
              f"({safe(ra['model_ref'] or 'logged')}), B = {safe(rb['run_id'])} ({safe(rb['model_ref'] or 'logged')})",
              highlight=False)
    table = Table(show_edge=False)
    for col in ("", "n pairs", "A %", "B %", "delta (pts)", "A only", "B only", "McNemar p"):
        table.add_column(col, justify="left" if not col else "right")
    rows = [("[bold]suite (traces)", comp["suite"])]
    rows += [(f"check {safe(k)}", v) for k, v in sorted(comp["checks"].items())]
    rows += [(f"cluster {safe(v['label'])}", v) for _, v in sorted(comp["clusters"].items())]
    for name, st in rows:
        colour = "green" if st["delta"] > 0 else "red" if st["delta"] < 0 else "white"
        table.add_row(name, str(st["n"]), _pct(st["rate_a"]), _pct(st["rate_b"]),
                      f"[{colour}]{100 * st['delta']:+.1f}[/]", str(st["a_only"]), str(st["b_only"]), f"{st['p']:.3g}")
    out.print(table)
