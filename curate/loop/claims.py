"""The nightly's `validate` stage: which trained clusters the gate tests, chosen on the validation split.

The gate's target test pools the holdout items of every cluster it is given (evals.gate). A cluster whose training
moved nothing, or moved answers both ways, adds paired items without signal and can sink a real fix: on
2026-12-07 (docs/results.md) no commas 4/0 and end phrase 3/0 were pooled with two `fluent` clusters at 7/8 and
8/6, p 0.243. So the nightly screens before it confirms, as a two-stage design does: the candidate and the base
answer the validation split (curate/loop/validation.py, the sweep's own: seed groups carved by a salted hash,
left out of this nightly's training set, never a holdout trace), and a trained cluster is *claimed* when its check
was fixed on more validation items than it was broken, at exact two-sided McNemar p <= `nightly_claim_alpha`
(0.2: a screening level, one-sided 0.1). The gate then tests only the claimed clusters on the holdout; its guards
(every suite's regression, perplexity, drift, degeneration) still cover every holdout trace. Nothing claimed, or the
validation traffic's degenerate share up by more than the gate's own `gate_degeneration_tolerance`: the gate does
not run, and the holdout is not spent on a candidate validation does not support.

Items per check: each target prompt's targeted checks, and every check of a trained cluster that the validation
traffic's own traces carry (`fluent` on every answer, when a fluent cluster was trained).
"""
from __future__ import annotations

from evals.stats import discordant, mcnemar_exact
from traces import store
from traces.settings import load


def item_outcomes(model_ref: str, adapter, val, trained: set) -> dict[tuple[str, str], bool]:
    """{(item id, check): passed} for the greedy answers of (model_ref, adapter) at the gate's budget (evals.student:
    in-process, or the served student)."""
    from curate.loop.validation import with_answer_checks
    from evals.checks import verify_instructions
    from evals.quality import degenerate
    from evals.student import Student
    s = load("train")
    traffic = [{**t, "metadata": with_answer_checks(t["metadata"], [], trained)[0],
                "targets": sorted(trained)} for t in val.traffic]
    items = list(val.prompts) + traffic
    if not items:
        return {}
    gens = Student(model_ref, adapter).generate([p["messages"] for p in items], max_new_tokens=s.max_new_tokens,
                                                batch_size=s.batch_size)  # in-process or served (student_url)
    out = {}
    for i, (p, g) in enumerate(zip(items, gens)):
        if i >= len(val.prompts):  # a traffic answer: the gate's degeneration guard, on traffic like the holdout's
            out[(p["id"], DEGENERATE)] = degenerate(g.text, p["prompt"], p["metadata"])
        for cid, r in verify_instructions(p["prompt"], g.text, p["metadata"]):
            if cid in p.get("targets", ()):
                key = (p["id"], cid)
                out[key] = out.get(key, True) and r.passed  # a check named twice passes when both do
    return out


# Fewer paired validation items than this and a check is not screened (it stays a target, the gate decides as it
# did before the screen): a fix of 30% of failures on 20 items that fail a third of the time gives about 2
# discordant pairs, so on fewer the screen would mostly drop real fixes. Only McNemar's discordant pairs count, so
# an unscreened check that moves nothing adds nothing to the gate's test.
MIN_ITEMS = 20


DEGENERATE = "~degenerate"  # an item key's "check" for the degeneration flag of a traffic answer (not a check)


def degenerate_rise(base: dict, cand: dict) -> float | None:
    """Points by which the share of degenerate validation-traffic answers rose under the candidate."""
    keys = [k for k in base if k[1] == DEGENERATE and k in cand]
    return 100 * (sum(cand[k] for k in keys) - sum(base[k] for k in keys)) / len(keys) if keys else None


def screen(base: dict, cand: dict, alpha: float, min_items: int = MIN_ITEMS) -> dict[str, dict]:
    """Per check: paired items, fixed, broken, McNemar p, whether it was screened (enough items) and whether it is
    claimed (screened and fixed more than broken at p <= alpha, or not screened)."""
    out = {}
    for cid in sorted({c for _, c in base} & {c for _, c in cand} - {DEGENERATE}):
        keys = sorted(k for k in base if k[1] == cid and k in cand)
        fixed, broken = discordant([cand[k] for k in keys], [base[k] for k in keys])
        p = mcnemar_exact(fixed, broken)
        passed = fixed > broken and p <= alpha
        screened = passed or len(keys) >= min_items  # a clear fix on few items is a fix
        out[cid] = {"n": len(keys), "fixed": fixed, "broken": broken, "p": round(p, 4), "screened": screened,
                    "claimed": passed or not screened}
    return out


def trained_clusters(train_run: str) -> dict[str, tuple[str, str]]:
    """{cluster id: (check id, label)} of the clusters the train run's examples came from (the gate's own targets)."""
    from evals.gate import target_clusters
    with store.connect(read_only=True) as con:
        ids, _ = target_clusters(con, None, train_run)
        rows = con.execute("SELECT cluster_id, check_id, label FROM clusters WHERE list_contains(?, cluster_id)",
                           [ids]).fetchall()
    return {cid: (check, label) for cid, check, label in sorted(rows)}


def stage_validate(ctx, outcomes_fn=None) -> dict:
    """The claimed clusters (`claimed`) for the gate stage; skipped (the gate tests every trained cluster) when
    nightly_validate is off or nothing was trained."""
    train = ctx.done.get("train", {})
    if not train.get("adapter"):
        return {"skipped": True, "why": "no new adapter"}
    if not load("curate").nightly_validate:
        return {"skipped": True, "why": "nightly_validate is off: the gate tests every trained cluster"}
    return judge(ctx, train["adapter"], trained_clusters(train["train_run"]), outcomes_fn)


def judge(ctx, adapter: str, clusters: dict, outcomes_fn=None) -> dict:
    """The candidate against the base on the validation split: per check fixed/broken, the claimed clusters and the
    traffic's degenerate rise. The base's outcomes are kept in ctx.memo for a second judgement in the same nightly
    (the focus stage): the same greedy answers, 5 minutes not spent again."""
    from curate.loop.validation import carve
    cs = load("curate")
    checks = {check for check, _ in clusters.values()}
    val = carve(cs.sweep_val_fraction, cs.sweep_val_max, 0, None, cs.sweep_val_traffic)
    outcomes_fn = outcomes_fn or item_outcomes
    model = load("train").model
    memo, key = getattr(ctx, "memo", {}), ("validation base", frozenset(checks))
    if key not in memo:
        ctx.console.rule("validation: the base")
        memo[key] = outcomes_fn(model, None, val, checks)
    base = memo[key]
    ctx.console.rule("validation: the candidate")
    cand = outcomes_fn(model, adapter, val, checks)
    per_check = screen(base, cand, cs.nightly_claim_alpha)
    claimed = sorted(c for c, (check, _) in clusters.items()  # no validation item at all: not screened either
                     if per_check.get(check, {"claimed": True})["claimed"])
    ctx.console.print(claims_table(per_check))
    rise, tolerance = degenerate_rise(base, cand), load("evals").gate_degeneration_tolerance
    out = {"prompts": len(val.prompts), "traffic": len(val.traffic), "checks": per_check, "claimed": claimed,
           "not_claimed": sorted(label for c, (_, label) in clusters.items() if c not in claimed),
           "degenerate_rise": None if rise is None else round(rise, 1)}
    if rise is not None and rise > tolerance:  # the guard would likely fail on the holdout too: do not spend it
        out["claimed"] = []
        out["why"] = f"validation traffic's degenerate share rose {rise:.1f} points (the gate allows {tolerance:g})"
        ctx.console.print(f"[red]{out['why']}[/]: the gate will not run", highlight=False)
    return out


def _claimed(c: dict, yes: str) -> str:
    if not c.get("screened", True):
        return f"yes (not screened: fewer than {MIN_ITEMS} items)"
    return yes if c["claimed"] else "no"


def claims_table(per_check: dict):
    from rich.table import Table
    t = Table(title="claims: the candidate against the base on the validation split")
    for col in ("check", "items", "fixed", "broken", "p", "claimed"):
        t.add_column(col, justify="left" if col == "check" else "right")
    for cid, c in per_check.items():
        t.add_row(cid, str(c["n"]), str(c["fixed"]), str(c["broken"]), f"{c['p']:.3f}", _claimed(c, "[bold green]yes[/]"))
    return t


def claims_md(summary: dict, title: str = "Claims (validation split)") -> list[str]:
    """The report's section: what validation said per check, and which clusters the gate was given."""
    if not summary.get("checks"):
        return []
    rows = [f"| {cid} | {c['n']} | {c['fixed']} | {c['broken']} | {c['p']:.3f} | {_claimed(c, 'yes')} |"
            for cid, c in summary["checks"].items()]
    rise = summary.get("degenerate_rise")
    return [f"## {title}", "",
            f"The candidate against the base on {summary['prompts']} validation target prompts and "
            f"{summary['traffic']} validation traffic traces (never the holdout). The gate tests the clusters of the "
            "claimed checks; not claimed: " + (", ".join(summary["not_claimed"]) or "none") + "."
            + ("" if rise is None else f" Degenerate traffic answers: {rise:+.1f} points.")
            + (f" No gate: {summary['why']}." if summary.get("why") else ""), "",
            "| check | items | fixed | broken | p | claimed |", "|---|---|---|---|---|---|", *rows, ""]
